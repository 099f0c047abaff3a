"""Attributes family: several attributes from text, an uncertainty per prediction, per-level thresholds."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ml.families.attributes import (
    FAMILY,
    LEVELS,
    NEVER,
    choose_threshold,
    evidence_levels,
    item_text,
    tune_level_thresholds,
    wilson_lower,
)
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
    assert set(res["color"].columns) == {"value", "confidence", "probability", "uncertainty", "level", "accepted"}
    assert list(res["color"]["level"]) == ["stated", "stated"]
    assert set(res["color"]["level"]) <= set(LEVELS)


def test_silent_titles_get_the_implied_level_and_a_low_calibrated_probability(trained):
    _, _, holdout, model = trained
    ex = model.extractors["color"]
    silent = ex.extract([item_text(t, d) for t, d in zip(holdout.loc[holdout["silent"], "title"],
                                                          holdout.loc[holdout["silent"], "description"])])
    loud = ex.extract([item_text(t, d) for t, d in zip(holdout.loc[~holdout["silent"], "title"],
                                                        holdout.loc[~holdout["silent"], "description"])])
    assert (silent["level"] == "implied").all() and (loud["level"] == "stated").mean() > 0.95
    # a silent title's color is a guess among 6 (majority 30%): calibrated near that, never accepted
    assert silent["probability"].mean() < 0.5 < loud["probability"].mean() and not silent["accepted"].any()
    assert ex.thresholds["implied"] == NEVER and ex.thresholds["stated"] < 0.9


@pytest.mark.parametrize(("title", "description", "value", "level"), [
    ("Acme M1 red shoe", "A shoe.", "red", "stated"),
    ("Acme M1 black/white shoe", "", "black", "first"),
    ("Acme M1 black/white shoe", "", "white", "mixed"),
    ("Acme M1 black shoe", "", "red", "contradicted"),
    ("Acme M1 balck shoe", "", "black", "near"),
    ("Acme M1 shoe", "Pairs well with red jeans.", "red", "described"),
    ("Acme M1 navy shoe", "Pairs well with red jeans.", "blue", "implied"),
    ("Acme M1 Navy-Blue shoes", None, "blue", "stated"),          # normalized: punctuation, case, plural
])
def test_evidence_levels(title, description, value, level):
    vocab = ["red", "blue", "black", "white"]
    assert LEVELS[evidence_levels([item_text(title, description)], vocab, [value])[0]] == level


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
    # level 0 ("stated"): right down to conf 0.3; level 6 ("implied"): 60% right whatever the confidence.
    rng = np.random.default_rng(0)
    conf = np.r_[rng.uniform(0.3, 1.0, 300), rng.uniform(0.3, 1.0, 300)]
    level = np.r_[np.zeros(300, int), np.full(300, LEVELS.index("implied"))]
    correct = np.r_[np.ones(300, bool), rng.random(300) < 0.6]
    thr, cut, cal = tune_level_thresholds(conf, level, correct, 0.95, min_support=5, min_marginal=0.5, z=1.645,
                                          min_level_support=20)
    assert cut.met and thr["stated"] <= 0.31 and thr["implied"] == NEVER
    assert thr["mixed"] == NEVER                                   # no calibration rows: rejected
    glob = choose_threshold(conf, correct, 0.95, 5, 0.5, 1.645)
    recall_level = (correct & (conf >= np.array([thr[n] for n in LEVELS])[level])).mean()
    recall_global = (correct & (conf >= glob.threshold)).mean() if glob.met else 0.0
    assert recall_level > recall_global + 0.1
    # the calibrated probability is honest per level
    assert cal.predict(np.array([0.5]), np.array([0]))[0] > 0.95
    assert cal.predict(np.array([0.9]), np.array([6]))[0] < 0.7


@pytest.mark.parametrize(("conf", "correct", "z", "expected"), [
    ([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1], 0.0, 0.8),     # lowest threshold with precision >= 0.9
    ([0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1], 0.0, 0.6),     # everything is right: keep everything
    ([0.9, 0.8, 0.7, 0.6], [0, 1, 1, 1], 0.0, NEVER),   # never reaches 0.9: rejected
    ([0.9, 0.8, 0.7, 0.6], [1, 1, 1, 1], 1.645, NEVER),  # 4/4 right is no evidence of >= 90% at z=1.645
])
def test_choose_threshold(conf, correct, z, expected):
    cut = choose_threshold(np.array(conf), np.array(correct, dtype=bool), 0.9, min_support=1, z=z)
    assert cut.threshold == expected and cut.met == (expected != NEVER)


def test_wilson_lower_bound():
    assert wilson_lower(95, 100, 0.0) == pytest.approx(0.95)
    assert 0.88 < wilson_lower(95, 100, 1.645) < 0.95 < wilson_lower(990, 1000, 1.645)


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
    assert loaded.extractors["color"].calibrator == model.extractors["color"].calibrator
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
