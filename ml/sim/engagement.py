"""Counter-based randomness for engagements: uniforms keyed by (seed, request_id, item_id, stream).

Hashing the impression's key (instead of drawing from a sequential generator) makes every engagement
depend only on the seed and that impression: the same impression gets the same clicks whatever else is in
the batch, in whatever row order and batch split.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

# streams
CLICK, ATC, PURCHASE, CLICK_DELAY, ATC_DELAY, FAST, PURCHASE_DELAY = range(7)


def hash_keys(keys: np.ndarray, seed: int) -> np.ndarray:
    """Stable 64-bit hashes of strings under a seed-derived key (SipHash via pandas)."""
    hash_key = hashlib.blake2b(f"ltrr-sim:{seed}".encode(), digest_size=8).hexdigest()
    return pd.util.hash_array(np.asarray(keys, dtype=object), hash_key=hash_key, categorize=False)


def uniforms(h: np.ndarray, stream: int) -> np.ndarray:
    """Uniform [0, 1) per hash for one stream (splitmix64 finalizer over hash + stream offset)."""
    with np.errstate(over="ignore"):
        z = h + _GOLDEN * np.uint64(stream + 1)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype("float64") * (1.0 / 9007199254740992.0)
