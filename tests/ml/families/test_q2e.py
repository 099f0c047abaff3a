"""q2e family: the memory recovers each query's true items, shrinks thin evidence and favours fresh evidence;
the query generator predicts entries for cold items that actual evidence then replaces."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from ml.families.base import NotEnoughData, TrainContext
from ml.families.q2e import FAMILY, item_fields, training_frame
from ml.text import SPELLING_VARIANTS, normalize_query

START = pd.Timestamp("2024-03-01", tz="UTC")
QUERIES = [f"query {q}" for q in range(8)]
ITEMS = [f"item{i:03d}" for i in range(200)]
CTX = TrainContext(interval_start=datetime(2024, 3, 29, tzinfo=UTC),
                   interval_end=datetime(2024, 3, 30, tzinfo=UTC), marts_dir=".")


def true_items(q: int) -> list[str]:
    return ITEMS[q * 5:(q + 1) * 5]


def simulate(seed: int = 0, requests_per_query_day: int = 4, days: int = 29) -> pd.DataFrame:
    """Each query has 5 true items (click 40%, some carted/bought); the 7 other slots are random items that
    get an accidental click 2% of the time (a click, never a purchase)."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(days):
        for q, query in enumerate(QUERIES):
            for r in range(requests_per_query_day):
                rid = f"d{day}-q{q}-r{r}"
                ts = START + pd.Timedelta(days=day, hours=int(rng.integers(0, 24)))
                shown_true = [str(i) for i in rng.choice(true_items(q), 3, replace=False)]
                others = [str(i) for i in rng.choice(ITEMS, 12, replace=False) if i not in true_items(q)][:7]
                for pos, item in enumerate(shown_true + others, start=1):
                    label = 0
                    if item in shown_true and rng.random() < 0.4:
                        label = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
                    elif item not in shown_true and rng.random() < 0.02:
                        label = 1
                    rows.append((rid, ts, query, item, pos, label))
    return pd.DataFrame(rows, columns=["request_id", "event_timestamp", "query_norm", "item_id", "position", "label"])


def impressions(query: str, item: str, n: int, clicks: int, ts: pd.Timestamp) -> list[tuple]:
    return [(f"{query}-{item}-{ts.date()}-{j}", ts, query, item, 1, int(j < clicks)) for j in range(n)]


def frame_of(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["request_id", "event_timestamp", "query_norm", "item_id", "position", "label"])


@pytest.fixture(scope="module")
def split_model():
    train, holdout = FAMILY.split(simulate(), CTX)
    return train, holdout, FAMILY.train(train, {})


def test_lookup_recovers_the_true_items_first(split_model):
    _, _, model = split_model
    assert model.n_queries == len(QUERIES)
    for q, query in enumerate(QUERIES):
        top = model.lookup(query, 5)
        assert {item for item, _ in top} == set(true_items(q)), query
        scores = [s for _, s in model.lookup(query, 50)]
        assert scores == sorted(scores, reverse=True)
    assert model.lookup("never seen", 10) == []


def test_recall_beats_popularity_on_later_requests(split_model):
    _train, holdout, model = split_model
    assert holdout["event_timestamp"].min() >= pd.Timestamp(CTX.interval_start)
    metrics = FAMILY.evaluate(model, holdout)
    assert metrics["coverage"] == 1.0
    # Accidental clicks in the holdout (~10% of the engaged items) are unpredictable: recall tops out near 0.9.
    assert metrics["recall@10"] > 0.75
    assert metrics["recall@10"] > metrics["recall@10_popularity"] + 0.3
    assert metrics["recall@10"] >= FAMILY.gate_spec.floor


def test_smoothing_ranks_thin_evidence_below_solid_evidence():
    t = START
    rows = impressions("shoe", "lucky", 1, 1, t) + impressions("shoe", "solid", 100, 30, t)
    rows += impressions("other", "filler", 200, 10, t)
    model = FAMILY.train(frame_of(rows), {"half_life_days": None})
    assert [item for item, _ in model.lookup("shoe", 2)] == ["solid", "lucky"]


def test_decay_favours_recent_evidence():
    now, old = START + pd.Timedelta(days=90), START
    rows = impressions("boot", "stale", 20, 20, old) + impressions("boot", "fresh", 20, 10, now)
    rows += impressions("other", "filler", 200, 10, now)
    undecayed = FAMILY.train(frame_of(rows), {"half_life_days": None})
    decayed = FAMILY.train(frame_of(rows), {"half_life_days": 14.0})
    assert undecayed.lookup("boot", 1)[0][0] == "stale"
    assert decayed.lookup("boot", 1)[0][0] == "fresh"


def test_grades_weigh_purchases_above_clicks():
    t = START
    rows = impressions("bag", "clicked", 50, 10, t) + impressions("bag", "bought", 50, 10, t)
    frame = frame_of(rows)
    frame.loc[frame["item_id"] == "bought", "label"] *= 3
    model = FAMILY.train(frame, {"half_life_days": None})
    assert model.lookup("bag", 1)[0][0] == "bought"


def test_top_n_and_unengaged_items_are_not_remembered():
    t = START
    rows = [r for i in range(5) for r in impressions("hat", f"h{i}", 10, 4 - i, t)]
    model = FAMILY.train(frame_of(rows), {"top_n": 3})
    assert [item for item, _ in model.lookup("hat", 10)] == ["h0", "h1", "h2"]
    model = FAMILY.train(frame_of(rows), {})
    assert "h4" not in {item for item, _ in model.lookup("hat", 10)}    # shown, never engaged
    assert model.n_entries == 4


def test_save_load_roundtrip(split_model, tmp_path):
    _, holdout, model = split_model
    FAMILY.save(model, tmp_path / "q2e")
    assert (tmp_path / "q2e" / "memory.parquet").exists()
    loaded = FAMILY.load(tmp_path / "q2e")
    assert loaded.n_queries == model.n_queries and loaded.n_entries == model.n_entries
    for query in QUERIES:
        got, want = loaded.lookup(query, 10), model.lookup(query, 10)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want])
    assert FAMILY.evaluate(loaded, holdout) == FAMILY.evaluate(model, holdout)


def test_no_engagement_is_not_enough_data():
    frame = frame_of(impressions("x", "y", 50, 0, START))
    with pytest.raises(NotEnoughData):
        FAMILY.train(frame, {})
    with pytest.raises(NotEnoughData):
        FAMILY.evaluate(FAMILY.train(frame_of(impressions("x", "y", 50, 5, START)), {}), frame)


def test_pyfunc_predict(split_model):
    _, _, model = split_model
    out = FAMILY.pyfunc_predict(model, pd.DataFrame({"query_norm": ["query 0", "unknown"], "k": [3, 3]}))
    assert out["query_norm"].tolist() == ["query 0"] * 3 and out["rank"].tolist() == [1, 2, 3]
    assert set(out["item_id"]) <= set(true_items(0))


# ---------------------------------------------------------------------------------------------------------
# Predicted entries: a query generator learned from engaged (query, item) pairs, applied to the catalog
# ---------------------------------------------------------------------------------------------------------
BRANDS_ = ["Arvella", "Brisko", "Corvane", "Dunmere"]
COLORS_ = ["red", "blue", "green", "black"]
CATS_ = ["shoes", "bags", "lamps"]
WORDS_ = ["hiking", "desk", "yoga", "cozy", "garden", "travel"]


def cat_item(n: int, created: pd.Timestamp = START) -> dict:
    brand, color, cat = BRANDS_[n % 4], COLORS_[(n // 4) % 4], CATS_[n % 3]
    noun = cat[:-1].capitalize()
    return {"item_id": f"it{n:03d}", "title": f"{brand} Mod{chr(97 + n % 26)}{n:03d}x {color.title()} {noun}",
            "description": f"Made for {WORDS_[n % 6]} days. Crafted to last.", "category": cat, "brand": brand,
            "color": color, "material": None, "price": 10.0 + n, "created_at": created}


def model_word(n: int) -> str:
    return f"mod{chr(97 + n % 26)}{n:03d}x"


def catalog_of(ns: list[int], created: pd.Timestamp = START) -> pd.DataFrame:
    return pd.DataFrame([cat_item(n, created) for n in ns])


def brand_model_logs(ns: list[int]) -> pd.DataFrame:
    """Every item n is found by "brand model" (clicked) and by "color category" (clicked once in three)."""
    rows = []
    for n in ns:
        it = cat_item(n)
        rows += impressions(f"{it['brand'].lower()} {model_word(n)}", it["item_id"], 6, 3, START + pd.Timedelta(days=1))
        rows += impressions(f"{it['color']} {it['category'][:-1]}", it["item_id"], 6, 2, START + pd.Timedelta(days=1))
    return frame_of(rows)


@pytest.fixture(scope="module")
def cold_model():
    seen = list(range(40))
    logs = brand_model_logs(seen)
    catalog = catalog_of(seen + [99], created=START)            # item 99: in the catalog, no interaction
    return FAMILY.train(training_frame(logs, catalog), {"half_life_days": None})


def test_generator_learns_brand_model_template_and_applies_it_to_an_unseen_item(cold_model):
    gen = cold_model.generator
    assert gen is not None
    templates = {slots: share for slots, share in gen.templates}
    assert templates[("brand", "model")] == pytest.approx(templates[("color", "category")] * 3 / 2, rel=0.05)
    assert ("brand", "model") == gen.templates[0][0]
    new = item_fields(catalog_of([123]))["it123"]
    assert new["model"] == [model_word(123)] and new["brand"] == [BRANDS_[123 % 4].lower()]
    generated = dict(gen.generate(new, 5))
    expected = normalize_query(f"{BRANDS_[123 % 4]} {model_word(123)}")
    assert next(iter(generated)) == expected                        # the best generated query
    assert normalize_query(f"{COLORS_[(123 // 4) % 4]} {CATS_[123 % 3]}") in generated
    assert not any("crafted" in q or "made" in q for q in generated)  # description filler never queried


def test_cold_item_gets_predicted_entries_flagged_and_discounted(cold_model):
    q = normalize_query(f"{BRANDS_[99 % 4]} {model_word(99)}")
    entries = cold_model.lookup_entries(q, 5)
    assert [e["item_id"] for e in entries] == ["it099"]
    assert entries[0]["source"] == "predicted" and 0 < entries[0]["confidence"] <= 1
    assert entries[0]["score"] < cold_model.meta["prior"]
    assert cold_model.lookup(q, 5) == [("it099", entries[0]["score"])]
    assert cold_model.actual_only().lookup(q, 5) == []
    assert cold_model.n_predicted > 0 and cold_model.n_entries > cold_model.n_predicted


def test_predicted_entry_is_replaced_by_actual_evidence():
    seen = list(range(40))
    catalog = catalog_of(seen + [99])
    q = normalize_query(f"{BRANDS_[99 % 4]} {model_word(99)}")
    logs = brand_model_logs(seen)
    before = FAMILY.train(training_frame(logs, catalog), {"half_life_days": None})
    after = FAMILY.train(training_frame(pd.concat([logs, frame_of(impressions(q, "it099", 5, 3, START))]),
                                        catalog), {"half_life_days": None})
    (b,), (a,) = before.lookup_entries(q, 5), after.lookup_entries(q, 5)
    assert b["source"] == "predicted" and a["source"] == "actual"
    assert len(after.table.query("query_norm == @q and item_id == 'it099'")) == 1   # no duplicate entry
    assert a["score"] > b["score"]
    # shown five times and never engaged: the prediction is kept, but shrunk by the evidence against it
    shown = FAMILY.train(training_frame(pd.concat([logs, frame_of(impressions(q, "it099", 5, 0, START))]),
                                        catalog), {"half_life_days": None})
    (s,) = shown.lookup_entries(q, 5)
    unshrunk = FAMILY.default_params["predicted_weight"] * shown.meta["prior"] * s["confidence"]
    assert s["source"] == "predicted" and s["score"] == pytest.approx(unshrunk * 10 / (5 + 10))
    assert s["confidence"] == pytest.approx(b["confidence"])


def test_confident_actual_entries_outrank_predicted_ones(cold_model):
    # the cold item's "color category" query was engaged on seen items of that color and category (actual)
    it = cat_item(99)
    q = normalize_query(f"{it['color']} {it['category']}")
    entries = cold_model.lookup_entries(q, 50)
    sources = [e["source"] for e in entries]
    assert "actual" in sources and "predicted" in sources
    assert any(e["item_id"] == "it099" and e["source"] == "predicted" for e in entries)
    last_actual = max(i for i, s in enumerate(sources) if s == "actual")
    first_predicted = sources.index("predicted")
    assert last_actual < first_predicted                       # every actual entry here is confident enough
    scores = [e["score"] for e in entries]
    assert scores == sorted(scores, reverse=True)


def test_training_set_reads_impressions_and_catalog(tmp_path):
    logs = brand_model_logs(list(range(10)))
    logs.assign(strategy="lexical").to_parquet(tmp_path / "label_ranker.parquet", index=False)
    catalog_of(list(range(10)) + [99]).assign(event_timestamp=START).to_parquet(tmp_path / "dim_items.parquet")
    ctx = TrainContext(interval_start=datetime(2024, 3, 2, tzinfo=UTC), interval_end=datetime(2024, 3, 3, tzinfo=UTC),
                       marts_dir=tmp_path)
    frame = FAMILY.training_set(ctx)
    assert (frame["row_kind"] == "item").sum() == 11 and (frame["row_kind"] == "impression").sum() == len(logs)
    train, holdout = FAMILY.split(frame, ctx)
    assert (train["row_kind"] == "item").sum() == 11 and (holdout["row_kind"] == "impression").all()
    model = FAMILY.train(train, {})
    assert model.meta["n_catalog_items"] == 11 and model.n_predicted > 0
    metrics = FAMILY.evaluate(model, holdout)
    assert metrics["recall@10"] >= metrics["recall@10_actual_only"]
    # keys read as categoricals (one string per distinct value), trained into the same memory as plain strings
    assert all(isinstance(frame[c].dtype, pd.CategoricalDtype) for c in ("request_id", "query_norm", "item_id"))
    plain_train, _ = FAMILY.split(training_frame(logs, catalog_of(list(range(10)) + [99])), ctx)
    pd.testing.assert_frame_equal(FAMILY.train(plain_train, {}).table, model.table)


def test_save_load_roundtrip_keeps_predicted_entries_and_generator(cold_model, tmp_path):
    FAMILY.save(cold_model, tmp_path / "q2e")
    assert not list((tmp_path / "q2e").glob("*.pkl"))
    loaded = FAMILY.load(tmp_path / "q2e")
    assert loaded.n_predicted == cold_model.n_predicted
    assert loaded.generator.templates == cold_model.generator.templates
    q = normalize_query(f"{BRANDS_[99 % 4]} {model_word(99)}")
    assert loaded.lookup_entries(q, 3) == cold_model.lookup_entries(q, 3)
    new = item_fields(catalog_of([123]))["it123"]
    assert loaded.generator.generate(new, 5) == cold_model.generator.generate(new, 5)


@pytest.mark.parametrize("variant,canonical", [
    ("Colour", "color"), ("colours", "color"), ("gray", "grey"), ("GRAYS", "grey"), ("T-Shirts", "t shirt"),
    ("tshirt", "t shirt"), ("tees", "t shirt"), ("hoodies", "hoodie"), ("hoody", "hoodie"),
    ("Gray Colour T-shirts", "grey color t shirt"), ("grayson", "grayson"), ("tea", "tea"),
])
def test_normalization_spelling_variants(variant, canonical):
    assert normalize_query(variant) == canonical
    assert normalize_query(canonical) == canonical              # idempotent: serving may normalize twice
    assert set(SPELLING_VARIANTS.values()) == {normalize_query(v) for v in SPELLING_VARIANTS.values()}


def test_categorical_keys_train_the_same_memory_as_strings(split_model):
    """training_set reads the key columns as categoricals (Arrow dictionaries, categories in order of appearance):
    the memory, its order and the popular items must be those of the same frame with plain strings."""
    train, holdout, model = split_model
    shuffled = train.copy()
    for c in ("request_id", "query_norm", "item_id"):
        values = shuffled[c].astype(str)
        shuffled[c] = pd.Categorical(values, categories=sorted(values.unique(), reverse=True))
    got = FAMILY.train(shuffled, {})
    pd.testing.assert_frame_equal(got.table, model.table)
    assert got.popular == model.popular
    assert FAMILY.evaluate(got, holdout) == FAMILY.evaluate(model, holdout)
    cat_holdout = holdout.astype({c: "category" for c in ("request_id", "query_norm", "item_id")})
    assert FAMILY.evaluate(model, cat_holdout) == FAMILY.evaluate(model, holdout)
