"""Backfill missing catalog attributes with the attributes champion, keeping provenance.

``item_attributes.parquet`` in the marts folder holds one row per item and attribute:
item_id, attribute, value, confidence (the ensemble's), uncertainty (the evidence level, see
``ml.families.attributes.LEVELS``; "none" for catalog values), uncertainty_std (ensemble spread), source
("catalog": the catalog's own value, never overwritten; "extracted": filled by the model; "abstained": unknown
and the model would not commit), model_version (None for catalog rows), probability (calibrated P(correct)
for the level; 1 for catalog rows).

One acceptance rule: a value is filled iff the model's ``extract`` accepts it (its per-level thresholds).
The ranker's ``attr_match`` feature (training, through this file) and serving's structured retrieval
(``serving.scorer``, through ``backfill_attributes`` on its catalog) both read the filled values through
``filled_attributes``: no path adds a floor of its own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.families.attributes import frame_texts, known_values

FILE = "item_attributes.parquet"
COLUMNS: tuple[str, ...] = ("item_id", "attribute", "value", "confidence", "uncertainty", "uncertainty_std",
                            "source", "model_version", "probability")


def _latest(catalog: pd.DataFrame) -> pd.DataFrame:
    """One row per item (the newest ``created_at`` when the frame has several)."""
    if "created_at" in catalog.columns and catalog["item_id"].duplicated().any():
        catalog = catalog.sort_values("created_at", kind="stable").drop_duplicates("item_id", keep="last")
    return catalog.reset_index(drop=True)


def backfill_attributes(model: Any, catalog: pd.DataFrame, model_version: str) -> pd.DataFrame:
    """One row per item and attribute the model knows (and the catalog has as a column), with provenance."""
    cat = _latest(catalog)
    frames = []
    for a, ex in model.extractors.items():
        if a not in cat.columns:
            continue
        known = known_values(cat, a)
        have = known.notna().to_numpy()
        frames.append(pd.DataFrame({
            "item_id": cat.loc[have, "item_id"].astype(str).to_numpy(), "attribute": a,
            "value": known[have].astype(str).to_numpy(dtype=object), "confidence": 1.0, "uncertainty": "none",
            "uncertainty_std": 0.0, "source": "catalog", "model_version": None, "probability": 1.0,
        }))
        missing = cat.loc[~have]
        if len(missing):
            res = ex.extract(frame_texts(missing))
            ok = res["accepted"].to_numpy(dtype=bool)
            frames.append(pd.DataFrame({
                "item_id": missing["item_id"].astype(str).to_numpy(), "attribute": a,
                "value": np.where(ok, res["value"].to_numpy(dtype=object), None),
                "confidence": res["confidence"].to_numpy(dtype=float), "uncertainty": res["level"].to_numpy(),
                "uncertainty_std": res["uncertainty"].to_numpy(dtype=float),
                "source": np.where(ok, "extracted", "abstained"), "model_version": str(model_version),
                "probability": res["probability"].to_numpy(dtype=float) if "probability" in res.columns
                else np.full(len(res), np.nan),
            }))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    out = pd.concat(frames, ignore_index=True)[list(COLUMNS)]
    out["model_version"] = out["model_version"].astype(object)
    return out.sort_values(["item_id", "attribute"], kind="stable").reset_index(drop=True)


def write_item_attributes(frame: pd.DataFrame, marts_dir: Path | str) -> Path:
    """Write ``{marts_dir}/item_attributes.parquet`` atomically (a temp file in the same folder, then rename):
    a reader never sees half a file."""
    marts_dir = Path(marts_dir)
    marts_dir.mkdir(parents=True, exist_ok=True)
    target = marts_dir / FILE
    fd, tmp = tempfile.mkstemp(prefix=".item_attributes.", suffix=".tmp", dir=marts_dir)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def read_item_attributes(marts_dir: Path | str) -> pd.DataFrame | None:
    path = Path(marts_dir) / FILE
    return pd.read_parquet(path) if path.exists() else None


def filled_attributes(frame: pd.DataFrame | None) -> dict[str, dict[str, str]]:
    """The extracted values as ``{item_id: {attribute: value}}`` (what ``build_index`` fills in)."""
    if frame is None or frame.empty:
        return {}
    ext = frame[(frame["source"] == "extracted") & frame["value"].notna()]
    out: dict[str, dict[str, str]] = {}
    for iid, a, v in zip(ext["item_id"].astype(str), ext["attribute"], ext["value"]):
        out.setdefault(iid, {})[str(a)] = str(v)
    return out


def backfill_step(marts_dir: Path | str, tracking_uri: str, model_prefix: str = "ltrr-") -> dict[str, Any]:
    """DAG task body: load the attributes @champion, backfill ``dim_items``, write ``item_attributes.parquet``.

    A no-op (with a message) when there is no champion or no ``dim_items`` mart. Returns a JSON-safe summary.
    """
    from ml.registry import load_champion

    champion = load_champion(tracking_uri, "attributes", model_prefix=model_prefix)
    if champion is None:
        return {"written": False, "message": "no attributes champion: nothing backfilled"}
    version, model = champion
    if not hasattr(model, "extractors"):
        return {"written": False, "message": f"attributes champion v{version} predates multi-attribute "
                                             "extraction: nothing backfilled", "model_version": str(version)}
    items = Path(marts_dir) / "dim_items.parquet"
    if not items.exists():
        return {"written": False, "message": f"no {items}: nothing backfilled", "model_version": str(version)}
    frame = backfill_attributes(model, pd.read_parquet(items), str(version))
    path = write_item_attributes(frame, marts_dir)
    counts = frame["source"].value_counts().to_dict()
    return {"written": True, "path": str(path), "model_version": str(version), "n_rows": len(frame),
            **{f"n_{k}": int(v) for k, v in counts.items()},
            "message": f"backfilled {counts.get('extracted', 0)} values with attributes v{version}"}
