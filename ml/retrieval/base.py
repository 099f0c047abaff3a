"""The retrieval interface and the catalog index every strategy shares (built once, at load time)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ml.text import normalize_query

ATTRIBUTES: tuple[str, ...] = ("category", "brand", "color", "material")
CATALOG_COLUMNS: tuple[str, ...] = (
    "item_id", "title", "description", "category", "brand", "color", "material", "price", "created_at",
)


class Candidate(NamedTuple):
    """One retrieved item: which strategy found it and with what (strategy-specific) score.

    A named tuple (immutable, compared by value): a request builds hundreds, and a tuple costs a third of a frozen
    dataclass to construct.
    """

    item_id: str
    score: float
    strategy: str


@runtime_checkable
class Strategy(Protocol):
    name: str

    def retrieve(self, query: str, context: dict, k: int) -> Sequence[Candidate]: ...


@dataclass(frozen=True)
class CatalogIndex:
    """The catalog as aligned arrays (position i is one item), plus attribute values normalized like queries.

    ``attrs[a][i]`` is the normalized value of attribute ``a`` for item i ("" when unknown), filled from
    attribute-model predictions where the catalog has none.
    """

    item_ids: np.ndarray            # object array of str
    position: dict[str, int]
    texts: list[str]                # title + description
    titles: list[str]
    categories_raw: np.ndarray      # object array (display values)
    attrs: dict[str, np.ndarray]    # attribute -> normalized value per item
    popularity: np.ndarray          # float64, >= 0
    age_days: np.ndarray            # float64, days before the newest item's created_at
    price: np.ndarray               # float64

    @property
    def n(self) -> int:
        return len(self.item_ids)

    def positions(self, item_ids) -> np.ndarray:
        """Positions of ``item_ids`` (-1 for an id not in the catalog)."""
        return np.fromiter(map(self.position.get, item_ids, repeat(-1)), dtype=np.int64, count=len(item_ids))


def _norm_value(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return normalize_query(str(v))


def build_index(catalog: pd.DataFrame, popularity: pd.Series | None = None,
                attribute_predictions: dict[str, dict[str, str]] | None = None) -> CatalogIndex:
    """Prepare the catalog (dim_items columns) for retrieval: one row per item, newest ``created_at`` wins."""
    cat = catalog.copy()
    for col in CATALOG_COLUMNS:
        if col not in cat.columns:
            cat[col] = None
    if len(cat):
        cat["created_at"] = pd.to_datetime(cat["created_at"], utc=True)
        cat = cat.sort_values("created_at", kind="stable").drop_duplicates("item_id", keep="last")
    cat = cat.reset_index(drop=True)
    item_ids = cat["item_id"].astype(str).to_numpy(dtype=object)
    titles = cat["title"].fillna("").astype(str).tolist()
    descs = cat["description"].fillna("").astype(str).tolist()
    preds = attribute_predictions or {}
    attrs: dict[str, np.ndarray] = {}
    for a in ATTRIBUTES:
        vals = [_norm_value(v) for v in cat[a].tolist()]
        if preds:
            vals = [v or _norm_value(preds.get(iid, {}).get(a)) for v, iid in zip(vals, item_ids)]
        attrs[a] = np.asarray(vals, dtype=object)
    if popularity is not None and len(cat):
        pop = popularity.copy()
        pop.index = pop.index.astype(str)
        pop = pop[~pop.index.duplicated(keep="last")]
        pop_arr = pop.reindex(item_ids).fillna(0.0).to_numpy(dtype=np.float64)
    else:
        pop_arr = np.zeros(len(cat), dtype=np.float64)
    pop_arr = np.clip(pop_arr, 0.0, None)
    if len(cat):
        created = cat["created_at"]
        age = (created.max() - created).dt.total_seconds().fillna(0.0).to_numpy() / 86400.0
    else:
        age = np.zeros(0)
    return CatalogIndex(
        item_ids=item_ids,
        position={iid: i for i, iid in enumerate(item_ids)},
        texts=[f"{t} {d}".strip() for t, d in zip(titles, descs)],
        titles=titles,
        categories_raw=cat["category"].to_numpy(dtype=object),
        attrs=attrs,
        popularity=pop_arr,
        age_days=np.asarray(age, dtype=np.float64),
        price=pd.to_numeric(cat["price"], errors="coerce").fillna(0.0).to_numpy(dtype=np.float64),
    )


class QueryMemo:
    """The results of a pure per-query computation for the last few queries.

    One request asks a strategy about the same query several times (``retrieve`` for the candidates, then
    ``score_items`` for the ranker's features, the parser for structured, popularity and ``attr_match``): the
    memo makes the second ask a dict lookup. Bounded to a few entries (a value can be a catalog-sized array),
    enough for the requests in flight. Values are shared: callers must not modify them (arrays are returned
    read-only to make that an error).
    """

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._values: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[Any], Any]) -> Any:
        with self._lock:
            if key in self._values:
                return self._values[key]
        value = compute(key)
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
        with self._lock:
            if len(self._values) >= self._size:
                self._values.pop(next(iter(self._values)))
            self._values[key] = value
        return value


class RankedCandidates(Sequence):
    """A strategy's ranked candidates as two aligned arrays, built into ``Candidate`` tuples only when read.

    The scorer retrieves every strategy at the full budget (the bandit's probes read only the count and the top
    score) but a plan takes a prefix of a few of the lists: building every tuple up front was a third of the
    retrieval time at a budget of 500. Indexing and iterating give exactly what the list did (``Candidate`` with
    Python ``str`` and ``float``), a slice and a concatenation are plain lists, and it compares equal to a list of
    the same candidates.
    """

    __slots__ = ("_ids", "_scores", "strategy")

    def __init__(self, item_ids: np.ndarray, scores: np.ndarray, strategy: str) -> None:
        self._ids, self._scores, self.strategy = item_ids, scores, strategy

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i):  # int or slice, as a list
        if isinstance(i, slice):
            return [Candidate(a, s, self.strategy)
                    for a, s in zip(self._ids[i].tolist(), self._scores[i].tolist())]
        return Candidate(self._ids[i], float(self._scores[i]), self.strategy)

    def __iter__(self) -> Iterator[Candidate]:
        for start in range(0, len(self._ids), 64):   # in blocks: a caller that stops early builds few tuples
            yield from self[start:start + 64]

    def head(self, k: int) -> RankedCandidates:
        """The first ``k`` (views of the arrays, still lazy)."""
        k = max(int(k), 0)
        return RankedCandidates(self._ids[:k], self._scores[:k], self.strategy)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (RankedCandidates, list, tuple)):
            return self[:] == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-sequence semantics, as the list it replaces

    def __add__(self, other: object) -> list[Candidate]:
        """Concatenation gives a plain list, as it did when strategies returned lists (a top-up appends)."""
        if isinstance(other, (RankedCandidates, list, tuple)):
            return self[:] + list(other)
        return NotImplemented

    def __radd__(self, other: object) -> list[Candidate]:
        if isinstance(other, (list, tuple)):
            return list(other) + self[:]
        return NotImplemented

    def __repr__(self) -> str:
        return f"RankedCandidates({self[:]!r})"


def candidates(item_ids: np.ndarray, scores: np.ndarray, positions: np.ndarray, strategy: str) -> RankedCandidates:
    """``Candidate(item_ids[i], float(scores[i]), strategy)`` for each of ``positions``, in order: one gather per
    column now, the tuples when they are read (``RankedCandidates``)."""
    return RankedCandidates(item_ids[positions], scores[positions], strategy)


def top_k(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Positions of the k best scores (best first, ties by position), optionally among ``mask`` only."""
    idx = np.flatnonzero(mask) if mask is not None else np.arange(len(scores))
    if k <= 0 or len(idx) == 0:
        return np.zeros(0, dtype=np.int64)
    s = scores[idx]
    if len(idx) > k:
        part = np.argpartition(-s, k - 1)[:k]
        idx, s = idx[part], s[part]
    order = np.lexsort((idx, -s))
    return idx[order]
