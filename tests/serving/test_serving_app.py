"""The scorer through its real FastAPI app (TestClient, lifespan included). Champions and the feature store
are tiny fakes injected through the Scorer's loader hooks; everything else (retrieval, event log) is real."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ml.events.schema import STRATEGIES
from ml.events.store import read_events, write_events
from ml.events.validate import validate_frame
from ml.settings import Settings
from serving.app import create_app
from serving.event_log import EventLog
from serving.schemas import RankRequest
from serving.scorer import Scorer

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)


def _catalog(n: int = 40) -> pd.DataFrame:
    colors, mats, cats = ["red", "blue", "black"], ["leather", "cotton"], ["shoes", "shirts", "bags"]
    rows = []
    for i in range(n):
        c, m, cat = colors[i % 3], mats[i % 2], cats[i % 3]
        rows.append({"event_id": f"c{i}", "item_id": f"i{i}", "title": f"{c} {m} {cat} {i}",
                     "description": f"a {c} {cat} made of {m}", "category": cat, "brand": f"b{i % 4}",
                     "color": c, "material": m, "price": 10.0 + i, "created_at": T0 - timedelta(days=i)})
    return pd.DataFrame(rows)


def make_settings(tmp_path: Path, **overrides) -> Settings:
    s = Settings(home=tmp_path / "home", admin_token=TOKEN, page_size=5, candidate_budget=20, **overrides)
    write_events(s.raw_dir, "catalog", _catalog(), batch_id="seed")  # cold start: raw catalog, no marts
    return s


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


class FakeBandit:
    def __init__(self, favourite: str = "lexical") -> None:
        self.favourite = favourite

    def pmf(self, shared, strategies, action_feats=None):
        p = np.full(len(strategies), 0.1 / (len(strategies) - 1))
        p[list(strategies).index(self.favourite)] = 0.9
        return p


class FakeRanker:
    feature_names = ("price",)

    def score(self, X):
        return -X["price"].to_numpy()   # cheapest first


class RaisingStore:
    def get(self, service, entity_rows):
        raise ConnectionError("online store unreachable")


def make_client(settings: Settings, champions=None, online=None, **kw) -> TestClient:
    champions = champions if champions is not None else {}
    loader = champions if callable(champions) else (lambda family: champions.get(family))
    scorer = lambda: Scorer(settings, feast_repo=settings.home / "no-feast-repo", champion_loader=loader,
                            online_factory=(lambda: online) if online else None, clock=lambda: T0, **kw)
    return TestClient(create_app(settings, settings.home / "no-feast-repo", scorer_factory=scorer))


def test_rank_cold_start_logs_valid_events(settings):
    with make_client(settings) as client:
        r = client.post("/rank", json={"query": "Red Leather Shoes", "user_id": "u1", "device": "mobile", "k": 4})
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["items"]) == 4 and [it["position"] for it in body["items"]] == [1, 2, 3, 4]
        assert body["request_id"] and body["propensity"] == pytest.approx(1 / 22)  # cold start: uniform over the 22 plans
        assert body["policy_version"] == "uniform" and body["strategy"] in STRATEGIES and not body["degraded"]
        assert client.get("/models").json()["champions"] == {f: None for f in
                                                             ("bandit", "ranker", "conversion", "q2e", "attributes")}
        assert client.post("/admin/flush", headers=AUTH).json()["written"] == {
            "requests": 1, "decisions": 1, "impressions": 4}
    rid = body["request_id"]
    for table, n in (("requests", 1), ("decisions", 1), ("impressions", 4)):
        frame = read_events(settings.raw_dir, table)
        result = validate_frame(table, frame)
        assert result.n_bad == 0, result.bad
        assert len(result.good) == n and set(result.good["request_id"]) == {rid}
    dec = read_events(settings.raw_dir, "decisions").iloc[0]
    # the logged plan: its first strategy is the response's, one budget per strategy, summing to the page budget
    assert dec["strategies"][0] == body["strategy"] and len(dec["budgets"]) == len(dec["strategies"])
    assert sum(dec["budgets"]) == 20 and len(set(dec["strategies"])) == len(dec["strategies"])
    imp = read_events(settings.raw_dir, "impressions").sort_values("position")
    assert list(imp["item_id"]) == [it["item_id"] for it in body["items"]]


def test_event_log_flushes_on_shutdown(settings):
    with make_client(settings) as client:
        assert client.post("/rank", json={"query": "blue shirts", "user_id": "u1"}).status_code == 200
    assert len(read_events(settings.raw_dir, "requests")) == 1


@pytest.mark.parametrize("patch, field", [
    ({"query": ""}, "query"),
    ({"query": "   "}, "query"),
    ({"query": "x" * 257}, "query"),
    ({"k": 0}, "k"),
    ({"k": 1000}, "k"),
    ({"device": "tv"}, "device"),
    ({"surprise": 1}, "surprise"),
])
def test_invalid_requests_are_422_naming_the_field(settings, patch, field):
    with make_client(settings) as client:
        r = client.post("/rank", json={"query": "red shoes", "user_id": "u1", **patch})
        assert r.status_code == 422
        body = r.json()
        assert body["message"].startswith(f"invalid request: {field}:")
        assert [e["loc"] for e in body["detail"]] == [["body", field]]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_admin_endpoints_require_the_token(settings, headers):
    with make_client(settings) as client:
        assert client.post("/admin/reload", headers=headers).status_code == 401
        assert client.post("/admin/flush", headers=headers).status_code == 401
        assert client.post("/admin/reload", headers=AUTH).status_code == 200


def test_reload_swaps_state_while_requests_continue(settings):
    loads = {"n": 0}

    def loader(family):
        if family == "bandit":
            loads["n"] += 1
            return str(loads["n"]), FakeBandit()
        return None

    errors: list[str] = []
    seen_versions: set[str] = set()
    stop = threading.Event()
    with make_client(settings, champions=loader) as client:
        assert client.get("/models").json()["champions"]["bandit"] == "1"

        def hammer(worker: int) -> None:
            i = 0
            while not stop.is_set():
                r = client.post("/rank", json={"query": f"red shoes {i % 3}", "user_id": f"u{worker}"})
                if r.status_code != 200 or len(r.json()["items"]) != 5:
                    errors.append(r.text)
                else:
                    seen_versions.add(r.json()["policy_version"])
                i += 1

        threads = [threading.Thread(target=hammer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for _ in range(3):
            r = client.post("/admin/reload", headers=AUTH)
            assert r.status_code == 200 and r.json()["champions"]["bandit"] == str(loads["n"])
        stop.set()
        for t in threads:
            t.join()
        assert errors == []
        assert client.get("/models").json()["champions"]["bandit"] == "4"
        assert client.post("/rank", json={"query": "red", "user_id": "u"}).json()["policy_version"] == "4"
        assert seen_versions <= {"1", "2", "3", "4"} and seen_versions


def test_degraded_when_the_feature_store_raises(settings):
    champions = {"bandit": ("7", FakeBandit("popularity")), "ranker": ("3", FakeRanker())}
    with make_client(settings, champions=champions, online=RaisingStore()) as client:
        body = client.post("/rank", json={"query": "red shoes", "user_id": "u1"}).json()
        assert body["degraded"] is True and body["policy_version"] == "7"
        assert len(body["items"]) == 5
        assert client.get("/health").json()["degraded_requests"] == 1


def test_champions_drive_policy_and_order(settings):
    class Store:
        def get(self, service, entity_rows):
            return [{"q_n_requests": 3.0, "s_reward_rate": 0.2, "price": None} for _ in entity_rows]

    champions = {"bandit": ("7", FakeBandit("structured")), "ranker": ("3", FakeRanker())}
    settings = settings.model_copy(update={"position_explore_rate": 0.0})  # no shuffled pages: order is the ranker's
    with make_client(settings, champions=champions, online=Store()) as client:
        picks = [client.post("/rank", json={"query": "red leather shoes", "user_id": "u", "k": 3}).json()
                 for _ in range(30)]
    structured = [p for p in picks if p["strategy"] == "structured"]
    assert len(structured) >= 20 and all(p["propensity"] == pytest.approx(0.9) for p in structured)
    assert all(not p["degraded"] for p in picks)
    prices = [float(it["title"].rsplit(" ", 1)[1]) for it in structured[0]["items"]]   # i<n> costs 10 + n
    assert prices == sorted(prices)          # the (fake) ranker's cheapest-first order, catalog price filled in


def test_in_process_scorer_is_reproducible_per_request_id(settings):
    clock = iter(T0 + timedelta(minutes=m) for m in range(100))
    scorer = Scorer(settings, feast_repo=settings.home / "none", clock=lambda: next(clock),
                    champion_loader=lambda f: None, event_log=EventLog(settings.raw_dir, flush_every=10_000))
    scorer.load()
    req = RankRequest(query="black bags", user_id="u1", request_id="replay-1", k=5)
    a, b = scorer.rank(req), scorer.rank(req)
    assert (a.strategy, [i.item_id for i in a.items]) == (b.strategy, [i.item_id for i in b.items])
    scorer.events.flush()
    ts = read_events(settings.raw_dir, "requests")["ts"].sort_values().tolist()
    # the simulated clock: load() read minute 0, the two requests minutes 1 and 2
    assert ts == [pd.Timestamp(T0 + timedelta(minutes=m)) for m in (1, 2)]


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_position_exploration_shuffles_and_flags_pages(settings, rate):
    champions = {"ranker": ("3", FakeRanker())}
    base = settings.model_copy(update={"position_explore_rate": 0.0})
    explored = settings.model_copy(update={"position_explore_rate": rate})
    pages = {}
    for name, s in (("base", base), ("explored", explored)):
        scorer = Scorer(s, feast_repo=s.home / "none", clock=lambda: T0, champion_loader=champions.get,
                        event_log=EventLog(s.raw_dir, flush_every=10_000))
        scorer.load()
        pages[name] = [scorer.rank(RankRequest(query="leather", user_id="u", request_id=f"p{i}", k=5))
                       for i in range(20)]
        if name == "explored":
            scorer.events.flush()
    flags = read_events(settings.raw_dir, "impressions")["position_randomized"]
    assert len(flags) == 100 and bool(flags.all()) == (rate == 1.0) and bool(flags.any()) == (rate == 1.0)
    for a, b in zip(pages["base"], pages["explored"]):
        ids_a, ids_b = [i.item_id for i in a.items], [i.item_id for i in b.items]
        assert sorted(ids_a) == sorted(ids_b)            # the same page, only the order may change
    changed = sum([i.item_id for i in a.items] != [i.item_id for i in b.items]
                  for a, b in zip(pages["base"], pages["explored"]))
    assert (changed >= 15) if rate == 1.0 else changed == 0
