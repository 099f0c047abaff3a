"""Attributes family: several attributes from text, an uncertainty per prediction, per-level thresholds."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ml.families.attributes import FAMILY, LEVELS, NEVER, item_text, tune_level_thresholds, tune_threshold
from ml.families.base import NotEnoughData, TrainContext

COLORS = ["red", "blue", "black", "white", "green", "beige"]
COLOR_P = [0.3, 0.2, 0.2, 0.1, 0.1, 0.1]        # red is the majority class (30%)
BRANDS = ["Acme", "Nordwind", "Velora", "Kestrel", "Orbit"]
MATERIALS = ["leather", "cotton", "wool", "canvas", "suede"]
KINDS = ["shoe", "jacket", "bag", "scarf", "boot", "hat"]
CTX = TrainContext(interval_start=datetime(2024, 3, 1, tzinfo=UTC),
                   interval_end=datetime(2024, 3, 2, tzinfo=UTC), marts_dir=".")
FAST = {"n_bootstrap": 3}


def catalog(n: int = 900, seed: int = 0, silent_share: float = 0.2, unknown_share: float = 0.1) -> pd.DataFrame:
    """"Brand Model red shoe" titles: the brand is always in the text, the color unless the title is silent,
    the material never (it is random: no text can tell). A share of items have unknown values."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        color = str(rng.choice(COLORS, p=COLOR_P))
        brand, material, kind = (str(rng.choice(x)) for x in (BRANDS, MATERIALS, KINDS))
        model = f"M{rng.integers(100, 999)}"
        silent = rng.random() < silent_share
        title = f"{brand} {model} {kind}" if silent else f"{brand} {model} {color} {kind}"
        desc = f"A {kind} by {brand}. Comfortable for every day."
        unknown = rng.random(3) < unknown_share
        rows.append({"item_id": f"it{i:05d}", "title": title, "description": desc, "category": kind,
                     "brand": None if unknown[0] else brand, "color": None if unknown[1] else color,
                     "material": None if unknown[2] else material, "price": float(rng.uniform(10, 200)),
                     "silent": silent, "true_color": color})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def trained():
    frame = catalog()
    train, holdout = FAMILY.split(frame, CTX)
    return frame, train, holdout, FAMILY.train(train, FAST)


def test_extracts_several_attributes(trained):
    _, _, _, model = trained
    assert model.attributes == ["color", "brand", "material"] and model.attribute == "color"
    res = model.predict_attributes([item_text("Orbit M123 blue scarf", "A scarf by Orbit. Comfortable for every day."),
                                    item_text("Kestrel M555 red boot", "A boot by Kestrel. Comfortable for every day.")])
    assert list(res["color"]["value"]) == ["blue", "red"] and res["color"]["accepted"].all()
    assert list(res["brand"]["value"]) == ["Orbit", "Kestrel"] and res["brand"]["accepted"].all()
    assert set(res["color"].columns) == {"value", "confidence", "uncertainty", "level", "accepted"}
    assert set(res["color"]["level"]) <= set(LEVELS)


def test_uncertainty_is_higher_on_ambiguous_titles(trained):
    _, _, holdout, model = trained
    ex = model.extractors["color"]
    silent = holdout.loc[holdout["silent"]]
    loud = holdout.loc[~holdout["silent"]]
    u_silent = ex.extract([item_text(t, d) for t, d in zip(silent["title"], silent["description"])])["uncertainty"]
    u_loud = ex.extract([item_text(t, d) for t, d in zip(loud["title"], loud["description"])])["uncertainty"]
    assert u_silent.mean() > 2 * u_loud.mean()


def test_per_level_thresholds_reach_the_target_precision_on_held_out_items(trained):
    _, _, holdout, model = trained
    metrics = FAMILY.evaluate(model, holdout)
    assert metrics["color_precision"] >= 0.95 and metrics["color_recall"] > 0.6     # ~80% of titles name it
    assert metrics["brand_precision"] >= 0.95 and metrics["brand_coverage"] > 0.9
    assert metrics["color_precision"] > metrics["color_majority_accuracy"] + 0.3
    assert model.extractors["color"].meta["target_met"]


def test_an_attribute_the_text_does_not_carry_abstains(trained):
    _, _, holdout, model = trained
    ex = model.extractors["material"]
    assert all(t == NEVER for t in ex.thresholds.values()) and not ex.meta["target_met"]
    metrics = FAMILY.evaluate(model, holdout)
    assert metrics["material_coverage"] == 0.0 and metrics["material_precision"] == -1.0
    # the gate averages the attributes that fill values; the abstaining one neither helps nor blocks
    assert metrics["n_attributes_filling"] == 2.0 and metrics["precision"] >= FAMILY.gate_spec.floor
    assert all(metrics[name] >= bound for name, bound in FAMILY.extra_floors.items())


def test_predict_keeps_the_single_attribute_api_and_abstains_on_silent_titles(trained):
    _, _, holdout, model = trained
    silent = holdout.loc[holdout["silent"]]
    values, conf = model.predict([item_text(t, d) for t, d in zip(silent["title"], silent["description"])])
    assert len(silent) > 20 and np.mean([v is None for v in values]) > 0.8 and len(conf) == len(silent)
    loud = holdout.loc[~holdout["silent"]]
    values, _ = model.predict([item_text(t, d) for t, d in zip(loud["title"], loud["description"])])
    assert np.mean([v == c for v, c in zip(values, loud["true_color"])]) > 0.9
    assert model.vocabulary == sorted(COLORS)
    assert model.predict([]) == ([], pytest.approx(np.zeros(0)))


@pytest.mark.parametrize(("query", "expected"), [
    ("red acme shoe", {"color": "red", "brand": "Acme"}),
    ("nordwnd boots", {"brand": "Nordwind"}),            # a typo: the extractor, near-spelling of the value
    ("comfortable shoe", {}),                            # the extractor alone never tags a query
])
def test_tag_query(trained, query, expected):
    assert trained[3].tag_query(query) == expected


def test_tune_level_thresholds_beats_one_threshold_when_levels_differ():
    # level 0: right down to conf 0.5; level 2: wrong below 0.8. One global threshold must stop at 0.8.
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5] * 4 + [0.9, 0.85, 0.8, 0.7, 0.6] * 4)
    level = np.array([0] * 20 + [2] * 20)
    correct = np.array([True] * 20 + [True, True, True, False, False] * 4)
    thr, precision, met = tune_level_thresholds(conf, level, correct, 0.95, min_support=1)
    assert met and precision == 1.0
    assert thr == {"low": 0.5, "medium": NEVER, "high": 0.8}
    t_global, _ = tune_threshold(conf, correct, 0.95, min_support=1)
    recall_level = (correct & (conf >= np.array([0.5, NEVER, 0.8])[level])).mean()
    assert t_global == 0.8 and recall_level > (correct & (conf >= t_global)).mean()


@pytest.mark.parametrize(("conf", "correct", "target", "expected"), [
    ([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1], 0.9, 0.8),     # lowest threshold with precision >= 0.9
    ([0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1], 0.9, 0.6),     # everything is right: keep everything
    ([0.9, 0.8, 0.7, 0.6], [0, 1, 1, 1], 0.9, 0.6),     # never reaches 0.9: the most precise (0.75)
])
def test_tune_threshold(conf, correct, target, expected):
    threshold, _ = tune_threshold(np.array(conf), np.array(correct, dtype=bool), target, min_support=1)
    assert threshold == expected


def test_split_is_a_stable_hash_by_item(trained):
    frame, train, holdout, _ = trained
    assert not set(train["item_id"]) & set(holdout["item_id"])
    assert 0.15 < len(holdout) / len(frame) < 0.25
    _again_train, again_holdout = FAMILY.split(frame.sample(frac=1.0, random_state=1), CTX)
    assert set(again_holdout["item_id"]) == set(holdout["item_id"])


def test_save_load_roundtrip(trained, tmp_path):
    _, _, holdout, model = trained
    FAMILY.save(model, tmp_path / "attr")
    loaded = FAMILY.load(tmp_path / "attr")
    assert loaded.attributes == model.attributes and loaded.vocabulary == model.vocabulary
    assert loaded.extractors["color"].thresholds == model.extractors["color"].thresholds
    assert FAMILY.evaluate(loaded, holdout) == FAMILY.evaluate(model, holdout)


def test_too_few_labelled_items_is_not_enough_data():
    with pytest.raises(NotEnoughData):
        FAMILY.train(catalog(n=20), FAST)


def test_pyfunc_predict_has_every_attribute(trained):
    _, _, _, model = trained
    out = FAMILY.pyfunc_predict(model, pd.DataFrame({"title": ["Orbit M123 blue scarf"],
                                                     "description": ["A scarf by Orbit. Comfortable for every day."]}))
    assert out["value"].tolist() == ["blue"] and out["brand"].tolist() == ["Orbit"]
    assert out["material"].tolist() == [None] and out["color_level"].iloc[0] in LEVELS
