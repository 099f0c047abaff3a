"""Attributes family: fill a catalog attribute (``color`` by default; ``brand``, ``material`` alike) from text.

Self-learning: items whose attribute is known are the weak labels; nothing is hand labelled. A TF-IDF of the
item text (word 1-2-grams + char 2-5-grams within word boundaries) feeds a multinomial logistic regression;
the confidence is the top class probability and the extractor abstains (``None``) below ``min_confidence``.

``min_confidence`` is tuned, not guessed: out-of-fold confidences (``cv_folds`` folds by hash of item_id)
on the training items pick the lowest threshold whose precision reaches ``target_precision`` and whose
marginal precision stays >= ``min_marginal_precision`` (see ``tune_threshold``); then the classifier is
refit on all training items. (The refit sees more data, so confidences drift up a little; the holdout of
``evaluate`` measures precision at the stored threshold honestly.)
Several uncertainty levels with their own thresholds are a later step.
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
from sklearn.pipeline import FeatureUnion, Pipeline
from threadpoolctl import threadpool_limits

from ml.families.base import GateSpec, NotEnoughData, TrainContext

MART = "dim_items.parquet"
COLUMNS: tuple[str, ...] = (
    "item_id", "title", "description", "category", "brand", "color", "material", "price", "created_at",
    "event_timestamp",
)
ATTRIBUTES: tuple[str, ...] = ("color", "brand", "material")


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


@dataclass
class AttributeModel:
    """What serving loads: ``predict(texts) -> (values or None, confidences)``."""

    attribute: str
    vocabulary: list[str]
    min_confidence: float
    pipeline: Pipeline
    meta: dict[str, Any] = field(default_factory=dict)

    def predict_all(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Top class and its probability for every text, without abstaining."""
        if len(texts) == 0:
            return [], np.zeros(0)
        proba = self.pipeline.predict_proba(list(texts))
        classes = self.pipeline.classes_
        best = proba.argmax(axis=1)
        return [str(classes[i]) for i in best], proba[np.arange(len(best)), best]

    def predict(self, texts: Sequence[str]) -> tuple[list[str | None], np.ndarray]:
        values, conf = self.predict_all(texts)
        return [v if c >= self.min_confidence else None for v, c in zip(values, conf)], conf


def _pipeline(params: dict[str, Any]) -> Pipeline:
    features = FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True,
                                 token_pattern=r"(?u)\b\w+\b")),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, lowercase=True,
                                 min_df=int(params.get("char_min_df", 2)))),
    ])
    clf = LogisticRegression(C=float(params.get("C", 10.0)), max_iter=int(params.get("max_iter", 1000)))
    return Pipeline([("features", features), ("clf", clf)])


def tune_threshold(conf: np.ndarray, correct: np.ndarray, target: float, min_support: int,
                   min_marginal: float = 0.0) -> tuple[float, float]:
    """Lowest threshold whose precision over ``conf >= t`` reaches ``target`` (max coverage at that precision)
    and whose *marginal* precision (isotonic P(correct | conf = t)) is at least ``min_marginal``.

    The marginal condition is the trap guard: with 85% easy items, the cumulative precision stays at the
    target even after admitting a band of near-guesses at the bottom; the marginal one refuses them.
    Returns (threshold, precision there). When no threshold qualifies, the most precise one with
    ``min_support`` predictions; the caller records that the target was missed.
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


class AttributesFamily:
    name = "attributes"
    registered_model = "ltrr-attributes"
    # Precision of the values it fills in (at the stored threshold) on held-out items. 0.8 is the floor the
    # catalog can live with (the tuning target is 0.9); `majority_accuracy` is recorded beside it.
    gate_spec = GateSpec(metric="precision", direction="max", floor=0.8, min_delta=0.0)
    # Checked by ml/registry.gate beside the floor: precision must beat the majority-class accuracy.
    extra_floors: ClassVar[dict[str, float]] = {"beats_majority": 1.0}
    default_params: ClassVar[dict[str, Any]] = {
        "attribute": "color",
        "target_precision": 0.9,
        "min_marginal_precision": 0.5,        # never admit a value more likely wrong than right
        "cv_folds": 3,
        "min_support": 5,
        "default_min_confidence": 0.5,
        "min_class_count": 3,
        "min_items": 30,
        "C": 10.0,
        "char_min_df": 2,
        "max_iter": 1000,
        "holdout_share": 0.2,
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

    def train(self, frame: pd.DataFrame, params: dict[str, Any]) -> AttributeModel:
        p = {**self.default_params, **(params or {})}
        attribute = str(p["attribute"])
        if attribute not in frame.columns:
            raise ValueError(f"attributes: no column {attribute!r} in the training frame")
        y = known_values(frame, attribute)
        counts = y.value_counts()
        keep = y.isin(counts[counts >= int(p["min_class_count"])].index)
        data = frame.loc[keep].reset_index(drop=True)
        labels = y[keep].astype(str).reset_index(drop=True)
        if len(data) < int(p["min_items"]) or labels.nunique() < 2:
            raise NotEnoughData(f"attributes[{attribute}]: {len(data)} labelled items, {labels.nunique()} values")
        texts = np.array(frame_texts(data), dtype=object)

        # Out-of-fold confidences (folds by hash of item_id) tune the threshold on every training item.
        folds = (_hash_share(data["item_id"], "fold:") * int(p["cv_folds"])).astype(int)
        conf = np.full(len(data), np.nan)
        correct = np.zeros(len(data), dtype=bool)
        for k in range(int(p["cv_folds"])):
            fit, held = folds != k, folds == k
            if not held.any() or labels[fit].nunique() < 2:
                continue
            with threadpool_limits(limits=int(p["n_threads"])):
                tuner = _pipeline(p).fit(list(texts[fit]), labels[fit])
            proba = tuner.predict_proba(list(texts[held]))
            conf[held] = proba.max(axis=1)
            correct[held] = tuner.classes_[proba.argmax(axis=1)] == labels[held].to_numpy()
        seen = ~np.isnan(conf)
        threshold, val_precision, target_met = float(p["default_min_confidence"]), None, False
        if seen.sum() >= int(p["min_support"]):
            threshold, val_precision = tune_threshold(conf[seen], correct[seen], float(p["target_precision"]),
                                                      int(p["min_support"]), float(p["min_marginal_precision"]))
            target_met = bool(val_precision >= float(p["target_precision"]))   # False when nan
            val_precision = None if np.isnan(val_precision) else val_precision

        with threadpool_limits(limits=int(p["n_threads"])):
            pipeline = _pipeline(p).fit(list(texts), labels)
        majority = str(counts.index[0])
        meta = {"n_train": len(data), "majority_value": majority,
                "majority_share": float((labels == majority).mean()), "validation_precision": val_precision,
                "target_precision": float(p["target_precision"]), "target_met": target_met,
                "n_validation": int(seen.sum())}
        return AttributeModel(attribute=attribute, vocabulary=[str(c) for c in pipeline.classes_],
                              min_confidence=threshold, pipeline=pipeline, meta=meta)

    def evaluate(self, model: AttributeModel, holdout: pd.DataFrame) -> dict[str, float]:
        """On held-out items with a known value: precision and coverage at the threshold, argmax accuracy,
        and the majority-class baseline; plus the fill rate on items whose value is unknown."""
        y = known_values(holdout, model.attribute)
        known = holdout.loc[y.notna()]
        if len(known) == 0:
            raise NotEnoughData(f"attributes[{model.attribute}]: no holdout item with a known value")
        truth = y[y.notna()].astype(str).to_numpy()
        values, conf = model.predict_all(frame_texts(known))
        values = np.array(values, dtype=object)
        predicted = conf >= model.min_confidence
        correct = values == truth
        majority_acc = float((truth == model.meta.get("majority_value")).mean())
        precision = float(correct[predicted].mean()) if predicted.any() else 0.0
        unknown = holdout.loc[y.isna()]
        fill = 0.0
        if len(unknown):
            _, conf_u = model.predict_all(frame_texts(unknown))
            fill = float((conf_u >= model.min_confidence).mean())
        return {
            "precision": precision,
            "coverage": float(predicted.mean()),
            "recall": float((correct & predicted).mean()),
            "accuracy": float(correct.mean()),
            "majority_accuracy": majority_acc,
            "beats_majority": float(precision > majority_acc),
            "min_confidence": float(model.min_confidence),
            "n_eval": float(len(known)),
            "n_unknown": float(len(unknown)),
            "fill_rate_unknown": fill,
        }

    def pyfunc_predict(self, model: AttributeModel, frame: pd.DataFrame) -> pd.DataFrame:
        """MLflow pyfunc input: a frame with ``text`` or ``title`` (+ ``description``) -> value, confidence."""
        texts = frame["text"].astype(str).tolist() if "text" in frame.columns else frame_texts(frame)
        values, conf = model.predict(texts)
        return pd.DataFrame({"value": values, "confidence": conf}, index=frame.index)

    def save(self, model: AttributeModel, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        joblib.dump(model.pipeline, path / "pipeline.joblib")
        (path / "meta.json").write_text(json.dumps({
            "attribute": model.attribute, "vocabulary": model.vocabulary,
            "min_confidence": model.min_confidence, "meta": model.meta}, indent=2, sort_keys=True))

    def load(self, path: Path) -> AttributeModel:
        path = Path(path)
        info = json.loads((path / "meta.json").read_text())
        return AttributeModel(attribute=info["attribute"], vocabulary=info["vocabulary"],
                              min_confidence=float(info["min_confidence"]),
                              pipeline=joblib.load(path / "pipeline.joblib"), meta=info["meta"])


FAMILY = AttributesFamily()
