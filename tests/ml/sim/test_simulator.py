"""Behavioural tests of the simulator: determinism, the raw event contract, the oracle, clicks, delays."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from ml.events.schema import STRATEGIES
from ml.events.store import to_arrow
from ml.events.validate import validate_frame
from ml.sim import QUERY_TYPES, SimConfig, Simulator
from ml.sim.oracle import within_one_edit
from ml.sim.vocab import (
    BRANDS,
    COLOR_ABBREVIATIONS,
    COLOR_SHADES,
    COLORS,
    HEAD_QUERIES,
    MATERIALS,
    THEME_SHOPPER_WORDS,
    THEMES,
)
from ml.text import normalize_query, tokenize

START = date(2026, 1, 1)
CFG = SimConfig(seed=3, n_items=400, n_users=80, requests_per_day=400, start=START, new_items_per_day=10)


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(CFG)


def ideal_impressions(sim: Simulator, requests: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    rows = [(r.request_id, item, pos + 1) for r in requests.itertuples()
            for pos, item in enumerate(list(sim.oracle.relevance(r.query))[:k])]
    return pd.DataFrame(rows, columns=["request_id", "item_id", "position"])


def test_same_seed_gives_identical_frames_in_any_call_order() -> None:
    a, b = Simulator(CFG), Simulator(CFG)
    b.requests(START + timedelta(3))            # b's clock runs ahead first
    b.catalog_events(START + timedelta(2))
    for k in (0, 1, 2):
        day = START + timedelta(k)
        pd.testing.assert_frame_equal(a.catalog_events(day), b.catalog_events(day))
        ra, rb = a.requests(day), b.requests(day)
        pd.testing.assert_frame_equal(ra, rb)
        imps = ideal_impressions(a, ra)
        pd.testing.assert_frame_equal(a.respond(ra, imps), b.respond(rb, imps))
    pd.testing.assert_frame_equal(a.true_items(START + timedelta(2)), b.true_items(START + timedelta(2)))


def test_different_seed_gives_different_frames(sim: Simulator) -> None:
    other = Simulator(replace(CFG, seed=CFG.seed + 1))
    assert not sim.catalog_events(START)["title"].equals(other.catalog_events(START)["title"])
    assert not sim.requests(START)["query"].equals(other.requests(START)["query"])


def test_respond_depends_only_on_each_impression(sim: Simulator) -> None:
    req = sim.requests(START + timedelta(1))
    imps = ideal_impressions(sim, req)
    whole = sim.respond(req, imps)
    shuffled = imps.sample(frac=1.0, random_state=0)
    halves = pd.concat([sim.respond(req, shuffled.iloc[: len(imps) // 2]),
                        sim.respond(req, shuffled.iloc[len(imps) // 2:])])
    halves = halves.sort_values(["ts", "event_id"], kind="mergesort", ignore_index=True)
    pd.testing.assert_frame_equal(whole, halves)
    assert len(whole) > 0


@pytest.mark.parametrize("table", ["catalog", "requests", "engagements"])
def test_frames_match_the_raw_event_contract(sim: Simulator, table: str) -> None:
    day = START + timedelta(1)
    req = sim.requests(day)
    frame = {
        "catalog": pd.concat([sim.catalog_events(START), sim.catalog_events(day)], ignore_index=True),
        "requests": req,
        "engagements": sim.respond(req, ideal_impressions(sim, req)),
    }[table]
    assert len(frame) > 0
    to_arrow(table, frame)  # casts to the schema, raises on a mismatch
    result = validate_frame(table, frame)
    assert result.n_bad == 0, result.bad.head().to_dict("records")
    assert frame["event_id"].is_unique


def test_requests_fall_inside_their_day_with_consistent_fields(sim: Simulator) -> None:
    day = START + timedelta(2)
    req = sim.requests(day)
    assert len(req) == CFG.requests_per_day
    assert (req["ts"].dt.date == day).all()
    assert req["ts"].is_monotonic_increasing
    assert (req["hour"] == req["ts"].dt.hour).all()
    assert (req["event_id"] == req["request_id"]).all()
    per_session = req.groupby("session_id")["user_id"].nunique()
    assert (per_session == 1).all() and len(per_session) < len(req)
    night, evening = (req["hour"] < 5).mean(), ((req["hour"] >= 18) & (req["hour"] < 22)).mean()
    assert evening > 2 * night


def test_query_mix_and_oracle_types_agree(sim: Simulator) -> None:
    req = pd.concat([sim.requests(START + timedelta(k)) for k in range(3)], ignore_index=True)
    assert [sim.oracle.query_type(q) for q in req["query"]] == req["query_type"].tolist()
    share = req["query_type"].value_counts(normalize=True)
    for qtype in QUERY_TYPES:
        assert abs(share[qtype] - CFG.query_mix[qtype]) < 0.06, (qtype, share[qtype])


def test_catalog_has_initial_items_then_cold_start_items(sim: Simulator) -> None:
    first, later = sim.catalog_events(START), sim.catalog_events(START + timedelta(4))
    assert len(first) == CFG.n_items and len(later) == CFG.new_items_per_day
    assert (first["created_at"] == pd.Timestamp(START, tz="UTC")).all()
    assert (later["created_at"].dt.date == START + timedelta(4)).all()
    assert not set(later["item_id"]) & set(first["item_id"])
    with pytest.raises(ValueError):
        sim.catalog_events(START - timedelta(1))


def test_hidden_attributes_are_none_in_catalog_but_true_in_true_items(sim: Simulator) -> None:
    catalog = sim.catalog_events(START)
    true = sim.true_items(as_of=START).set_index("item_id").loc[catalog["item_id"]]
    assert len(true) == CFG.n_items
    for attr in ("brand", "color", "material"):
        hidden = catalog[attr].isna().to_numpy()
        assert 0.2 < hidden.mean() < 0.4, attr
        assert true[attr].notna().all()
        shown = ~hidden
        assert (catalog[attr].to_numpy()[shown] == true[attr].to_numpy()[shown]).all()
    # the title still names the brand of an item whose brand column is hidden
    hidden_brand = catalog["brand"].isna().to_numpy()
    assert all(b in t for b, t in zip(true["brand"][hidden_brand], catalog["title"][hidden_brand]))


def test_material_never_in_text_and_model_names_unique(sim: Simulator) -> None:
    items = sim.true_items()
    text_tokens = {t for text in items["title"] + " " + items["description"] for t in tokenize(text)}
    assert not text_tokens & set(MATERIALS)
    # descriptions may name a color (a distractor), but never the item's own
    assert not any(c in tokenize(d) for c, d in zip(items["color"], items["description"]))
    assert items["model_name"].is_unique
    assert (items["model_name"].map(normalize_query) == items["model_name"]).all()


def test_color_text_noise_rates_and_forms() -> None:
    from dataclasses import replace

    sim = Simulator(replace(CFG, title_color_variant_share=0.2, title_second_color_share=0.2,
                            description_distractor_share=0.15))
    raw = sim._items
    items = sim.true_items()
    has = items["title_has_color"].to_numpy()
    form = raw["title_color_form"].to_numpy()
    second = raw["title_second_color_code"].to_numpy()
    distractor = raw["description_distractor_code"].to_numpy()
    code = raw["color_code"].to_numpy()
    assert (form[~has] == 0).all() and (second[~has] == -1).all()
    assert 0.1 < (form[has] > 0).mean() < 0.3 and 0.12 < (second[has] >= 0).mean() < 0.28
    assert 0.1 < (distractor >= 0).mean() < 0.2
    assert (second[second >= 0] != code[second >= 0]).all() and (distractor[distractor >= 0] != code[distractor >= 0]).all()
    plain = has & (form == 0)   # a plainly spelled color is the first color word of its title
    for title, color in zip(items["title"][plain], items["color"][plain]):
        assert next(t for t in tokenize(title) if t in COLORS) == color
    for title, s in zip(items["title"][second >= 0], second[second >= 0]):
        assert "/" in title and title.split("/")[1].split()[0].lower() == COLORS[s]
    # noise words never collide with another vocabulary (queries stay unambiguous) nor name a material
    noise = {t for words in (*COLOR_SHADES.values(), COLOR_ABBREVIATIONS.values()) for w in words for t in tokenize(w)}
    others = {t for words in (BRANDS, MATERIALS, *THEMES.values(), HEAD_QUERIES) for w in words for t in tokenize(w)}
    assert not noise & others


def test_exact_query_pins_its_item(sim: Simulator) -> None:
    rng = np.random.default_rng(0)
    req = sim.requests(START + timedelta(1))
    items = sim.true_items().set_index("item_id")
    names = set(items["model_name"])
    exact = req.loc[req["query_type"] == "exact", "query"]
    n_typos = 0
    for query in exact:
        rel = sim.oracle.relevance(query)
        target = [i for i, g in rel.items() if g == 3]
        assert len(target) == 1, query
        row = items.loc[target[0]]
        tokens = normalize_query(query).split()
        brand = [t for t in tokens if t in {normalize_query(b) for b in BRANDS}]
        assert brand in ([], [normalize_query(row["brand"])])
        token = next(t for t in tokens if within_one_edit(t, row["model_name"]))
        assert set(tokens) - {token, *brand} <= {normalize_query(row["category"])}     # the category noun
        assert brand or token in names                # a typo needs the brand to resolve
        n_typos += token not in names
        others = items.loc[[i for i in rel if i != target[0]]]
        assert (others["brand"] == row["brand"]).all() and (others["category"] == row["category"]).all()
        assert all(g == 1 for i, g in rel.items() if i != target[0])
        assert sim.oracle.ndcg(query, list(rel)) == pytest.approx(1.0)
        random_ranking = rng.choice(items.index.to_numpy(), size=10, replace=False).tolist()
        assert sim.oracle.ndcg(query, target) > sim.oracle.ndcg(query, random_ranking)
    assert len(exact) > 40 and n_typos > 5
    brands = {normalize_query(b) for b in BRANDS}
    forms = {(normalize_query(q).split()[0] in brands, len(normalize_query(q).split())) for q in exact}
    assert forms == {(True, 2), (False, 2), (True, 3)}    # brand model, model brand or model noun, brand model noun


def test_attribute_relevance_respects_true_attributes(sim: Simulator) -> None:
    req = sim.requests(START + timedelta(2))
    items = sim.true_items()
    for query in req.loc[req["query_type"] == "attribute", "query"].unique():
        tokens = set(tokenize(query))
        match = items["category"].map(normalize_query).isin(tokens) & items["color"].isin(tokens)
        if len(tokens) == 3:
            match &= items["material"].isin(tokens)
        high = items.loc[match, "quality"] >= CFG.high_quality
        expected = dict(zip(items.loc[match, "item_id"], 2 + high))
        assert expected and sim.oracle.relevance(query) == expected, query


def test_thematic_and_head_relevance(sim: Simulator) -> None:
    items = sim.true_items().set_index("item_id")
    rel = sim.oracle.relevance("gifts for hiking campfire lovers")
    assert sim.oracle.query_type("gifts for hiking campfire lovers") == "thematic"
    assert set(items.loc[list(rel), "theme"]) == {"outdoor"}
    assert len(rel) == (items["theme"] == "outdoor").sum()
    grade = pd.Series(rel)
    quality = items.loc[grade.index, "quality"]
    assert quality[grade == 3].min() > quality[grade == 2].min() > quality[grade == 1].max()
    text_tokens = {t for text in items["title"] + " " + items["description"] for t in tokenize(text)}
    for head in sim.head_queries:
        assert sim.oracle.query_type(head) == "head"
        assert len(sim.oracle.relevance(head)) == CFG.head_set_size
        assert not set(tokenize(head)) & text_tokens, head   # nothing in the text reveals the latent set


def test_thematic_queries_use_shopper_words_that_few_descriptions_contain(sim: Simulator) -> None:
    """The vocabulary mismatch that makes semantic retrieval best for thematic queries: queries use a theme's shopper
    words, descriptions its catalog words, and only a minority of descriptions also name a shopper word."""
    req = sim.requests(START + timedelta(1))
    catalog_words = {w for words in THEMES.values() for w in words}
    shopper = {w: t for t, words in THEME_SHOPPER_WORDS.items() for w in words}
    for query in req.loc[req["query_type"] == "thematic", "query"]:
        tokens = set(tokenize(query))
        assert not tokens & catalog_words and len({shopper[w] for w in tokens & set(shopper)}) == 1, query
    assert sim.oracle.relevance("gifts for hiker camper lovers") == sim.oracle.relevance("hiking trail")
    items = sim.true_items()
    named = [{shopper[w] for w in tokenize(d) if w in shopper} for d in items["description"]]
    assert all(found <= {theme} for found, theme in zip(named, items["theme"]))   # only the item's own theme
    assert 0.5 * CFG.shopper_word_share < np.mean([bool(f) for f in named]) < 1.5 * CFG.shopper_word_share


def test_ndcg_edges(sim: Simulator) -> None:
    assert sim.oracle.query_type("zzzz qqqq") == "unknown"
    assert sim.oracle.relevance("zzzz qqqq") == {}
    assert sim.oracle.ndcg("zzzz qqqq", ["i000001"]) == 0.0
    rel = list(sim.oracle.relevance("deals"))
    assert sim.oracle.ndcg("deals", [rel[0]] * 10) < sim.oracle.ndcg("deals", rel[:10])
    assert set(Simulator.BEST_STRATEGY) == set(QUERY_TYPES)
    assert set(Simulator.BEST_STRATEGY.values()) <= set(STRATEGIES)


def test_click_through_decreases_with_position(sim: Simulator) -> None:
    # 2000 requests, each showing the same ten grade-3 items in a random order: relevance is constant
    # across positions, so any CTR difference comes from examination.
    query = "hiking trail essentials"
    req = pd.concat([sim.requests(START + timedelta(k)) for k in range(5)], ignore_index=True)
    req["query"] = query
    best = [i for i, g in sim.oracle.relevance(query).items() if g == 3][:10]
    assert len(best) == 10
    rng = np.random.default_rng(1)
    imps = pd.DataFrame({
        "request_id": np.repeat(req["request_id"].to_numpy(), 10),
        "item_id": np.concatenate([rng.permutation(best) for _ in range(len(req))]),
        "position": np.tile(np.arange(1, 11), len(req)),
    })
    clicks = sim.respond(req, imps).query("type == 'click'").merge(imps, on=["request_id", "item_id"])
    ctr = clicks["position"].value_counts().reindex(range(1, 11), fill_value=0) / len(req)
    assert ctr[1] > 1.5 * ctr[2] > 0
    assert ctr[2] > ctr[4] > ctr[8]
    assert ctr[1:5].mean() > 2 * ctr[6:10].mean()
    # and relevance matters at a fixed position: grade-0 items at position 1 are rarely clicked
    irrelevant = [i for i in sim.true_items()["item_id"] if i not in sim.oracle.relevance(query)][:1]
    first = pd.DataFrame({"request_id": req["request_id"], "item_id": irrelevant * len(req), "position": 1})
    ctr_irrelevant = (sim.respond(req, first)["type"] == "click").sum() / len(req)
    assert ctr_irrelevant < ctr[1] / 5


def test_purchases_follow_carts_and_often_land_on_later_days(sim: Simulator) -> None:
    req = pd.concat([sim.requests(START + timedelta(k)) for k in range(3)], ignore_index=True)
    eng = sim.respond(req, ideal_impressions(sim, req))
    wide = eng.pivot_table(index=["request_id", "item_id"], columns="type", values="ts", aggfunc="first")
    buys = wide[wide["purchase"].notna()]
    assert len(buys) > 100
    assert buys["add_to_cart"].notna().all() and buys["click"].notna().all()
    carts = wide[wide["add_to_cart"].notna()]
    assert carts["click"].notna().all() and (carts["add_to_cart"] > carts["click"]).all()
    delay = buys["purchase"] - buys["add_to_cart"]
    assert (delay > pd.Timedelta(0)).all() and (delay <= pd.Timedelta(days=CFG.purchase_delay_cap_days)).all()
    assert 0.2 < (delay <= pd.Timedelta(hours=1)).mean() < 0.5
    later = (buys["purchase"].dt.date > buys["click"].dt.date).mean()
    assert later > 0.35
    req_ts = req.set_index("request_id")["ts"]
    assert (eng["ts"].to_numpy() > req_ts.loc[eng["request_id"]].to_numpy()).all()


def test_respond_rejects_unknown_requests_and_accepts_empty(sim: Simulator) -> None:
    req = sim.requests(START)
    bad = pd.DataFrame({"request_id": ["nope"], "item_id": ["i000001"], "position": [1]})
    with pytest.raises(ValueError, match="unknown request"):
        sim.respond(req, bad)
    empty = sim.respond(req, bad.iloc[:0])
    assert empty.empty
    to_arrow("engagements", empty)
