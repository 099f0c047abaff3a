from __future__ import annotations

import json
from dataclasses import dataclass, field

from ml.pipeline import _jsonable


@dataclass
class _D:
    metrics: dict = field(default_factory=lambda: {"ok": 0.5, "nan": float("nan"), "inf": float("inf")})


def test_decisions_become_strict_json_for_xcom():
    out = _jsonable(_D())
    assert out == {"metrics": {"ok": 0.5, "nan": None, "inf": None}}
    json.dumps(out, allow_nan=False)  # raises if anything non-finite survived
