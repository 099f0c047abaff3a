"""Backfill: missing attributes filled with provenance, known catalog values never overwritten."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from ml.backfill import (
    COLUMNS,
    backfill_attributes,
    backfill_step,
    filled_attributes,
    read_item_attributes,
    write_item_attributes,
)
from ml.families.attributes import FAMILY, LEVELS

sys.path.insert(0, str(Path(__file__).parent / "families"))
from test_attributes import catalog


@pytest.fixture(scope="module")
def model():
    return FAMILY.train(catalog(n=600, seed=1), {"n_bootstrap": 2, "attributes": ["color", "brand"]})


@pytest.fixture(scope="module")
def items():
    return catalog(n=200, seed=2, unknown_share=0.3).drop(columns=["silent", "true_color"])


def test_rows_carry_provenance_and_keep_catalog_values(model, items):
    out = backfill_attributes(model, items, "7")
    assert list(out.columns) == list(COLUMNS)
    assert len(out) == len(items) * 2 and not out.duplicated(["item_id", "attribute"]).any()
    merged = out.merge(items[["item_id", "color", "brand"]], on="item_id")
    for a in ("color", "brand"):
        rows = merged[merged["attribute"] == a]
        known = rows[rows[a].notna()]
        assert (known["source"] == "catalog").all() and (known["value"] == known[a]).all()
        assert (known["confidence"] == 1.0).all() and known["model_version"].isna().all()
        unknown = rows[rows[a].isna()]
        assert set(unknown["source"]) <= {"extracted", "abstained"} and (unknown["model_version"] == "7").all()
        assert unknown["uncertainty"].isin(LEVELS).all() and unknown["probability"].between(0, 1).all()
        assert (known["probability"] == 1.0).all()
    ext = out[out["source"] == "extracted"]
    assert len(ext) > 0 and ext["value"].notna().all()
    assert out.loc[out["source"] == "abstained", "value"].isna().all()


def test_filled_values_are_right_on_this_synthetic_catalog(model):
    full = catalog(n=200, seed=2, unknown_share=0.3)
    out = backfill_attributes(model, full.drop(columns=["silent", "true_color"]), "7")
    ext = out[(out["source"] == "extracted") & (out["attribute"] == "color")].merge(full, on="item_id")
    assert len(ext) > 10 and (ext["value"] == ext["true_color"]).mean() >= 0.95


def test_atomic_write_and_read_back(model, items, tmp_path):
    out = backfill_attributes(model, items, "7")
    path = write_item_attributes(out, tmp_path)
    assert path == tmp_path / "item_attributes.parquet" and list(tmp_path.iterdir()) == [path]
    back = read_item_attributes(tmp_path)
    pd.testing.assert_frame_equal(back, out)
    filled = filled_attributes(back)
    assert sum(len(v) for v in filled.values()) == int((out["source"] == "extracted").sum())
    assert read_item_attributes(tmp_path / "nothing") is None and filled_attributes(None) == {}


def test_step_without_a_champion_is_a_no_op(tmp_path, monkeypatch):
    import ml.registry

    monkeypatch.setattr(ml.registry, "load_champion", lambda *a, **k: None)
    res = backfill_step(tmp_path, "sqlite:///nowhere.db")
    assert res["written"] is False and "no attributes champion" in res["message"]
    assert not (tmp_path / "item_attributes.parquet").exists()


def test_step_with_a_champion_writes_the_file(model, items, tmp_path, monkeypatch):
    import ml.registry

    items.to_parquet(tmp_path / "dim_items.parquet")
    monkeypatch.setattr(ml.registry, "load_champion", lambda *a, **k: ("3", model))
    res = backfill_step(tmp_path, "sqlite:///nowhere.db")
    assert res["written"] and res["model_version"] == "3" and res["n_rows"] == len(items) * 2
    assert set(read_item_attributes(tmp_path)["model_version"].dropna()) == {"3"}
