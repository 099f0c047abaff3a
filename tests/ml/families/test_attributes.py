"""Attributes family: the extractor reads the color in the title, and abstains when the title says nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ml.families.attributes import FAMILY, item_text, tune_threshold
from ml.families.base import NotEnoughData, TrainContext

COLORS = ["red", "blue", "black", "white", "green", "beige"]
COLOR_P = [0.3, 0.2, 0.2, 0.1, 0.1, 0.1]        # red is the majority class (30%)
BRANDS = ["Acme", "Nordwind", "Velora", "Kestrel", "Orbit"]
MATERIALS = ["leather", "cotton", "wool", "canvas", "suede"]
KINDS = ["shoe", "jacket", "bag", "scarf", "boot", "hat"]
CTX = TrainContext(interval_start=datetime(2024, 3, 1, tzinfo=UTC),
                   interval_end=datetime(2024, 3, 2, tzinfo=UTC), marts_dir=".")


def catalog(n: int = 1500, seed: int = 0, silent_share: float = 0.15, unknown_share: float = 0.1) -> pd.DataFrame:
    """"Brand Model red leather shoe" titles; a share of titles leave the color out (it stays known in the
    catalog: the text cannot tell); a share of items have no known color at all."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        color = str(rng.choice(COLORS, p=COLOR_P))
        brand, material, kind = (str(rng.choice(x)) for x in (BRANDS, MATERIALS, KINDS))
        model = f"M{rng.integers(100, 999)}"
        silent = rng.random() < silent_share
        title = f"{brand} {model} {material} {kind}" if silent else f"{brand} {model} {color} {material} {kind}"
        desc = f"A {material} {kind} by {brand}. Comfortable for every day."
        known = rng.random() >= unknown_share
        rows.append({"item_id": f"it{i:05d}", "title": title, "description": desc, "category": kind,
                     "brand": brand, "color": color if known else None, "material": material,
                     "price": float(rng.uniform(10, 200)), "silent": silent})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def trained():
    frame = catalog()
    train, holdout = FAMILY.split(frame, CTX)
    return frame, train, holdout, FAMILY.train(train, {})


def test_recovers_held_out_colors_with_high_precision(trained):
    _, _, holdout, model = trained
    assert model.attribute == "color" and set(model.vocabulary) == set(COLORS)
    metrics = FAMILY.evaluate(model, holdout)
    assert metrics["precision"] > 0.9
    assert metrics["precision"] > metrics["majority_accuracy"] + 0.3
    assert metrics["beats_majority"] == 1.0
    assert metrics["coverage"] > 0.7                # most titles name the color
    assert metrics["precision"] >= FAMILY.gate_spec.floor
    assert 0.0 < model.min_confidence < 1.0 and model.meta["target_met"]


def test_abstains_when_the_title_says_nothing_about_color(trained):
    _, _, holdout, model = trained
    silent = holdout.loc[holdout["silent"]]
    assert len(silent) > 20
    values, _conf = model.predict([item_text(t, d) for t, d in zip(silent["title"], silent["description"])])
    assert np.mean([v is None for v in values]) > 0.8
    loud = holdout.loc[~holdout["silent"] & holdout["color"].notna()]
    values, _ = model.predict([item_text(t, d) for t, d in zip(loud["title"], loud["description"])])
    assert np.mean([v == c for v, c in zip(values, loud["color"])]) > 0.9


def test_predict_returns_a_value_and_a_confidence(trained):
    _, _, _, model = trained
    values, conf = model.predict(["Orbit M123 blue wool scarf", "Acme M555 canvas bag"])
    assert values[0] == "blue" and conf[0] >= model.min_confidence
    assert values[1] is None and conf[1] < model.min_confidence
    assert model.predict([]) == ([], pytest.approx(np.zeros(0)))


def test_the_attribute_is_a_param(trained):
    _frame, train, holdout, _ = trained
    model = FAMILY.train(train, {"attribute": "material"})
    metrics = FAMILY.evaluate(model, holdout)
    assert model.attribute == "material" and set(model.vocabulary) == set(MATERIALS)
    assert metrics["precision"] > 0.9 and metrics["coverage"] > 0.9


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
    assert loaded.attribute == model.attribute and loaded.vocabulary == model.vocabulary
    assert loaded.min_confidence == model.min_confidence
    assert FAMILY.evaluate(loaded, holdout) == FAMILY.evaluate(model, holdout)


@pytest.mark.parametrize(("conf", "correct", "target", "expected"), [
    ([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1], 0.9, 0.8),     # lowest threshold with precision >= 0.9
    ([0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1], 0.9, 0.6),     # everything is right: keep everything
    ([0.9, 0.8, 0.7, 0.6], [0, 1, 1, 1], 0.9, 0.6),     # never reaches 0.9: the most precise (0.75)
])
def test_tune_threshold(conf, correct, target, expected):
    threshold, _ = tune_threshold(np.array(conf), np.array(correct, dtype=bool), target, min_support=1)
    assert threshold == expected


def test_tune_threshold_refuses_a_band_of_guesses_the_cumulative_precision_hides():
    conf = np.array([0.9] * 18 + [0.31, 0.30, 0.29])
    correct = np.array([True] * 18 + [False, False, True])        # cumulative precision 19/21 >= 0.9
    assert tune_threshold(conf, correct, 0.9, min_support=1)[0] == 0.29
    assert tune_threshold(conf, correct, 0.9, min_support=1, min_marginal=0.5)[0] == 0.9


def test_too_few_labelled_items_is_not_enough_data():
    with pytest.raises(NotEnoughData):
        FAMILY.train(catalog(n=20), {})


def test_pyfunc_predict_and_majority_floor(trained):
    _, _, holdout, model = trained
    out = FAMILY.pyfunc_predict(model, pd.DataFrame({"title": ["Orbit M123 blue wool scarf"], "description": [None]}))
    assert out["value"].tolist() == ["blue"] and out["confidence"].iloc[0] >= model.min_confidence
    metrics = FAMILY.evaluate(model, holdout)
    assert all(metrics[name] >= bound for name, bound in FAMILY.extra_floors.items())
