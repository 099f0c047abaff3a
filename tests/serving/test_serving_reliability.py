"""Metrics, limits and degradation of the scorer app: /metrics, 413/422/401 at the boundary, a store that raises,
a champion that fails to load on reload. Champions and stores are fakes injected through the Scorer's hooks."""

from __future__ import annotations

from typing import get_args

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ml.settings import FAMILIES
from serving.app import create_app
from serving.schemas import Family
from tests.serving.test_serving_app import (
    AUTH,
    FakeBandit,
    FakeRanker,
    RaisingStore,
    make_client,
    make_settings,
)


@pytest.fixture()
def settings(tmp_path):
    return make_settings(tmp_path)

RANK = {"query": "red shoes", "user_id": "u1"}


def samples(client) -> dict[tuple[str, tuple], float]:
    """Every sample on /metrics as {(name, sorted labels): value}."""
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(snap: dict, name: str, **labels) -> float:
    return snap.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_latency_versions_and_per_app_registry(settings):
    champions = {"bandit": ("7", FakeBandit()), "ranker": ("3", FakeRanker())}
    with make_client(settings, champions=champions) as a, make_client(settings) as b:   # two apps, one process
        for _ in range(3):
            assert a.post("/rank", json=RANK).status_code == 200
        assert a.post("/rank", json={**RANK, "k": 0}).status_code == 422
        snap = samples(a)
        assert value(snap, "ltrr_http_request_duration_seconds_count", endpoint="/rank", method="POST",
                     status="200") == 3
        assert value(snap, "ltrr_http_errors_total", endpoint="/rank", kind="client") == 1
        assert value(snap, "ltrr_model_version_info", family="bandit", version="7") == 1
        assert value(snap, "ltrr_model_version_info", family="ranker", version="3") == 1
        assert value(snap, "ltrr_model_version_info", family="q2e", version="none") == 1
        assert value(snap, "ltrr_reloads_total", outcome="ok") == 1
        assert value(snap, "ltrr_degraded_responses_total") == 0
        # the other app counts only its own traffic
        snap_b = samples(b)
        assert value(snap_b, "ltrr_http_request_duration_seconds_count", endpoint="/rank", method="POST",
                     status="200") == 0
        assert value(snap_b, "ltrr_model_version_info", family="bandit", version="none") == 1
        # an unknown path is one series, whatever the path
        a.get("/no/such/path/1")
        a.get("/no/such/path/2")
        assert value(samples(a), "ltrr_http_errors_total", endpoint="unmatched", kind="client") == 2


def test_degraded_responses_are_counted_when_the_store_raises(settings):
    champions = {"bandit": ("7", FakeBandit("popularity")), "ranker": ("3", FakeRanker())}
    with make_client(settings, champions=champions, online=RaisingStore()) as client:
        bodies = [client.post("/rank", json=RANK).json() for _ in range(4)]
        assert all(b["degraded"] and len(b["items"]) == 5 for b in bodies)   # answered from defaults
        assert value(samples(client), "ltrr_degraded_responses_total") == 4
        assert client.get("/health").json()["degraded_requests"] == 4


def test_degraded_when_the_store_cannot_even_be_opened(settings):
    from fastapi.testclient import TestClient

    from serving.scorer import Scorer
    from tests.serving.test_serving_app import T0

    def broken_store():
        raise ConnectionError("redis://127.0.0.1:6379 refused")

    champions = {"ranker": ("3", FakeRanker())}
    factory = lambda: Scorer(settings, feast_repo=settings.home / "none", champion_loader=champions.get,
                             online_factory=broken_store, clock=lambda: T0)
    with TestClient(create_app(settings, settings.home / "none", scorer_factory=factory)) as client:
        body = client.post("/rank", json=RANK).json()
        assert body["degraded"] is True and len(body["items"]) == 5
        assert value(samples(client), "ltrr_degraded_responses_total") == 1


def test_healthy_store_is_not_degraded(settings):
    class Store:
        def get(self, service, rows):
            return [{"price": 1.0} for _ in rows]

    with make_client(settings, champions={"ranker": ("3", FakeRanker())}, online=Store()) as client:
        assert client.post("/rank", json=RANK).json()["degraded"] is False
        assert value(samples(client), "ltrr_degraded_responses_total") == 0


class BrokenRanker:
    """A version whose artifacts load into something serving cannot call."""


@pytest.mark.parametrize("new_ranker", ["raises", "broken", "alias_gone"])
def test_reload_keeps_the_previous_champion_when_the_new_one_is_broken(settings, new_ranker):
    state = {"ranker": ("3", FakeRanker()), "bandit": ("7", FakeBandit())}

    def loader(family):
        got = state.get(family)
        if isinstance(got, Exception):
            raise got
        return got

    with make_client(settings, champions=loader) as client:
        assert client.get("/models").json()["champions"]["ranker"] == "3"
        state["bandit"] = ("8", FakeBandit("semantic"))   # a good new bandit in the same reload
        state["ranker"] = {"raises": OSError("models:/ltrr-ranker@champion: artifact missing"),
                           "broken": ("4", BrokenRanker()), "alias_gone": None}[new_ranker]
        r = client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["champions"]["ranker"] == "3" and body["champions"]["bandit"] == "8"
        assert set(body["load_errors"]) == {"ranker"} and "kept v3" in body["load_errors"]["ranker"]
        assert client.get("/models").json()["load_errors"] == body["load_errors"]
        ranked = client.post("/rank", json=RANK)
        assert ranked.status_code == 200 and ranked.json()["policy_version"] == "8"
        snap = samples(client)
        assert value(snap, "ltrr_reloads_total", outcome="kept_previous") == 1
        assert value(snap, "ltrr_champion_load_failures_total", family="ranker") == 1
        assert value(snap, "ltrr_model_version_info", family="ranker", version="3") == 1
        assert value(snap, "ltrr_model_version_info", family="ranker", version="4") == 0
        # the next good reload clears the error
        state["ranker"] = ("5", FakeRanker())
        assert client.post("/admin/reload", headers=AUTH).json() | {"loaded_at": None} == {
            "champions": {**{f: None for f in FAMILIES}, "ranker": "5", "bandit": "8"},
            "loaded_at": None, "load_errors": {}}


def test_failed_reload_is_500_and_the_old_state_serves_on(settings, monkeypatch):
    from serving.scorer import Scorer

    with make_client(settings, champions={"bandit": ("7", FakeBandit())}) as client:
        def boom(self):
            raise OSError("catalog unreadable")
        monkeypatch.setattr(Scorer, "_read_catalog", boom)
        r = client.post("/admin/reload", headers=AUTH)
        assert r.status_code == 500 and "previous champions still serving" in r.json()["detail"]
        assert client.post("/rank", json=RANK).json()["policy_version"] == "7"
        snap = samples(client)
        assert value(snap, "ltrr_reloads_total", outcome="failed") == 1
        assert value(snap, "ltrr_http_errors_total", endpoint="/admin/reload", kind="server") == 1


def test_cold_start_family_that_fails_is_reported_not_fatal(settings):
    def loader(family):
        if family == "q2e":
            raise RuntimeError("registry down")

    with make_client(settings, champions=loader) as client:
        models = client.get("/models").json()
        assert models["champions"]["q2e"] is None
        assert "registry down" in models["load_errors"]["q2e"] and "serving without" in models["load_errors"]["q2e"]
        assert client.post("/rank", json=RANK).status_code == 200


# ------------------------------------------------------------------------------------------ limits and validation

def test_body_size_limit_is_413(settings):
    with make_client(settings) as client:
        big = '{"query": "red", "user_id": "u1", "session_id": "' + "x" * 20_000 + '"}'
        r = client.post("/rank", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "larger than" in r.json()["detail"]

        def chunks():   # no Content-Length: the limit applies while streaming
            for _ in range(40):
                yield b"x" * 1000

        r = client.post("/rank", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "larger than" in r.json()["detail"]
        snap = samples(client)
        assert value(snap, "ltrr_http_errors_total", endpoint="/rank", kind="client") == 2
        assert value(snap, "ltrr_http_request_duration_seconds_count", endpoint="/rank", method="POST",
                     status="413") == 2
        assert client.post("/rank", json=RANK).status_code == 200    # a normal body still passes


@pytest.mark.parametrize("patch, field", [
    ({"user_id": ""}, "user_id"),
    ({"user_id": "u" * 129}, "user_id"),
    ({"session_id": "s" * 129}, "session_id"),
    ({"locale": "x" * 36}, "locale"),
    ({"request_id": ""}, "request_id"),
    ({"k": 101}, "k"),
    ({"k": "ten"}, "k"),
])
def test_more_invalid_rank_requests_name_the_field(settings, patch, field):
    with make_client(settings) as client:
        r = client.post("/rank", json={**RANK, **patch})
        assert r.status_code == 422 and r.json()["message"].startswith(f"invalid request: {field}:")


@pytest.mark.parametrize("path, body, field", [
    ("/admin/rollback", {"family": "rankers"}, "family"),
    ("/admin/rollback", {"family": "ranker", "force": True}, "force"),
    ("/admin/rollback", {}, "family"),
    ("/admin/promote", {"family": "ranker"}, "version"),
    ("/admin/promote", {"family": "ranker", "version": "latest"}, "version"),
    ("/admin/promote", {"family": "ranker", "version": "2", "reason": "r" * 501}, "reason"),
])
def test_admin_bodies_are_validated(settings, path, body, field):
    with make_client(settings) as client:
        r = client.post(path, json=body, headers=AUTH)
        assert r.status_code == 422, r.text
        assert r.json()["message"].startswith(f"invalid request: {field}:")


@pytest.mark.parametrize("path, body", [("/admin/rollback", {"family": "ranker"}),
                                        ("/admin/promote", {"family": "ranker", "version": "2"})])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic x"}])
def test_alias_moves_require_the_token(settings, path, body, headers):
    with make_client(settings) as client:
        assert client.post(path, json=body, headers=headers).status_code == 401


def test_schema_families_match_settings():
    assert get_args(Family) == FAMILIES
