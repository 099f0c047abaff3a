"""q2e family: query-to-entity memory, the items each query actually engaged with, scored from interactions.

Per (query_norm, item_id), with every impression decayed by its age (``0.5 ** (age_days / half_life_days)``,
age relative to the newest event in the training frame, never ``now()``):

    n     = sum of decayed impressions
    g     = sum of decayed grade weights (label 1 click, 2 add-to-cart, 3 purchase -> ``grade_weights``)
    score = (g + a * prior) / (n + a)          a = ``prior_strength``, prior = the global decayed g / n
    confidence = n / (n + a)

The score is an exponentially weighted engagement rate shrunk toward the global rate: one click out of
one impression ranks below 30 out of 100, and a stale hit loses to a fresh one. Only pairs with at least
one engagement are remembered (the memory recalls what users did, not what we showed), the ``top_n`` best
per query. The model also keeps the global most-engaged items: the popularity baseline of ``evaluate``.

Predicted entries (cold start, doc2query in spirit). ``QueryGenerator`` learns from the engaged
(query, item) pairs how queries are written from item fields: every query token is labelled with the item
field it came from (brand, category, color, material, model = a title word unique to the item, other title
words, description words) or kept as a literal, which gives query *templates* ("brand model",
"color category", "gift for desc desc lover") with their engagement-weighted share, and, per field, how often
each token is queried when an item shows it (smoothed toward the field's rate, so an unseen model word
inherits the model field's rate). Applied to every catalog item (``dim_items``: items with no interaction
too) it fills each template with the item's own tokens and scores the generated query by
``p = P(template) x P(tokens | template, item)``. A predicted entry scores
``predicted_weight x prior x p`` (< the prior, the score of an actual pair with no evidence), flagged
``source="predicted"`` with ``confidence = p``. Evidence replaces it: a pair with an engagement is an actual
entry (the predicted one is dropped), a pair shown but never engaged keeps its predicted entry shrunk by
``a / (n + a)``. Any engaged impression, whatever strategy retrieved it, is a training pair: the logged-data loop.

The training frame (``training_set``) holds impressions and, as rows with ``row_kind == "item"``, the catalog
(``training_frame`` builds one); a frame without ``row_kind`` is impressions only (no predicted entries).
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ml.families.base import GateSpec, NotEnoughData, TrainContext, holdout_mask, read_mart
from ml.text import normalize_query

MART = "label_ranker.parquet"
CATALOG_MART = "dim_items.parquet"
COLUMNS: tuple[str, ...] = ("request_id", "event_timestamp", "query_norm", "item_id", "label")
# Read as pandas categoricals (Arrow dictionaries): one Python string per distinct value, not one per impression
# (a day of 3M events is 2.4M impressions; as object strings these columns alone were ~1 GB).
KEY_COLUMNS: tuple[str, ...] = ("request_id", "query_norm", "item_id")
CATALOG_COLUMNS: tuple[str, ...] = ("item_id", "title", "description", "category", "brand", "color", "material",
                                    "price", "created_at")
TABLE_COLUMNS: tuple[str, ...] = ("query_norm", "item_id", "score", "confidence", "impressions", "engagements",
                                  "source")
SOURCES: tuple[str, ...] = ("actual", "predicted")
# Item fields a query token can come from, in the order a token is attributed (fields are made disjoint).
FIELDS: tuple[str, ...] = ("brand", "category", "color", "material", "model", "title", "desc")
EVAL_K = 10   # the gate metric is recall@10: the first page the scorer shows


def item_fields(catalog: pd.DataFrame, max_model_df: int = 1) -> dict[str, dict[str, list[str]]]:
    """item_id -> field -> normalized tokens (in text order, deduplicated, fields disjoint in ``FIELDS`` order).

    ``model`` holds the title tokens that no more than ``max_model_df`` titles of the catalog contain (the
    item's own model/SKU word) and that no structured field claims; ``title`` the other title tokens;
    ``desc`` the description tokens no other field holds. A hidden attribute (null) is an empty field; its
    word may still be in the title (then it is a ``title`` token, and the learned token rates carry it).
    """
    def toks(v: Any) -> list[str]:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return []
        return list(dict.fromkeys(normalize_query(str(v)).split()))

    cat = catalog.drop_duplicates("item_id", keep="last")
    titles = [toks(t) for t in cat["title"]]
    df: dict[str, int] = defaultdict(int)
    for t in titles:
        for tok in t:
            df[tok] += 1
    out: dict[str, dict[str, list[str]]] = {}
    cols = {c: cat[c].tolist() if c in cat.columns else [None] * len(cat) for c in
            ("brand", "category", "color", "material", "description")}
    for n, item in enumerate(cat["item_id"].astype(str)):
        f: dict[str, list[str]] = {}
        taken: set[str] = set()
        for name in ("brand", "category", "color", "material"):
            f[name] = [t for t in toks(cols[name][n]) if t not in taken]
            taken.update(f[name])
        title = [t for t in titles[n] if t not in taken]
        f["model"] = [t for t in title if df[t] <= max_model_df]
        f["title"] = [t for t in title if df[t] > max_model_df]
        taken.update(title)
        f["desc"] = [t for t in toks(cols["description"][n]) if t not in taken]
        out[item] = f
    return out


@dataclass
class QueryGenerator:
    """Learned query templates and per-field token rates; ``generate(fields)`` -> [(query_norm, p)] best first.

    A template is a tuple of slots: a field name from ``FIELDS`` or a literal token written ``"=token"``.
    """

    templates: list[tuple[tuple[str, ...], float]]     # (slots, share of engaged weight), best first
    field_rate: dict[str, float]                         # P(a token of field f is queried | pair engaged)
    token_rate: dict[str, dict[str, float]]              # field -> token -> smoothed rate
    per_slot: int = 3                                    # tokens tried per slot when filling a template

    def rate(self, f: str, tok: str) -> float:
        return self.token_rate.get(f, {}).get(tok, self.field_rate.get(f, 0.0))

    @classmethod
    def fit(cls, pairs: pd.DataFrame, fields: dict[str, dict[str, list[str]]], *, smoothing: float = 5.0,
            max_templates: int = 40, min_template_share: float = 0.002, per_slot: int = 3) -> QueryGenerator:
        """``pairs``: engaged (query_norm, item_id, weight) rows; items missing from ``fields`` are skipped."""
        tmpl_w: dict[tuple[str, ...], float] = defaultdict(float)
        hit: dict[str, dict[str, float]] = {f: defaultdict(float) for f in FIELDS}
        shown: dict[str, dict[str, float]] = {f: defaultdict(float) for f in FIELDS}
        for q, item, w in zip(pairs["query_norm"], pairs["item_id"], pairs["weight"]):
            f_of_item = fields.get(str(item))
            if f_of_item is None or w <= 0 or not q:
                continue
            where = {tok: f for f in FIELDS for tok in f_of_item[f]}
            qtoks = str(q).split()
            slots = tuple(where.get(t, "=" + t) for t in qtoks)
            for f in FIELDS:
                for tok in f_of_item[f]:
                    shown[f][tok] += w
            for t, sl in zip(qtoks, slots):
                if not sl.startswith("="):
                    hit[sl][t] += w
            if any(not sl.startswith("=") for sl in slots):
                tmpl_w[slots] += w
        total = sum(tmpl_w.values())
        ranked = sorted(tmpl_w.items(), key=lambda kv: (-kv[1], kv[0]))
        templates = [(t, w / total) for t, w in ranked if total > 0 and w / total >= min_template_share]
        field_rate, token_rate = {}, {}
        for f in FIELDS:
            h, n = sum(hit[f].values()), sum(shown[f].values())
            base = h / n if n > 0 else 0.0
            field_rate[f] = base
            token_rate[f] = {t: (hit[f].get(t, 0.0) + smoothing * base) / (n_t + smoothing)
                             for t, n_t in shown[f].items()}
        return cls(templates=templates[:max_templates], field_rate=field_rate, token_rate=token_rate,
                   per_slot=per_slot)

    def generate(self, fields: dict[str, list[str]], top_n: int) -> list[tuple[str, float]]:
        """The ``top_n`` most likely queries for one item's fields, with p = P(template) x P(tokens | ...)."""
        scores: dict[str, float] = defaultdict(float)
        for slots, share in self.templates:
            choices = []
            for sl in slots:
                if sl.startswith("="):
                    choices.append([(sl[1:], 1.0)])
                    continue
                toks = fields.get(sl, [])
                if not toks:
                    break
                rates = [self.rate(sl, t) for t in toks]
                z = sum(rates)
                if z <= 0:
                    break
                best = sorted(zip(toks, rates), key=lambda tr: -tr[1])[: self.per_slot]
                choices.append([(t, r / z) for t, r in best])
            else:
                for combo in itertools.product(*choices):
                    words = [t for t, _ in combo]
                    if len(set(words)) < len(words):           # one token fills one slot
                        continue
                    p = share * math.prod(pr for _, pr in combo)
                    scores[normalize_query(" ".join(words))] += p
        ranked = sorted(scores.items(), key=lambda qp: (-qp[1], qp[0]))
        return [(q, min(p, 1.0)) for q, p in ranked[: max(int(top_n), 0)] if q]

    def to_json(self) -> dict[str, Any]:
        return {"templates": [[list(t), w] for t, w in self.templates], "field_rate": self.field_rate,
                "token_rate": self.token_rate, "per_slot": self.per_slot}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QueryGenerator:
        return cls(templates=[(tuple(t), float(w)) for t, w in d["templates"]], field_rate=d["field_rate"],
                   token_rate=d["token_rate"], per_slot=int(d.get("per_slot", 3)))


@dataclass
class Q2EModel:
    """What serving loads: ``lookup(query_norm, k)`` -> [(item_id, score)] best first (actual and predicted)."""

    table: pd.DataFrame                      # TABLE_COLUMNS, sorted by query then score desc
    popular: list[str]                       # global most-engaged items (popularity baseline)
    meta: dict[str, Any] = field(default_factory=dict)
    generator: QueryGenerator | None = None  # kept for inspection and re-generation; lookup never calls it
    _index: dict[str, list[tuple[str, float, str, float]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        t = self.table
        if "source" not in t.columns:        # artifacts from before predicted entries
            t = t.assign(source="actual")
        t = t.sort_values(["query_norm", "score", "item_id"], ascending=[True, False, True])
        self.table = t.reset_index(drop=True)
        self._index = {
            str(q): [(str(i), float(s), str(src), float(c))
                     for i, s, src, c in zip(g["item_id"], g["score"], g["source"], g["confidence"])]
            for q, g in self.table.groupby("query_norm", sort=False)
        }

    @property
    def n_queries(self) -> int:
        return len(self._index)

    @property
    def n_entries(self) -> int:
        return len(self.table)

    @property
    def n_predicted(self) -> int:
        return int((self.table["source"] == "predicted").sum())

    def _hits(self, query_norm: str) -> list[tuple[str, float, str, float]]:
        hits = self._index.get(query_norm)
        if hits is None:                      # tolerate a raw query; normalized keys are the contract
            hits = self._index.get(normalize_query(query_norm), [])
        return hits

    def lookup(self, query_norm: str, k: int) -> list[tuple[str, float]]:
        """The k best items for a normalized query ([] if the query is unknown)."""
        return [(i, s) for i, s, _, _ in self._hits(query_norm)[: max(int(k), 0)]]

    def lookup_entries(self, query_norm: str, k: int) -> list[dict[str, Any]]:
        """Like ``lookup`` with each entry's ``source`` ("actual" | "predicted") and ``confidence``."""
        return [{"item_id": i, "score": s, "source": src, "confidence": c}
                for i, s, src, c in self._hits(query_norm)[: max(int(k), 0)]]

    def actual_only(self) -> Q2EModel:
        """The same memory without predicted entries (what the model knows from interactions alone)."""
        t = self.table.loc[self.table["source"] == "actual"].reset_index(drop=True)
        return Q2EModel(table=t, popular=list(self.popular), meta=dict(self.meta), generator=self.generator)


def _sorted_category(values: pd.Series) -> pd.Series:
    """``values`` as strings in a categorical whose categories are sorted: grouping on it orders groups as grouping
    on the strings would, and no string is copied per row."""
    cat = values if isinstance(values.dtype, pd.CategoricalDtype) else values.astype(str).astype("category")
    cats = cat.cat.categories
    if not (cats.dtype == object and all(isinstance(c, str) for c in cats)):
        cat = cat.cat.rename_categories(cats.astype(str))
    return cat.cat.reorder_categories(sorted(cat.cat.categories))


def _grades(labels: pd.Series, grade_weights: dict) -> np.ndarray:
    gw = {int(k): float(v) for k, v in grade_weights.items()}
    return labels.fillna(0).astype(int).map(lambda g: gw.get(g, 0.0)).to_numpy(dtype=float)


def training_frame(impressions: pd.DataFrame, catalog: pd.DataFrame | None) -> pd.DataFrame:
    """One training frame: impression rows (``COLUMNS``) and catalog rows (``row_kind == "item"``).

    Impressions keyed by categoricals (``training_set``) stay so: ``item_id`` and the catalog's text columns
    (empty on every impression row) are categoricals over both parts, not one Python object per impression.
    """
    kinds = pd.CategoricalDtype(["impression", "item"])
    imp = impressions.assign(row_kind=pd.Categorical.from_codes(np.zeros(len(impressions), np.int8), dtype=kinds))
    if catalog is None or catalog.empty:
        return imp.reset_index(drop=True)
    cat = catalog[[c for c in CATALOG_COLUMNS if c in catalog.columns]].drop_duplicates("item_id", keep="last")
    cat = cat.assign(row_kind=pd.Categorical.from_codes(np.ones(len(cat), np.int8), dtype=kinds),
                     item_id=cat["item_id"].astype(str), event_timestamp=pd.to_datetime(cat["created_at"], utc=True))
    if isinstance(imp["item_id"].dtype, pd.CategoricalDtype):
        items = imp["item_id"].cat.categories.union(pd.Index(cat["item_id"].unique()))
        imp["item_id"] = imp["item_id"].cat.set_categories(items)
        cat["item_id"] = cat["item_id"].astype(pd.CategoricalDtype(items))
        for c in [c for c in CATALOG_COLUMNS if c in cat.columns and c != "item_id" and cat[c].dtype == object]:
            dtype = pd.CategoricalDtype(cat[c].dropna().unique())
            cat[c] = cat[c].astype(dtype)
            imp[c] = pd.Categorical.from_codes(np.full(len(imp), -1), dtype=dtype)     # all missing
    return pd.concat([imp, cat], ignore_index=True)


def _parts(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(impressions, catalog or None) of a training frame."""
    if "row_kind" not in frame.columns:
        return frame, None
    is_item = frame["row_kind"] == "item"
    imp = frame.loc[~is_item]
    cat = frame.loc[is_item] if is_item.any() else None
    return imp, cat


class Q2EFamily:
    name = "q2e"
    registered_model = "ltrr-q2e"
    # Gate metric: recall@10 of engaged items over ALL holdout requests with an engagement (a query the
    # memory does not know scores 0), so champion and challenger are judged on the same requests. A memory
    # that remembers nothing scores 0; the floor asks for a little more. Lookups include predicted entries
    # (what serving sees); `recall@10_actual_only` (the same memory without them), `recall@10_popularity` (the
    # baseline) and `recall@10_covered` (known queries only) are recorded beside it, not gated.
    gate_spec = GateSpec(metric="recall@10", direction="max", floor=0.05, min_delta=0.0)
    default_params: ClassVar[dict[str, Any]] = {
        "half_life_days": 14.0,               # 0 or None: no decay
        "prior_strength": 10.0,
        "grade_weights": {1: 1.0, 2: 2.0, 3: 3.0},
        "top_n": 100,
        "n_popular": 100,
        "min_impressions": 20,
        # predicted entries (need catalog rows in the frame)
        "generate": True,
        "queries_per_item": 20,               # generated queries kept per item
        "predicted_weight": 0.5,              # predicted score = predicted_weight x prior x p  (< prior)
        "predicted_top_n": 100,               # predicted entries kept per query
        "max_templates": 40,
        "min_template_share": 0.002,
        "token_smoothing": 5.0,
        "max_model_df": 1,                    # a title word in at most this many titles is a model word
    }

    def training_set(self, ctx: TrainContext) -> pd.DataFrame:
        """Impressions with their graded label, plus the catalog (``dim_items``) as ``row_kind == "item"``
        rows so the query generator can be trained and applied to every item. No Feast join."""
        marts = Path(ctx.marts_dir)
        frame = read_mart(marts / MART, COLUMNS, categorical=KEY_COLUMNS)
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        catalog = None
        if (marts / CATALOG_MART).exists():
            catalog = pd.read_parquet(marts / CATALOG_MART)
            catalog = catalog[[c for c in CATALOG_COLUMNS if c in catalog.columns]]
        return training_frame(frame, catalog)

    def split(self, frame: pd.DataFrame, ctx: TrainContext) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Later requests judge the memory built from earlier ones (a request never straddles the split).
        Catalog rows go to the training side whole: knowing an item exists is not a label."""
        is_imp = (frame["row_kind"] == "impression").to_numpy() if "row_kind" in frame.columns \
            else np.ones(len(frame), dtype=bool)
        hold = np.zeros(len(frame), dtype=bool)
        hold[is_imp] = holdout_mask(frame.loc[is_imp, ["event_timestamp", "request_id"]], ctx, group_col="request_id")
        return frame.loc[~hold].reset_index(drop=True), frame.loc[hold].reset_index(drop=True)

    def train(self, frame: pd.DataFrame, params: dict[str, Any]) -> Q2EModel:
        p = {**self.default_params, **(params or {})}
        frame, catalog = _parts(frame)
        if len(frame) < int(p["min_impressions"]):
            raise NotEnoughData(f"q2e: {len(frame)} impressions")
        ts = pd.to_datetime(frame["event_timestamp"], utc=True)
        half_life = p.get("half_life_days")
        if half_life:
            age_days = (ts.max() - ts).dt.total_seconds().to_numpy() / 86400.0
            decay = np.power(0.5, age_days / float(half_life))
        else:
            decay = np.ones(len(frame))
        g = _grades(frame["label"], p["grade_weights"])
        work = pd.DataFrame({
            "query_norm": _sorted_category(frame["query_norm"]).to_numpy(),
            "item_id": _sorted_category(frame["item_id"]).to_numpy(),
            "n": decay, "g": g * decay, "raw_g": g,
        })
        if work["raw_g"].sum() <= 0:
            raise NotEnoughData("q2e: no engagement in the training interactions")
        prior = float(work["g"].sum() / work["n"].sum())
        a = float(p["prior_strength"])

        all_pairs = work.groupby(["query_norm", "item_id"], sort=False, observed=True).agg(
            impressions=("n", "sum"), engagements=("g", "sum"), raw=("raw_g", "sum")).reset_index()
        all_pairs = all_pairs.astype({"query_norm": object, "item_id": object})   # per pair, not per impression
        pairs = all_pairs.loc[all_pairs["raw"] > 0].copy()
        pairs["score"] = (pairs["engagements"] + a * prior) / (pairs["impressions"] + a)
        pairs["confidence"] = pairs["impressions"] / (pairs["impressions"] + a)
        pairs["source"] = "actual"
        pairs = pairs.sort_values(["query_norm", "score", "item_id"], ascending=[True, False, True])
        pairs = pairs.groupby("query_norm", sort=False).head(int(p["top_n"]))

        generator, predicted = None, None
        if p.get("generate") and catalog is not None and len(catalog):
            generator, predicted = self._predicted(pairs, all_pairs, catalog, prior, a, p)
        table = pairs[list(TABLE_COLUMNS)]
        if predicted is not None and len(predicted):
            table = pd.concat([table, predicted[list(TABLE_COLUMNS)]], ignore_index=True)

        pop = work.groupby("item_id", observed=True)["g"].sum().sort_values(ascending=False, kind="stable")
        popular = [str(i) for i in pop[pop > 0].head(int(p["n_popular"])).index]
        meta = {"prior": prior, "newest_event": ts.max().isoformat(), "n_train_impressions": len(frame),
                "n_catalog_items": 0 if catalog is None else int(catalog["item_id"].nunique()),
                "n_actual_entries": len(pairs),
                "n_predicted_entries": 0 if predicted is None else len(predicted),
                "params": {k: v for k, v in p.items() if k != "grade_weights"},
                "grade_weights": {str(k): float(v) for k, v in p["grade_weights"].items()}}
        return Q2EModel(table=table.reset_index(drop=True), popular=popular, meta=meta, generator=generator)

    @staticmethod
    def _predicted(actual: pd.DataFrame, all_pairs: pd.DataFrame, catalog: pd.DataFrame, prior: float, a: float,
                   p: dict[str, Any]) -> tuple[QueryGenerator, pd.DataFrame]:
        """Fit the generator on engaged pairs, generate for every catalog item, let evidence replace it."""
        fields = item_fields(catalog, int(p["max_model_df"]))
        engaged = all_pairs.loc[all_pairs["raw"] > 0, ["query_norm", "item_id", "engagements"]]
        gen = QueryGenerator.fit(engaged.rename(columns={"engagements": "weight"}), fields,
                                 smoothing=float(p["token_smoothing"]), max_templates=int(p["max_templates"]),
                                 min_template_share=float(p["min_template_share"]))
        rows = [(q, item, prob) for item, f in fields.items()
                for q, prob in gen.generate(f, int(p["queries_per_item"]))]
        pred = pd.DataFrame(rows, columns=["query_norm", "item_id", "confidence"])
        if pred.empty:
            return gen, pred.assign(score=[], impressions=[], engagements=[], source=[])
        pred["score"] = float(p["predicted_weight"]) * prior * pred["confidence"]
        # evidence replaces prediction: an engaged pair is an actual entry; a shown, never engaged pair keeps
        # its predicted entry shrunk by a / (n + a) (n = its decayed impressions)
        shown = all_pairs.set_index(["query_norm", "item_id"])[["impressions", "raw"]]
        key = pd.MultiIndex.from_frame(pred[["query_norm", "item_id"]])
        n = shown["impressions"].reindex(key).fillna(0.0).to_numpy()
        engaged_pair = shown["raw"].reindex(key).fillna(0.0).to_numpy() > 0
        pred["impressions"], pred["engagements"], pred["source"] = n, 0.0, "predicted"
        pred["score"] = pred["score"] * a / (n + a)
        actual_keys = set(zip(actual["query_norm"], actual["item_id"]))
        keep = ~engaged_pair & np.fromiter(((q, i) not in actual_keys for q, i in
                                            zip(pred["query_norm"], pred["item_id"])), bool, len(pred))
        pred = pred.loc[keep].sort_values(["query_norm", "score", "item_id"], ascending=[True, False, True])
        pred = pred.groupby("query_norm", sort=False).head(int(p["predicted_top_n"]))
        return gen, pred.reset_index(drop=True)

    def evaluate(self, model: Q2EModel, holdout: pd.DataFrame) -> dict[str, float]:
        """Recall@k of the items a holdout request clicked (or better), memory vs popularity baseline."""
        k = EVAL_K
        holdout, _ = _parts(holdout)
        engaged = holdout.loc[holdout["label"].fillna(0).astype(int) >= 1]
        engaged = engaged.astype({c: object for c in ("request_id", "query_norm", "item_id")
                                  if isinstance(engaged[c].dtype, pd.CategoricalDtype)})
        if engaged.empty:
            raise NotEnoughData("q2e: no engaged impression in the holdout")
        popular = set(model.popular[:k])
        actual = model.actual_only() if model.n_predicted else model
        rec_mem, rec_act, rec_pop, covered = [], [], [], []
        for (_, query), g in engaged.groupby(["request_id", "query_norm"], sort=False):
            relevant = set(g["item_id"].astype(str))
            hits = model.lookup(str(query), k)
            covered.append(bool(hits))
            rec_mem.append(len(relevant & {i for i, _ in hits}) / len(relevant))
            rec_act.append(len(relevant & {i for i, _ in actual.lookup(str(query), k)}) / len(relevant))
            rec_pop.append(len(relevant & popular) / len(relevant))
        rec_mem_a, rec_pop_a, cov = np.array(rec_mem), np.array(rec_pop), np.array(covered)
        return {
            f"recall@{k}": float(rec_mem_a.mean()),
            f"recall@{k}_actual_only": float(np.mean(rec_act)),
            f"recall@{k}_popularity": float(rec_pop_a.mean()),
            f"recall@{k}_covered": float(rec_mem_a[cov].mean()) if cov.any() else 0.0,
            f"recall@{k}_popularity_covered": float(rec_pop_a[cov].mean()) if cov.any() else 0.0,
            "coverage": float(cov.mean()),
            "n_eval_requests": float(len(cov)),
            "n_queries": float(model.n_queries),
            "n_entries": float(model.n_entries),
            "n_predicted_entries": float(model.n_predicted),
        }

    def pyfunc_predict(self, model: Q2EModel, frame: pd.DataFrame) -> pd.DataFrame:
        """MLflow pyfunc input: ``query_norm`` (and optional ``k``, default 10) -> one row per item, with its
        ``source`` and ``confidence``."""
        rows = []
        for _, r in frame.iterrows():
            k = int(r["k"]) if "k" in frame.columns and pd.notna(r["k"]) else EVAL_K
            for rank, e in enumerate(model.lookup_entries(str(r["query_norm"]), k), start=1):
                rows.append((r["query_norm"], e["item_id"], e["score"], rank, e["source"], e["confidence"]))
        return pd.DataFrame(rows, columns=["query_norm", "item_id", "score", "rank", "source", "confidence"])

    def save(self, model: Q2EModel, path: Path) -> None:
        """The versioned index is ``memory.parquet`` (actual and predicted entries); no pickle."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.table.to_parquet(path / "memory.parquet", index=False)
        (path / "meta.json").write_text(json.dumps(
            {"popular": model.popular, "meta": model.meta}, indent=2, sort_keys=True, default=str))
        if model.generator is not None:
            (path / "generator.json").write_text(json.dumps(model.generator.to_json(), sort_keys=True))

    def load(self, path: Path) -> Q2EModel:
        path = Path(path)
        info = json.loads((path / "meta.json").read_text())
        gen_path = path / "generator.json"
        generator = QueryGenerator.from_json(json.loads(gen_path.read_text())) if gen_path.exists() else None
        return Q2EModel(table=pd.read_parquet(path / "memory.parquet"), popular=info["popular"], meta=info["meta"],
                        generator=generator)


FAMILY = Q2EFamily()
