"""Ground truth: what a query means (its type and spec) and how relevant each item is to it.

The oracle reads only the query string (normalized with ``ml.text.normalize_query``) and the true items, so
any component may ask it about any query. Parsing order: head (the whole normalized query is a head query),
exact (a token names an item's model, or is one typo away from a model of a brand the query names),
attribute (only category/color/material tokens, one category), thematic (any theme word: a catalog word of
``THEMES`` or a shopper word of ``THEME_SHOPPER_WORDS``), else unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from ml.sim.catalog import CATEGORY_NAMES, THEME_NAMES, day_start_us
from ml.sim.vocab import BRANDS, COLORS, MATERIALS, THEME_SHOPPER_WORDS, THEMES
from ml.text import normalize_query

TYPE_CODES: dict[str, int] = {"unknown": 0, "exact": 1, "attribute": 2, "thematic": 3, "head": 4}
TYPE_NAMES: tuple[str, ...] = tuple(TYPE_CODES)

_BRAND_TOK = {normalize_query(b): i for i, b in enumerate(BRANDS)}
_CATEGORY_TOK = {normalize_query(c): i for i, c in enumerate(CATEGORY_NAMES)}
_COLOR_TOK = {c: i for i, c in enumerate(COLORS)}
_MATERIAL_TOK = {m: i for i, m in enumerate(MATERIALS)}
_THEME_TOK = {w: t for t, name in enumerate(THEME_NAMES) for w in (*THEMES[name], *THEME_SHOPPER_WORDS[name])}


@dataclass(frozen=True)
class QuerySpec:
    """A parsed query. Codes index the vocabularies; -1 means "not stated"."""

    type: str
    target: int = -1     # exact: the item index the query names
    brand: int = -1      # exact: the target's brand
    category: int = -1   # exact: the target's category; attribute: the stated category
    color: int = -1
    material: int = -1
    theme: int = -1
    head: int = -1       # head: index into the simulator's head queries


def within_one_edit(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance <= 1 (one substitution, insertion, deletion or adjacent swap)."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        i, j = diff if len(diff) == 2 else (0, 0)
        return len(diff) == 2 and j == i + 1 and a[i] == b[j] and a[j] == b[i]
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:]


class Oracle:
    """Graded relevance (0..3) of items to queries, and NDCG against it. Cached per normalized query."""

    def __init__(self, items: Callable[[], pd.DataFrame], head_queries: Sequence[str],
                 head_grades: np.ndarray, high_quality: float) -> None:
        # ``items`` returns the simulator's current true item table (it grows as days are simulated)
        self._items_fn = items
        self._head = {normalize_query(q): i for i, q in enumerate(head_queries)}
        self._head_grades = head_grades          # (n_head, n_initial_items) int8
        self._high = high_quality
        self._version = -1
        self._spec_cache: dict[str, QuerySpec] = {}
        self._rel_cache: dict[tuple[str, int], dict[str, int]] = {}

    # -- item table -------------------------------------------------------------------------------------
    def _sync(self) -> pd.DataFrame:
        items = self._items_fn()
        if len(items) != self._version:
            self._version = len(items)
            self._spec_cache.clear()
            self._rel_cache.clear()
            self._ids = items["item_id"].to_numpy()
            self._names = {n: i for i, n in enumerate(items["model_name"].to_numpy())}
            brand = items["brand_code"].to_numpy()
            self._brand_items = {b: np.flatnonzero(brand == b) for b in range(len(BRANDS))}
            self._all_names = items["model_name"].to_numpy()
            self._arrays = {
                "brand": brand, "category": items["category_code"].to_numpy(),
                "color": items["color_code"].to_numpy(), "material": items["material_code"].to_numpy(),
                "theme": items["theme_code"].to_numpy(), "quality": items["quality"].to_numpy(),
                "created_us": items["created_us"].to_numpy(),
            }
        return items

    # -- parsing ----------------------------------------------------------------------------------------
    def spec(self, query: str) -> QuerySpec:
        """Parse a query into its ground-truth meaning."""
        self._sync()
        norm = normalize_query(query)
        cached = self._spec_cache.get(norm)
        if cached is None:
            cached = self._spec_cache[norm] = self._parse(norm)
        return cached

    def _parse(self, norm: str) -> QuerySpec:
        if norm in self._head:
            return QuerySpec("head", head=self._head[norm])
        tokens = norm.split()
        if not tokens:
            return QuerySpec("unknown")
        target = self._resolve_item(tokens)
        if target >= 0:
            return QuerySpec("exact", target=target, brand=int(self._arrays["brand"][target]),
                             category=int(self._arrays["category"][target]))
        cats = [_CATEGORY_TOK[t] for t in tokens if t in _CATEGORY_TOK]
        colors = [_COLOR_TOK[t] for t in tokens if t in _COLOR_TOK]
        mats = [_MATERIAL_TOK[t] for t in tokens if t in _MATERIAL_TOK]
        only_attributes = len(cats) + len(colors) + len(mats) == len(tokens)
        if only_attributes and len(cats) == 1 and len(colors) <= 1 and len(mats) <= 1:
            return QuerySpec("attribute", category=cats[0], color=colors[0] if colors else -1,
                             material=mats[0] if mats else -1)
        themes = [_THEME_TOK[t] for t in tokens if t in _THEME_TOK]
        if themes:
            counts = np.bincount(themes, minlength=len(THEME_NAMES))
            return QuerySpec("thematic", theme=int(np.argmax(counts)))
        return QuerySpec("unknown")

    def _resolve_item(self, tokens: list[str]) -> int:
        """Item index an exact query names, or -1. A typo resolves to the brand's earliest item within one
        edit, so items created later never change what an earlier query meant."""
        for t in tokens:
            if t in self._names:
                return self._names[t]
        brands = [_BRAND_TOK[t] for t in tokens if t in _BRAND_TOK]
        if not brands:
            return -1
        for t in tokens:
            if t in _BRAND_TOK or len(t) < 4:
                continue
            for b in brands:
                for idx in self._brand_items[b]:
                    if within_one_edit(t, self._all_names[idx]):
                        return int(idx)
        return -1

    # -- relevance --------------------------------------------------------------------------------------
    def grades(self, specs: Sequence[QuerySpec], which: np.ndarray, item_index: np.ndarray) -> np.ndarray:
        """Vectorized grades: row r is item ``item_index[r]`` (-1 = unknown item) for ``specs[which[r]]``."""
        self._sync()
        fields = ("target", "brand", "category", "color", "material", "theme", "head")
        s = {f: np.array([getattr(sp, f) for sp in specs], dtype="int64")[which] for f in fields}
        qtype = np.array([TYPE_CODES[sp.type] for sp in specs], dtype="int64")[which]
        known = item_index >= 0
        ii = np.where(known, item_index, 0)
        a = {k: v[ii] for k, v in self._arrays.items()}
        high = a["quality"] >= self._high
        g = np.zeros(len(item_index), dtype="int64")
        exact = qtype == TYPE_CODES["exact"]
        same_line = (a["brand"] == s["brand"]) & (a["category"] == s["category"])
        g = np.where(exact, np.where(ii == s["target"], 3, np.where(same_line, 1, 0)), g)
        attr = qtype == TYPE_CODES["attribute"]
        match = ((a["category"] == s["category"]) & ((s["color"] < 0) | (a["color"] == s["color"]))
                 & ((s["material"] < 0) | (a["material"] == s["material"])))
        g = np.where(attr & match, 2 + high, g)
        them = (qtype == TYPE_CODES["thematic"]) & (a["theme"] == s["theme"])
        g = np.where(them, 1 + (a["quality"] >= 0.4) + high, g)
        head = (qtype == TYPE_CODES["head"]) & (ii < self._head_grades.shape[1])
        if head.any():
            n_initial = self._head_grades.shape[1]
            hg = self._head_grades[np.where(head, s["head"], 0), np.minimum(ii, n_initial - 1)]
            g = np.where(head, hg, g)
        return np.where(known, g, 0).astype("int8")

    def relevance(self, query: str, as_of: date | None = None) -> dict[str, int]:
        """item_id -> grade (1..3) for every relevant item created on or before ``as_of`` (default: every
        item simulated so far), best first."""
        return dict(self._relevance(query, as_of))

    def _relevance(self, query: str, as_of: date | None) -> dict[str, int]:
        sp = self.spec(query)
        cutoff = day_start_us(as_of) + 86_400_000_000 if as_of is not None else np.iinfo("int64").max
        key = (normalize_query(query), cutoff)
        cached = self._rel_cache.get(key)
        if cached is None:
            if sp.type == "unknown":
                cached = {}
            else:
                idx = np.flatnonzero(self._arrays["created_us"] < cutoff)
                g = self.grades([sp], np.zeros(len(idx), dtype="int64"), idx)
                nz = np.flatnonzero(g)
                order = nz[np.lexsort((idx[nz], -g[nz]))]   # best first, then oldest
                cached = dict(zip(self._ids[idx[order]].tolist(), g[order].tolist()))
            self._rel_cache[key] = cached
        return cached

    def query_type(self, query: str) -> str:
        """"exact" | "attribute" | "thematic" | "head" (or "unknown" for a query outside the world)."""
        return self.spec(query).type

    def ndcg(self, query: str, ranked_item_ids: Sequence[str], k: int = 10,
             as_of: date | None = None) -> float:
        """NDCG@k with gain 2^grade - 1; the ideal is the oracle's own best k items; 0 if none is relevant.
        A repeated item counts once (at its first position)."""
        rel = self._relevance(query, as_of)
        if not rel or k <= 0:
            return 0.0
        disc = 1.0 / np.log2(np.arange(2, k + 2))
        seen: set[str] = set()
        gains = []
        for item in ranked_item_ids:
            if len(gains) == k:
                break
            gains.append(0.0 if item in seen else float(2 ** rel.get(item, 0) - 1))
            seen.add(item)
        dcg = float(np.dot(gains, disc[: len(gains)]))
        ideal = sorted(rel.values(), reverse=True)[:k]
        idcg = float(np.dot([2.0 ** g - 1 for g in ideal], disc[: len(ideal)]))
        return dcg / idcg
