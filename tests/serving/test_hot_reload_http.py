"""Hot reload under load over real HTTP: uvicorn serves the app in a thread on a free port, client threads fire
/rank requests while the admin API reloads a new champion several times. Zero failed requests, and every
version that was champion during the run is actually served."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from serving.app import create_app
from serving.scorer import Scorer
from tests.serving.test_serving_app import AUTH, T0, FakeBandit, FakeRanker, make_settings


@pytest.fixture()
def settings(tmp_path):
    return make_settings(tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:   # not the main thread
        pass


def test_hot_reload_under_http_load_fails_no_request(settings):
    champion = {"version": 1}

    def loader(family):
        v = champion["version"]
        if family == "bandit":
            return str(v), FakeBandit(("lexical", "semantic", "structured")[v % 3])
        if family == "ranker":
            time.sleep(0.2)   # a reload takes a while (real ones: seconds) while requests keep coming
            return str(v), FakeRanker()
        return None

    factory = lambda: Scorer(settings, feast_repo=settings.home / "none", champion_loader=loader,
                             clock=lambda: T0)
    port = _free_port()
    server = _Server(uvicorn.Config(create_app(settings, settings.home / "none", scorer_factory=factory),
                                    host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)

    failures: list[str] = []
    served: dict[str, int] = {}
    done_at: list[float] = []
    reload_windows: list[tuple[float, float]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(worker: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            i = 0
            while not stop.is_set():
                try:
                    r = http.post("/rank", json={"query": f"red leather shoes {i % 5}", "user_id": f"u{worker}"})
                    ok = r.status_code == 200 and len(r.json()["items"]) == 5
                    with lock:
                        if ok:
                            v = r.json()["policy_version"]
                            served[v] = served.get(v, 0) + 1
                            done_at.append(time.monotonic())
                        else:
                            failures.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(repr(exc))
                i += 1

    try:
        workers = [threading.Thread(target=client_loop, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        time.sleep(0.5)
        with httpx.Client(base_url=base, timeout=60, headers=AUTH) as admin:
            for v in (2, 3):
                champion["version"] = v
                t0 = time.monotonic()
                r = admin.post("/admin/reload")
                reload_windows.append((t0, time.monotonic()))
                assert r.status_code == 200 and r.json()["champions"]["bandit"] == str(v), r.text
                time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join(timeout=30)
        with httpx.Client(base_url=base, timeout=30) as http:
            metrics = http.get("/metrics").text
    finally:
        stop.set()
        server.should_exit = True
        thread.join(timeout=30)

    assert failures == []
    assert set(served) == {"1", "2", "3"}, served          # the old and each new champion answered requests
    assert sum(served.values()) >= 20
    # requests kept completing while a reload was in progress (it did not stop the world)
    assert any(a < t < b for t in done_at for a, b in reload_windows)
    assert 'ltrr_reloads_total{outcome="ok"} 3.0' in metrics
    assert 'ltrr_model_version_info{family="bandit",version="3"} 1.0' in metrics
