"""Attributes family: extract every catalog attribute (color, brand, material, ...) from an item's text.

Self-learning: for each attribute, items whose value is known are the weak labels; nothing is hand labelled.
The text (title + description) goes through one TF-IDF (word 1-2-grams + char 2-5-grams within word
boundaries) fitted per attribute, then a **bootstrap ensemble** of ``n_bootstrap`` multinomial logistic
regressions, each fitted on a bootstrap resample of the labelled items.

Uncertainty. For one text the ensemble's mean probability picks the value (``confidence`` = its mean
probability) and the standard deviation of that value's probability across the members is the
``uncertainty``: members that saw different resamples agree on a value the text states plainly and disagree
when the value is only weakly implied (a category word that usually goes with some material, a rare brand).
It is cheap (the features are computed once, B small fits) and needs no distributional assumption; unlike
the confidence alone it separates "confidently 0.6" from "0.6 on average, 0.2 to 0.9 depending on the data".
The std is discretized into ``LEVELS`` (low/medium/high) by cut points at the terciles of the out-of-fold
std of the training items, so every level holds about a third of them.

Thresholds. Out-of-fold predictions (``cv_folds`` folds by hash of item_id; the vectorizer and ensemble are
refitted per fold) give (confidence, level, correct). Within each level an isotonic regression estimates
P(correct | confidence); predictions are admitted best estimate first, pooled over levels, down to the lowest
estimate whose pooled precision still reaches ``target_precision`` and whose marginal estimate is at least
``min_marginal_precision`` (see ``tune_threshold``). Because the estimate is monotone in the confidence within a
level, this is one confidence threshold per level (a level with nothing admitted abstains). It maximizes
recall at the target precision on the out-of-fold data, of which one global threshold (the same cut for every
level, also stored, ``global_threshold``) is a special case. When even the most precise cut misses the target,
the attribute abstains altogether (its values are never filled) and ``meta["target_met"]`` says so.
The final extractor is refitted on all labelled items (the refit sees more data, so confidences drift up a
little; ``evaluate``'s holdout measures precision at the stored thresholds honestly).

Queries. ``tag_query`` reuses the extractor's vocabulary and model for query understanding: exact vocabulary
matches first, then near-spellings of a value (one edit, or a prefix of at least 3 letters), the extractor's
probabilities on the query choosing among several: "nordhvn bag" -> brand Nordhavn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion
from threadpoolctl import threadpool_limits

from ml.families.base import GateSpec, NotEnoughData, TrainContext
from ml.text import normalize_query, tokenize

MART = "dim_items.parquet"
COLUMNS: tuple[str, ...] = (
    "item_id", "title", "description", "category", "brand", "color", "material", "price", "created_at",
    "event_timestamp",
)
ATTRIBUTES: tuple[str, ...] = ("color", "brand", "material")
LEVELS: tuple[str, ...] = ("low", "medium", "high")     # uncertainty levels, by ensemble std
FORMAT = "multi-v1"                                      # meta.json format of the saved model
NEVER = float("inf")                                     # the threshold of a level that abstains


def item_text(title: Any, description: Any = None) -> str:
    """The one text the extractor reads, for training and serving alike: title, then description."""
    parts = [str(x) for x in (title, description) if x is not None and not (isinstance(x, float) and np.isnan(x))]
    return " ".join(parts)


def frame_texts(frame: pd.DataFrame) -> list[str]:
    desc = frame["description"] if "description" in frame.columns else [None] * len(frame)
    return [item_text(t, d) for t, d in zip(frame["title"], desc)]


def known_values(frame: pd.DataFrame, attribute: str) -> pd.Series:
    """The attribute as a clean string, NaN where unknown (null or blank)."""
    v = frame[attribute].astype("string").str.strip()
    return v.where(v.notna() & (v != ""))


def _hash_share(keys: pd.Series, salt: str) -> np.ndarray:
    h = pd.util.hash_pandas_object((salt + keys.astype(str)), index=False).to_numpy()
    return (h % 1000) / 1000.0


def level_of(std: np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    """Uncertainty level index (0 = low) of each ensemble std, given the two ascending cut points."""
    return np.searchsorted(np.asarray(cuts, dtype=float), np.asarray(std, dtype=float), side="right")


# ----------------------------------------------------------------------------------------------------------
# one attribute


def _vectorizer(params: dict[str, Any]) -> FeatureUnion:
    return FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True,
                                 token_pattern=r"(?u)\b\w+\b")),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True,
                                 min_df=int(params.get("char_min_df", 2)))),
    ])


def _fit_ensemble(texts: Sequence[str], labels: np.ndarray, params: dict[str, Any], seed: int
                  ) -> tuple[FeatureUnion, list[LogisticRegression], np.ndarray]:
    """Vectorizer on all texts, then B logistic regressions on bootstrap resamples (member 0 on all rows)."""
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    with threadpool_limits(limits=int(params["n_threads"])):
        vec = _vectorizer(params).fit(list(texts))
        X = vec.transform(list(texts))
        members = []
        for b in range(int(params["n_bootstrap"])):
            rows = np.arange(len(labels)) if b == 0 else rng.integers(0, len(labels), size=len(labels))
            if len(np.unique(labels[rows])) < 2:
                continue
            members.append(LogisticRegression(C=float(params["C"]), max_iter=int(params["max_iter"]),
                                              tol=float(params["tol"]))
                           .fit(X[rows], labels[rows]))
    return vec, members, classes


def _ensemble_proba(vec: FeatureUnion, members: Sequence[LogisticRegression], classes: np.ndarray,
                    texts: Sequence[str]) -> np.ndarray:
    """(members, texts, classes) probabilities; a class a member never saw has probability 0 for it."""
    X = vec.transform(list(texts))
    out = np.zeros((len(members), len(texts), len(classes)))
    pos = {c: i for i, c in enumerate(classes)}
    for m, clf in enumerate(members):
        out[m][:, [pos[c] for c in clf.classes_]] = clf.predict_proba(X)
    return out


def _summarize(proba: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top value of the mean probability, its mean probability (confidence) and its std across members."""
    mean = proba.mean(axis=0)
    best = mean.argmax(axis=1)
    rows = np.arange(len(best))
    return classes[best], mean[rows, best], proba[:, rows, best].std(axis=0)


@dataclass
class AttributeExtractor:
    """One attribute: ``extract(texts)`` -> value, confidence, uncertainty std and level, accepted."""

    attribute: str
    vocabulary: list[str]
    vectorizer: FeatureUnion
    members: list[LogisticRegression]
    level_cuts: list[float]                  # two ascending std cut points: low | medium | high
    thresholds: dict[str, float]             # uncertainty level -> confidence threshold (inf: abstain)
    global_threshold: float                  # the one-threshold alternative, tuned on the same predictions
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def min_confidence(self) -> float:
        """The global threshold (kept for callers of the single-threshold API)."""
        return self.global_threshold

    def extract(self, texts: Sequence[str], per_level: bool = True) -> pd.DataFrame:
        """One row per text: value (top class, never None), confidence, uncertainty (std), level, accepted."""
        if len(texts) == 0:
            return pd.DataFrame({"value": pd.Series(dtype=object), "confidence": pd.Series(dtype=float),
                                 "uncertainty": pd.Series(dtype=float), "level": pd.Series(dtype=object),
                                 "accepted": pd.Series(dtype=bool)})
        classes = np.asarray(self.vocabulary, dtype=object)
        values, conf, std = _summarize(_ensemble_proba(self.vectorizer, self.members, classes, texts), classes)
        lvl = level_of(std, self.level_cuts)
        if per_level:
            thr = np.array([self.thresholds.get(name, NEVER) for name in LEVELS])[lvl]
        else:
            thr = np.full(len(conf), self.global_threshold)
        return pd.DataFrame({"value": values.astype(object), "confidence": conf, "uncertainty": std,
                             "level": np.asarray(LEVELS, dtype=object)[lvl], "accepted": conf >= thr})


def tune_threshold(conf: np.ndarray, correct: np.ndarray, target: float, min_support: int,
                   min_marginal: float = 0.0) -> tuple[float, float]:
    """Lowest threshold whose precision over ``conf >= t`` reaches ``target`` (max coverage at that precision)
    and whose *marginal* precision (isotonic P(correct | conf = t)) is at least ``min_marginal``.

    The marginal condition is the trap guard: with 85% easy items, the cumulative precision stays at the
    target even after admitting a band of near-guesses at the bottom; the marginal one refuses them.
    Returns (threshold, precision there). When no threshold qualifies, the most precise one with
    ``min_support`` predictions; the caller decides what a missed target means (``train`` abstains).
    """
    order = np.argsort(-conf, kind="stable")
    c, ok = conf[order], correct[order].astype(float)
    prec = np.cumsum(ok) / np.arange(1, len(ok) + 1)
    # a threshold t = c[i] keeps every row with conf >= c[i]: the last index of each run of ties
    last = np.r_[c[1:] != c[:-1], True]
    cand = np.flatnonzero(last & (np.arange(len(c)) + 1 >= min_support))
    if len(cand) == 0:
        return 1.0, float("nan")
    marginal = np.ones(len(c))
    if min_marginal > 0 and 0 < ok.sum() < len(ok):
        marginal = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(c, ok).predict(c)
    good = cand[(prec[cand] >= target) & (marginal[cand] >= min_marginal)]
    i = good.max() if len(good) else cand[np.argmax(prec[cand])]
    return float(c[i]), float(prec[i])


def tune_level_thresholds(conf: np.ndarray, level: np.ndarray, correct: np.ndarray, target: float,
                          min_support: int, min_marginal: float = 0.0) -> tuple[dict[str, float], float, bool]:
    """One confidence threshold per uncertainty level maximizing pooled recall at ``target`` precision.

    Within each level, isotonic P(correct | confidence) ranks the predictions; the pooled ranking is cut with
    ``tune_threshold`` (so the pooled precision reaches the target and the marginal one ``min_marginal``); each
    level's threshold is the lowest admitted confidence in it (``NEVER`` when none is).
    Returns (thresholds, pooled precision at the cut, target met).
    """
    conf, level, correct = np.asarray(conf, float), np.asarray(level), np.asarray(correct, bool)
    est = np.zeros(len(conf))
    for j in range(len(LEVELS)):
        m = level == j
        if m.sum() == 0:
            continue
        ok = correct[m].astype(float)
        if 0 < ok.sum() < len(ok):
            est[m] = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0, y_max=1
                                        ).fit(conf[m], ok).predict(conf[m])
        else:
            est[m] = ok.mean()
    # Tie-break equal estimates by confidence so the cut never splits a level non-monotonically.
    score = est + 1e-9 * conf
    cut, precision = tune_threshold(score, correct, target, min_support, min_marginal)
    met = bool(precision >= target)      # False when nan
    thresholds = {}
    for j, name in enumerate(LEVELS):
        adm = (level == j) & (score >= cut)
        thresholds[name] = float(conf[adm].min()) if met and adm.any() else NEVER
    return thresholds, precision, met


def fit_extractor(frame: pd.DataFrame, attribute: str, params: dict[str, Any]) -> AttributeExtractor:
    """Weakly supervised extractor of one attribute (see the module docstring)."""
    y = known_values(frame, attribute)
    counts = y.value_counts()
    keep = y.isin(counts[counts >= int(params["min_class_count"])].index)
    data = frame.loc[keep].reset_index(drop=True)
    labels = y[keep].astype(str).to_numpy(dtype=object)
    if len(data) < int(params["min_items"]) or len(np.unique(labels)) < 2:
        raise NotEnoughData(f"attributes[{attribute}]: {len(data)} labelled items, {len(np.unique(labels))} values")
    texts = np.array(frame_texts(data), dtype=object)
    seed = int(params.get("seed", 0))

    # Out-of-fold ensemble predictions (folds by hash of item_id) on every labelled item.
    folds = (_hash_share(data["item_id"], "fold:") * int(params["cv_folds"])).astype(int)
    conf, std = np.full(len(data), np.nan), np.full(len(data), np.nan)
    correct = np.zeros(len(data), dtype=bool)
    for k in range(int(params["cv_folds"])):
        fit, held = folds != k, folds == k
        if not held.any() or len(np.unique(labels[fit])) < 2:
            continue
        vec, members, classes = _fit_ensemble(texts[fit], labels[fit], params, seed + k + 1)
        values, conf[held], std[held] = _summarize(_ensemble_proba(vec, members, classes, texts[held]), classes)
        correct[held] = values == labels[held]
    seen = ~np.isnan(conf)
    target, support = float(params["target_precision"]), int(params["min_support"])
    marginal = float(params["min_marginal_precision"])
    cuts = [float(np.quantile(std[seen], q)) for q in (1 / 3, 2 / 3)] if seen.any() else [0.0, 0.0]
    thresholds, global_t = dict.fromkeys(LEVELS, NEVER), NEVER
    val_precision, global_precision, met, global_met = float("nan"), float("nan"), False, False
    if seen.sum() >= support:
        lvl = level_of(std[seen], cuts)
        thresholds, val_precision, met = tune_level_thresholds(conf[seen], lvl, correct[seen], target, support,
                                                               marginal)
        t, global_precision = tune_threshold(conf[seen], correct[seen], target, support, marginal)
        global_met = bool(global_precision >= target)
        global_t = t if global_met else NEVER
        oof = pd.DataFrame({"conf": conf[seen], "level": lvl, "correct": correct[seen]})
    else:
        oof = pd.DataFrame({"conf": [], "level": [], "correct": []})

    vec, members, classes = _fit_ensemble(texts, labels, params, seed)
    majority = str(counts[counts.index.isin(np.unique(labels))].index[0])
    recall_oof = (lambda acc: float(acc.sum() / max(len(oof), 1)))
    lvl_thr = np.array([thresholds[n] for n in LEVELS])[oof["level"].to_numpy(dtype=int)] if len(oof) else []
    meta = {
        "n_train": len(data), "majority_value": majority, "majority_share": float((labels == majority).mean()),
        "target_precision": target, "target_met": met, "global_target_met": global_met,
        "validation_precision": None if np.isnan(val_precision) else float(val_precision),
        "validation_precision_global": None if np.isnan(global_precision) else float(global_precision),
        "validation_recall": recall_oof(oof["correct"].to_numpy() & (oof["conf"].to_numpy() >= lvl_thr))
        if len(oof) else 0.0,
        "validation_recall_global": recall_oof(oof["correct"].to_numpy() & (oof["conf"].to_numpy() >= global_t))
        if len(oof) else 0.0,
        "n_validation": int(seen.sum()), "n_members": len(members),
    }
    return AttributeExtractor(attribute=attribute, vocabulary=[str(c) for c in classes], vectorizer=vec,
                              members=members, level_cuts=cuts, thresholds=thresholds,
                              global_threshold=float(global_t), meta=meta)


# ----------------------------------------------------------------------------------------------------------
# the family's model: every attribute


def _near(token: str, value_token: str) -> bool:
    """Same token, a prefix of >= 3 letters, or one edit apart (typo) for tokens of >= 4 letters."""
    if token == value_token or (len(token) >= 3 and value_token.startswith(token)):
        return True
    if min(len(token), len(value_token)) < 4 or abs(len(token) - len(value_token)) > 1:
        return False
    if len(token) == len(value_token):
        diff = [i for i, (a, b) in enumerate(zip(token, value_token)) if a != b]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and token[diff[0]] == value_token[diff[1]] and token[diff[1]] == value_token[diff[0]])
    short, long_ = sorted((token, value_token), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


@dataclass
class AttributesModel:
    """What serving loads. ``extractors[attribute]`` per attribute; ``attribute`` is the primary one, and
    ``predict``/``predict_all``/``vocabulary``/``min_confidence`` keep the single-attribute API for it."""

    extractors: dict[str, AttributeExtractor]
    attribute: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def attributes(self) -> list[str]:
        return list(self.extractors)

    @property
    def vocabulary(self) -> list[str]:
        return self.extractors[self.attribute].vocabulary

    @property
    def min_confidence(self) -> float:
        return self.extractors[self.attribute].global_threshold

    def predict_all(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Primary attribute: top value and its confidence for every text, without abstaining."""
        out = self.extractors[self.attribute].extract(texts)
        return [str(v) for v in out["value"]], out["confidence"].to_numpy()

    def predict(self, texts: Sequence[str]) -> tuple[list[str | None], np.ndarray]:
        """Primary attribute: value (None when not accepted at its uncertainty level's threshold), confidence."""
        out = self.extractors[self.attribute].extract(texts)
        values = [str(v) if ok else None for v, ok in zip(out["value"], out["accepted"])]
        return values, out["confidence"].to_numpy()

    def predict_attributes(self, texts: Sequence[str]) -> dict[str, pd.DataFrame]:
        """Every attribute: ``extract(texts)`` frames (value, confidence, uncertainty, level, accepted)."""
        return {a: ex.extract(texts) for a, ex in self.extractors.items()}

    def tag_query(self, query: str) -> dict[str, str]:
        """Query understanding: attribute -> value (in the catalog's spelling) the query asks for.

        A value whose normalized tokens appear in the query wins (longest first); otherwise a value a query
        token is a near-spelling of (one edit, a prefix of 3+ letters), the extractor's probabilities on the
        query choosing among several. The extractor alone never tags a query: on "leather shoes" it may predict
        a brand from the category word, a guess about items, not something the shopper asked for (and queries
        are too short for its item-text thresholds).
        """
        tokens = tokenize(query)
        if not tokens:
            return {}
        padded = f" {' '.join(tokens)} "
        tags: dict[str, str] = {}
        for a, ex in self.extractors.items():
            norm = sorted(((normalize_query(v), v) for v in ex.vocabulary), key=lambda p: -len(p[0]))
            hit = next((v for n, v in norm if n and f" {n} " in padded), None)
            if hit is not None:
                tags[a] = hit
                continue
            near = [v for n, v in norm if n and any(_near(t, vt) for t in tokens for vt in n.split(" "))]
            if len(near) == 1:
                tags[a] = near[0]
            elif near:  # several near-spellings: the extractor's probabilities on the query pick one
                classes = np.asarray(ex.vocabulary, dtype=object)
                mean = _ensemble_proba(ex.vectorizer, ex.members, classes, [query]).mean(axis=0)[0]
                tags[a] = max(near, key=lambda v: mean[ex.vocabulary.index(v)])
        return tags


class AttributesFamily:
    name = "attributes"
    registered_model = "ltrr-attributes"
    # Gate metric: mean precision of the filled values over the attributes that fill at least ``min_support``
    # held-out values (0 when none does). Floor 0.8; beside it every such attribute's precision must beat its
    # majority-class accuracy (``beats_majority`` = 1): an attribute either beats that baseline or abstains.
    gate_spec = GateSpec(metric="precision", direction="max", floor=0.8, min_delta=0.0)
    extra_floors: ClassVar[dict[str, float]] = {"beats_majority": 1.0}
    default_params: ClassVar[dict[str, Any]] = {
        "attribute": "color",                 # the primary attribute (single-attribute API)
        "attributes": None,                   # None: every attribute column with enough known values
        "target_precision": 0.95,
        "min_marginal_precision": 0.5,        # never admit a value more likely wrong than right
        "n_bootstrap": 4,
        "cv_folds": 3,
        "min_support": 5,
        "min_class_count": 3,
        "min_items": 30,
        "C": 10.0,
        "char_min_df": 2,
        "max_iter": 300,
        "tol": 1e-3,
        "holdout_share": 0.2,
        "seed": 0,
        "n_threads": 1,                       # BLAS threads while fitting (small problem, shared machine)
    }

    def training_set(self, ctx: TrainContext) -> pd.DataFrame:
        """Every catalog item (known and unknown values). Items carry no time order for this task."""
        frame = pd.read_parquet(Path(ctx.marts_dir) / MART)
        return frame[[c for c in COLUMNS if c in frame.columns]].reset_index(drop=True)

    def split(self, frame: pd.DataFrame, ctx: TrainContext) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Hash split by item_id (stable across runs: the same item is always on the same side)."""
        share = float(ctx.params.get("holdout_share", self.default_params["holdout_share"]))
        hold = _hash_share(frame["item_id"], "holdout:") < share
        return frame.loc[~hold].reset_index(drop=True), frame.loc[hold].reset_index(drop=True)

    def train(self, frame: pd.DataFrame, params: dict[str, Any]) -> AttributesModel:
        p = {**self.default_params, **(params or {})}
        primary = str(p["attribute"])
        wanted = list(p["attributes"]) if p["attributes"] else [a for a in ATTRIBUTES if a in frame.columns]
        if primary not in frame.columns:
            raise ValueError(f"attributes: no column {primary!r} in the training frame")
        if primary not in wanted:
            wanted.insert(0, primary)
        extractors: dict[str, AttributeExtractor] = {}
        skipped: dict[str, str] = {}
        for a in wanted:
            try:
                extractors[a] = fit_extractor(frame, a, p)
            except NotEnoughData as exc:
                if a == primary:
                    raise
                skipped[a] = str(exc)
        return AttributesModel(extractors=extractors, attribute=primary, meta={"skipped": skipped})

    def evaluate(self, model: AttributesModel, holdout: pd.DataFrame) -> dict[str, float]:
        """Per attribute, on held-out items with a known value: precision, recall, coverage at the per-level
        thresholds (and at the global one), the majority baseline; the fill rate on unknown items. The
        un-prefixed ``precision``/``recall``/``coverage`` are means over the attributes that fill enough values."""
        out: dict[str, float] = {}
        support = int(self.default_params["min_support"])
        filled_prec, filled_rec, filled_cov, beats = [], [], [], []
        n_eval_total = 0
        for a, ex in model.extractors.items():
            if a not in holdout.columns:
                continue
            y = known_values(holdout, a)
            known = holdout.loc[y.notna()]
            truth = y[y.notna()].astype(str).to_numpy()
            n_eval_total += len(known)
            res = ex.extract(frame_texts(known))
            correct = res["value"].to_numpy(dtype=object) == truth
            acc = res["accepted"].to_numpy(dtype=bool)
            glob = res["confidence"].to_numpy() >= ex.global_threshold
            majority_acc = float((truth == ex.meta.get("majority_value")).mean()) if len(truth) else 0.0
            precision = float(correct[acc].mean()) if acc.any() else float("nan")
            m = {
                "precision": precision, "recall": float((correct & acc).mean()) if len(truth) else 0.0,
                "coverage": float(acc.mean()) if len(truth) else 0.0,
                "precision_global": float(correct[glob].mean()) if glob.any() else float("nan"),
                "recall_global": float((correct & glob).mean()) if len(truth) else 0.0,
                "accuracy": float(correct.mean()) if len(truth) else 0.0, "majority_accuracy": majority_acc,
                "n_eval": float(len(known)),
            }
            unknown = holdout.loc[y.isna()]
            m["fill_rate_unknown"] = float(ex.extract(frame_texts(unknown))["accepted"].mean()) if len(unknown) else 0.0
            for k, v in m.items():
                out[f"{a}_{k}"] = v
            if acc.sum() >= support:
                filled_prec.append(precision)
                filled_rec.append(m["recall"])
                filled_cov.append(m["coverage"])
                beats.append(precision > majority_acc)
        if n_eval_total == 0:
            raise NotEnoughData("attributes: no holdout item with a known value of any attribute")
        out.update({
            "precision": float(np.mean(filled_prec)) if filled_prec else 0.0,
            "recall": float(np.mean(filled_rec)) if filled_rec else 0.0,
            "coverage": float(np.mean(filled_cov)) if filled_cov else 0.0,
            "beats_majority": float(bool(beats) and all(beats)),
            "n_attributes_filling": float(len(filled_prec)),
            "n_attributes": float(len(model.extractors)),
        })
        # NaN is not a metric MLflow can compare: attributes that fill nothing report -1 precision.
        return {k: (-1.0 if isinstance(v, float) and np.isnan(v) else v) for k, v in out.items()}

    def pyfunc_predict(self, model: AttributesModel, frame: pd.DataFrame) -> pd.DataFrame:
        """MLflow pyfunc input: a frame with ``text`` or ``title`` (+ ``description``) -> one column per
        attribute (value or None) and ``<attribute>_confidence`` / ``_uncertainty`` / ``_level``."""
        texts = frame["text"].astype(str).tolist() if "text" in frame.columns else frame_texts(frame)
        cols: dict[str, Any] = {}
        for a, res in model.predict_attributes(texts).items():
            cols[a] = [v if ok else None for v, ok in zip(res["value"], res["accepted"])]
            cols[f"{a}_confidence"] = res["confidence"].to_numpy()
            cols[f"{a}_uncertainty"] = res["uncertainty"].to_numpy()
            cols[f"{a}_level"] = res["level"].to_numpy()
        primary = model.attribute
        cols["value"], cols["confidence"] = cols[primary], cols[f"{primary}_confidence"]
        return pd.DataFrame(cols, index=frame.index)

    def save(self, model: AttributesModel, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        info: dict[str, Any] = {"format": FORMAT, "attribute": model.attribute, "attributes": model.attributes,
                                "meta": model.meta, "extractors": {}}
        for a, ex in model.extractors.items():
            joblib.dump({"vectorizer": ex.vectorizer, "members": ex.members}, path / f"{a}.joblib")
            info["extractors"][a] = {
                "vocabulary": ex.vocabulary, "level_cuts": ex.level_cuts,
                "thresholds": {k: (None if v == NEVER else v) for k, v in ex.thresholds.items()},
                "global_threshold": None if ex.global_threshold == NEVER else ex.global_threshold, "meta": ex.meta}
        (path / "meta.json").write_text(json.dumps(info, indent=2, sort_keys=True))

    def load(self, path: Path) -> AttributesModel:
        path = Path(path)
        info = json.loads((path / "meta.json").read_text())
        if info.get("format") != FORMAT:
            raise ValueError(f"attributes: {path} holds a model of format {info.get('format')!r}, not {FORMAT!r}; "
                             "retrain the family")
        extractors = {}
        for a in info.get("attributes") or list(info["extractors"]):
            e = info["extractors"][a]
            parts = joblib.load(path / f"{a}.joblib")
            extractors[a] = AttributeExtractor(
                attribute=a, vocabulary=e["vocabulary"], vectorizer=parts["vectorizer"], members=parts["members"],
                level_cuts=[float(c) for c in e["level_cuts"]],
                thresholds={k: (NEVER if v is None else float(v)) for k, v in e["thresholds"].items()},
                global_threshold=NEVER if e["global_threshold"] is None else float(e["global_threshold"]),
                meta=e["meta"])
        return AttributesModel(extractors=extractors, attribute=info["attribute"], meta=info.get("meta", {}))


FAMILY = AttributesFamily()
