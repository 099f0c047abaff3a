"""Attributes family: extract every catalog attribute (color, brand, material, ...) from an item's text.

Self-learning: for each attribute, items whose value is known are the weak labels; nothing is hand labelled.
The text is the title and the description (``item_text`` keeps them apart with a newline). One TF-IDF
(word 1-2-grams and char 2-5-grams of the whole text, plus word 1-2-grams of the title alone, so "black" in
the title and "black" in "Pairs well with black jeans." are different evidence) feeds a **bootstrap
ensemble** of ``n_bootstrap`` multinomial logistic regressions; the mean probability picks the value and is
its ``confidence``, the members' standard deviation is reported as ``uncertainty`` (std).

Uncertainty levels: token evidence. The ensemble spread turned out to carry no information beyond the
confidence (on the simulator, thresholds tuned per std tercile on the truth itself recalled <= 0.01 more than
one threshold; the terciles' accuracies were flat). What separates a reliable 0.6 from a guess of 0.6 is what
the text says about the predicted value, which a bag-of-n-grams model adds up but does not see as such. So
each prediction gets a level from the vocabulary of known values (``evidence_levels``):

* ``stated``: the value (normalized, as a phrase) is in the title, and no other value is;
* ``first``: the value is in the title with other values, named first ("Black/White" -> black): catalogs
  list the main color first;
* ``mixed``: the value is in the title with other values, not first;
* ``contradicted``: the title names other values but not this one;
* ``near``: the title names no value but a title token is a near-spelling of this one ("Balck", "Nordhvn");
* ``described``: the title names no value, the description names this one (in a real catalog often right,
  in a noisy one often an accessory: "Comes with a red pouch.");
* ``implied``: no value named anywhere; the model infers it from other n-grams (a shade, a feed code, the
  category). Calibration decides what each level is worth; nothing is assumed.

Thresholds: a calibration split, never the training rows. The labelled items are split by hash of item_id:
the ensemble is fitted on ``1 - calibration_share`` of them and **kept as is** (no refit on everything: a
refit's confidences drift up and the thresholds would not transfer); its predictions on the calibration
share give (confidence, level, correct). ``LevelCalibrator`` (Platt scaling per level, shrunk toward a pooled
curve) turns (confidence, level) into ``probability`` = P(correct), the number the backfill keeps as
provenance. Predictions are admitted in decreasing probability down to the lowest cut whose calibration
precision's Wilson lower bound (``precision_z``) reaches ``target_precision``, with at least ``min_support``
admitted and an isotonic marginal precision of at least ``min_marginal_precision`` (``choose_threshold``);
within a level that is one confidence threshold, and a level that does not earn one (too few calibration
rows, or its own admitted precision below the target) is rejected, never filled
(``tune_level_thresholds``). The global threshold (``global_threshold``) follows the same rule on the same
rows ordered by raw confidence, for the comparison the benchmark makes. When no level qualifies the
attribute abstains altogether and ``meta["target_met"]`` says so. See ``docs/attributes.md``.

Queries. ``tag_query`` reuses the extractor's vocabulary and model for query understanding: exact vocabulary
matches first, then near-spellings of a value (one edit, or a prefix of at least 3 letters), the extractor's
probabilities on the query choosing among several: "nordhvn bag" -> brand Nordhavn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
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
# Uncertainty levels by token evidence, most to least direct (see the module docstring).
LEVELS: tuple[str, ...] = ("stated", "first", "mixed", "contradicted", "near", "described", "implied")
FORMAT = "multi-v2"                                      # meta.json format of the saved model
NEVER = float("inf")                                     # the threshold of a level that abstains
FIELD_SEP = "\n"                                         # title FIELD_SEP description in ``item_text``


def item_text(title: Any, description: Any = None) -> str:
    """The one text the extractor reads, for training and serving alike: the title, a newline, the description.

    The newline keeps the fields apart for the title-only features and the evidence levels (a text without
    one, such as a query, is all title); TF-IDF on the whole text treats it as any whitespace.
    """
    def clean(x: Any) -> str | None:
        if x is None or (isinstance(x, float) and np.isnan(x)):
            return None
        return " ".join(str(x).split())
    t, d = clean(title), clean(description)
    return (t or "") + (FIELD_SEP + d if d else "")


def frame_texts(frame: pd.DataFrame) -> list[str]:
    desc = frame["description"] if "description" in frame.columns else [None] * len(frame)
    return [item_text(t, d) for t, d in zip(frame["title"], desc)]


def title_part(text: str) -> str:
    """The title of an ``item_text`` (lowercased: a TfidfVectorizer preprocessor replaces its lowercasing)."""
    return text.split(FIELD_SEP, 1)[0].lower()


def known_values(frame: pd.DataFrame, attribute: str) -> pd.Series:
    """The attribute as a clean string, NaN where unknown (null or blank)."""
    v = frame[attribute].astype("string").str.strip()
    return v.where(v.notna() & (v != ""))


def _hash_share(keys: pd.Series, salt: str) -> np.ndarray:
    h = pd.util.hash_pandas_object((salt + keys.astype(str)), index=False).to_numpy()
    return (h % 1000) / 1000.0


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


def evidence_levels(texts: Sequence[str], vocabulary: Sequence[str], predicted: Sequence[str]) -> np.ndarray:
    """Index into ``LEVELS`` of each prediction: what the text says about the predicted value (see the module
    docstring). Values and text are compared after ``normalize_query``, a value as a whole phrase."""
    norm = {v: normalize_query(str(v)) for v in vocabulary}
    phrases = [n for n in set(norm.values()) if n]
    out = np.empty(len(texts), dtype=np.int8)
    for i, (text, value) in enumerate(zip(texts, predicted)):
        title, _, desc = text.partition(FIELD_SEP)
        t_norm = normalize_query(title)
        t_pad, d_pad = f" {t_norm} ", f" {normalize_query(desc)} "
        v = norm.get(value) or normalize_query(str(value))
        in_title = {n: t_pad.find(f" {n} ") for n in phrases if f" {n} " in t_pad}
        if v and v in in_title:
            if len(in_title) == 1:
                level = "stated"
            else:
                level = "first" if in_title[v] == min(in_title.values()) else "mixed"
        elif in_title:
            level = "contradicted"
        elif v and any(_near(t, vt) for t in t_norm.split(" ") if t for vt in v.split(" ")):
            level = "near"
        elif v and f" {v} " in d_pad:
            level = "described"
        else:
            level = "implied"
        out[i] = LEVELS.index(level)
    return out


# ----------------------------------------------------------------------------------------------------------
# thresholds


def wilson_lower(k: np.ndarray | float, n: np.ndarray | float, z: float) -> np.ndarray:
    """Wilson score lower bound of a binomial proportion k / n (z = 0: the proportion itself)."""
    k, n = np.asarray(k, dtype=float), np.maximum(np.asarray(n, dtype=float), 1e-12)
    p = k / n
    if z <= 0:
        return p
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


@dataclass(frozen=True)
class Cut:
    """A chosen confidence threshold and what the calibration rows say about it."""

    threshold: float          # NEVER when the target cannot be met (the level or attribute abstains)
    precision: float          # calibration precision over conf >= threshold (nan when nothing qualifies)
    lower: float              # its Wilson lower bound
    n_admitted: int
    met: bool


def choose_threshold(conf: np.ndarray, correct: np.ndarray, target: float, min_support: int,
                     min_marginal: float = 0.0, z: float = 0.0) -> Cut:
    """Lowest confidence threshold t (max recall) such that over ``conf >= t``: at least ``min_support`` rows,
    the precision's Wilson lower bound (``z``) >= ``target``, and the isotonic *marginal* precision at t (the
    estimated P(correct | conf = t)) >= ``min_marginal``.

    The marginal condition is the trap guard: with mostly easy rows the cumulative precision stays above the
    target even after admitting a band of near-guesses at the bottom; the marginal one refuses them. When no
    threshold qualifies: ``Cut(NEVER, ..., met=False)`` with the best lower bound seen (for the report).
    """
    conf, ok = np.asarray(conf, dtype=float), np.asarray(correct, dtype=float)
    if len(conf) == 0:
        return Cut(NEVER, float("nan"), float("nan"), 0, False)
    order = np.argsort(-conf, kind="stable")
    c, ok = conf[order], ok[order]
    n = np.arange(1, len(ok) + 1)
    k = np.cumsum(ok)
    prec, lower = k / n, wilson_lower(k, n, z)
    # a threshold t = c[i] keeps every row with conf >= c[i]: the last index of each run of ties
    last = np.r_[c[1:] != c[:-1], True]
    cand = np.flatnonzero(last & (n >= min_support))
    if len(cand) == 0:
        return Cut(NEVER, float("nan"), float("nan"), 0, False)
    marginal = np.ones(len(c))
    if min_marginal > 0 and 0 < ok.sum() < len(ok):
        marginal = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(c, ok).predict(c)
    good = cand[(lower[cand] >= target) & (marginal[cand] >= min_marginal)]
    if len(good) == 0:
        best = cand[np.argmax(lower[cand])]
        return Cut(NEVER, float(prec[best]), float(lower[best]), 0, False)
    i = int(good.max())
    return Cut(float(c[i]), float(prec[i]), float(lower[i]), int(n[i]), True)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class LevelCalibrator:
    """P(correct | confidence, level): Platt scaling per level, shrunk toward one pooled curve.

    One L2-regularized logistic regression on [logit(conf), level one-hot, level one-hot x logit(conf)]: the
    shared slope and intercept fit every level, the per-level terms bend it where a level's data says so, and
    the penalty pulls a small level back toward the pooled curve. Why not isotonic per level: with a few hundred
    calibration rows split six ways, an isotonic step function fits the luck of its bins, and ranking by it
    then overstates the precision of the very rows it was fitted on; two parameters per level do not.
    """

    coef: tuple[float, ...]
    intercept: float

    @classmethod
    def fit(cls, conf: np.ndarray, level: np.ndarray, correct: np.ndarray, C: float = 1.0) -> LevelCalibrator:
        ok = np.asarray(correct, dtype=int)
        X = cls.features(conf, level)
        if len(ok) == 0 or ok.min() == ok.max():
            p = float(ok.mean()) if len(ok) else 0.0
            return cls(coef=(0.0,) * X.shape[1], intercept=float(_logit(np.array([p]))[0]))
        lr = LogisticRegression(C=C, max_iter=1000).fit(X, ok)
        return cls(coef=tuple(float(c) for c in lr.coef_[0]), intercept=float(lr.intercept_[0]))

    @staticmethod
    def features(conf: np.ndarray, level: np.ndarray) -> np.ndarray:
        lc = _logit(conf)[:, None]
        onehot = np.eye(len(LEVELS))[np.asarray(level, dtype=int)]
        return np.hstack([lc, onehot, onehot * lc])

    def predict(self, conf: np.ndarray, level: np.ndarray) -> np.ndarray:
        if len(conf) == 0:
            return np.zeros(0)
        z = self.features(conf, level) @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def confidence_at(self, probability: float, level: int) -> float:
        """The lowest confidence whose calibrated probability in ``level`` reaches ``probability`` (NEVER if
        none does): the per-level confidence threshold equivalent to a cut on the calibrated probability."""
        L = len(LEVELS)
        slope = self.coef[0] + self.coef[1 + L + level]
        icpt = self.intercept + self.coef[1 + level]
        if probability == NEVER or probability > 1:
            return NEVER
        target = float(_logit(np.array([probability]))[0])
        if slope <= 1e-9:                       # flat or decreasing: all or nothing
            return 0.0 if icpt >= target else NEVER
        t = float(1.0 / (1.0 + np.exp(-(target - icpt) / slope)))
        return t if t < 1.0 - 1e-9 else NEVER


def tune_level_thresholds(conf: np.ndarray, level: np.ndarray, correct: np.ndarray, target: float,
                          min_support: int, min_marginal: float = 0.0, z: float = 0.0, C: float = 1.0,
                          min_level_support: int = 0) -> tuple[dict[str, float], Cut, LevelCalibrator]:
    """Per-level confidence thresholds maximizing recall at ``target`` precision over all levels together.

    The calibrator (``LevelCalibrator``) turns (confidence, level) into P(correct); predictions are admitted
    in decreasing calibrated probability down to the cut ``choose_threshold`` picks on the pooled rows (the
    same rule as the global threshold: Wilson lower bound of the precision >= target, marginal precision >=
    ``min_marginal``). Admitting the most probable values first is what maximizes recall at a precision; a
    cut on a probability that is monotone in the confidence within a level is one confidence threshold per
    level, and a level whose probability never reaches the cut is rejected (``NEVER``). Two guards against a
    calibrator extrapolating into a level it knows little about also reject a level: fewer than
    ``min_level_support`` calibration rows, or fewer than ``min_support`` admitted ones, or an own calibration
    precision below the target over the rows it admits (the pooled precision could otherwise carry a level of
    near-guesses); and the cut never goes below ``min_marginal`` calibrated probability. The global threshold is
    the special case where the levels are ignored. Returns (level -> threshold, the Cut on the calibrated
    probability, the calibrator).
    """
    conf, level, correct = np.asarray(conf, float), np.asarray(level, int), np.asarray(correct, bool)
    cal = LevelCalibrator.fit(conf, level, correct, C)
    prob = cal.predict(conf, level)
    cut = choose_threshold(prob, correct, target, min_support, min_marginal, z)
    if cut.met and cut.threshold < min_marginal:     # never admit a value the calibrator calls a likely miss
        cut = choose_threshold(np.where(prob >= min_marginal, prob, 0.0), correct, target, min_support,
                               min_marginal, z)
    thresholds = {}
    for j, name in enumerate(LEVELS):
        m = level == j
        t = cal.confidence_at(cut.threshold, j) if cut.met else NEVER
        adm = m & (conf >= t)
        if m.sum() < min_level_support or adm.sum() < min_support or correct[adm].mean() < target:
            t = NEVER
        thresholds[name] = t
    return thresholds, cut, cal


# ----------------------------------------------------------------------------------------------------------
# one attribute


def _vectorizer(params: dict[str, Any]) -> FeatureUnion:
    return FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True,
                                 token_pattern=r"(?u)\b\w+\b")),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True,
                                 min_df=int(params.get("char_min_df", 2)))),
        ("title", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                                  preprocessor=title_part, token_pattern=r"(?u)\b\w+\b")),
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
    """One attribute: ``extract(texts)`` -> value, confidence, probability, uncertainty, level, accepted."""

    attribute: str
    vocabulary: list[str]
    vectorizer: FeatureUnion
    members: list[LogisticRegression]
    calibrator: LevelCalibrator              # (confidence, level) -> P(correct), fitted on the calibration split
    probability_cut: float                   # the cut on the calibrated probability the thresholds come from
    thresholds: dict[str, float]             # level -> confidence threshold (NEVER: the level is rejected)
    global_threshold: float                  # the one-threshold alternative, chosen on the same calibration rows
    meta: dict[str, Any] = field(default_factory=dict)
    # The calibration split's (confidence, level, correct) rows, for reports and plots; not saved.
    calibration_rows: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def min_confidence(self) -> float:
        """The global threshold (kept for callers of the single-threshold API)."""
        return self.global_threshold

    @cached_property
    def query_vocabulary(self) -> list[tuple[str, str, list[str]]]:
        """(normalized value, value, its tokens) for ``tag_query``, longest first: computed once, not per query."""
        norm = sorted(((normalize_query(v), v) for v in self.vocabulary), key=lambda p: -len(p[0]))
        return [(n, v, n.split(" ")) for n, v in norm]

    def extract(self, texts: Sequence[str], per_level: bool = True) -> pd.DataFrame:
        """One row per text: value (top class, never None), confidence (ensemble mean probability), probability
        (calibrated P(correct) given confidence and level), uncertainty (ensemble std), level, accepted (at the
        per-level thresholds, or at the global one when ``per_level`` is False)."""
        if len(texts) == 0:
            return pd.DataFrame({"value": pd.Series(dtype=object), "confidence": pd.Series(dtype=float),
                                 "probability": pd.Series(dtype=float), "uncertainty": pd.Series(dtype=float),
                                 "level": pd.Series(dtype=object), "accepted": pd.Series(dtype=bool)})
        classes = np.asarray(self.vocabulary, dtype=object)
        values, conf, std = _summarize(_ensemble_proba(self.vectorizer, self.members, classes, texts), classes)
        lvl = evidence_levels(texts, self.vocabulary, values)
        prob = self.calibrator.predict(conf, lvl)
        thr = np.array([self.thresholds.get(n, NEVER) for n in LEVELS])[lvl] if per_level else self.global_threshold
        accepted = conf >= thr
        return pd.DataFrame({"value": values.astype(object), "confidence": conf, "probability": prob,
                             "uncertainty": std, "level": np.asarray(LEVELS, dtype=object)[lvl],
                             "accepted": accepted})


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
    target, support = float(params["target_precision"]), int(params["min_support"])
    marginal, z = float(params["min_marginal_precision"]), float(params["precision_z"])

    # Fit on one hash share of the labelled items, calibrate on the rest; the fitted model is the one served.
    cal = _hash_share(data["item_id"], f"calibration:{attribute}:") < float(params["calibration_share"])
    if len(np.unique(labels[~cal])) < 2:
        raise NotEnoughData(f"attributes[{attribute}]: fewer than 2 values outside the calibration share")
    vec, members, classes = _fit_ensemble(texts[~cal], labels[~cal], params, seed)
    values, conf, _std = _summarize(_ensemble_proba(vec, members, classes, texts[cal]), classes)
    correct = values == labels[cal]
    lvl = evidence_levels(list(texts[cal]), list(classes), list(values))
    thresholds, cut, calibrator = tune_level_thresholds(conf, lvl, correct, target, support, marginal, z,
                                                        float(params["calibration_C"]),
                                                        int(params["min_level_support"]))
    glob = choose_threshold(conf, correct, target, support, marginal, z)

    accepted = conf >= np.array([thresholds[n] for n in LEVELS])[lvl] if len(conf) else np.zeros(0, bool)
    accepted_g = conf >= glob.threshold
    n_cal = max(len(conf), 1)
    majority = str(counts[counts.index.isin(np.unique(labels))].index[0])
    meta = {
        "n_train": int((~cal).sum()), "n_calibration": int(cal.sum()), "majority_value": majority,
        "majority_share": float((labels == majority).mean()), "target_precision": target, "precision_z": z,
        "target_met": cut.met, "global_target_met": glob.met,
        "validation_precision": float(correct[accepted].mean()) if accepted.any() else None,
        "validation_precision_lower": None if np.isnan(cut.lower) else cut.lower,
        "validation_precision_global": float(correct[accepted_g].mean()) if accepted_g.any() else None,
        "validation_recall": float((correct & accepted).sum() / n_cal),
        "validation_recall_global": float((correct & accepted_g).sum() / n_cal),
        "n_validation": len(conf), "n_members": len(members),
        "levels": {name: {"n": int((lvl == j).sum()),
                          "accuracy": float(correct[lvl == j].mean()) if (lvl == j).any() else None,
                          "threshold": None if thresholds[name] == NEVER else thresholds[name],
                          "n_admitted": int((accepted & (lvl == j)).sum()),
                          "precision": float(correct[accepted & (lvl == j)].mean())
                          if (accepted & (lvl == j)).any() else None}
                   for j, name in enumerate(LEVELS)},
    }
    return AttributeExtractor(attribute=attribute, vocabulary=[str(c) for c in classes], vectorizer=vec,
                              members=members, calibrator=calibrator, probability_cut=float(cut.threshold),
                              thresholds=thresholds, global_threshold=float(glob.threshold), meta=meta,
                              calibration_rows=pd.DataFrame({"confidence": conf, "level": lvl, "correct": correct}))


# ----------------------------------------------------------------------------------------------------------
# the family's model: every attribute


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
            norm = ex.query_vocabulary
            hit = next((v for n, v, _ in norm if n and f" {n} " in padded), None)
            if hit is not None:
                tags[a] = hit
                continue
            near = [v for n, v, value_tokens in norm if n and any(_near(t, vt) for t in tokens for vt in value_tokens)]
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
        "calibration_share": 0.3,             # labelled items held out of the fit to choose the thresholds
        "precision_z": 1.645,                 # Wilson lower bound (one-sided 95%) of precision >= target
        "calibration_C": 1.0,                 # L2 strength of the per-level Platt calibrator
        "min_level_support": 20,              # a level with fewer calibration values is never filled
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
        attribute (value or None) and ``<attribute>_confidence`` / ``_probability`` / ``_uncertainty`` /
        ``_level``."""
        texts = frame["text"].astype(str).tolist() if "text" in frame.columns else frame_texts(frame)
        cols: dict[str, Any] = {}
        for a, res in model.predict_attributes(texts).items():
            cols[a] = [v if ok else None for v, ok in zip(res["value"], res["accepted"])]
            cols[f"{a}_confidence"] = res["confidence"].to_numpy()
            cols[f"{a}_probability"] = res["probability"].to_numpy()
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
                "vocabulary": ex.vocabulary,
                "calibrator": {"coef": list(ex.calibrator.coef), "intercept": ex.calibrator.intercept},
                "probability_cut": None if ex.probability_cut == NEVER else ex.probability_cut,
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
                calibrator=LevelCalibrator(coef=tuple(float(c) for c in e["calibrator"]["coef"]),
                                           intercept=float(e["calibrator"]["intercept"])),
                probability_cut=NEVER if e["probability_cut"] is None else float(e["probability_cut"]),
                thresholds={k: (NEVER if v is None else float(v)) for k, v in e["thresholds"].items()},
                global_threshold=NEVER if e["global_threshold"] is None else float(e["global_threshold"]),
                meta=e["meta"])
        return AttributesModel(extractors=extractors, attribute=info["attribute"], meta=info.get("meta", {}))


FAMILY = AttributesFamily()
