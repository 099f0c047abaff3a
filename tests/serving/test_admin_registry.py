"""Rollback and manual promotion against a real MLflow registry (SQLite in a temp dir): the registry functions,
the scorer's admin endpoints (which reload what the aliases now say) and `ltrr rollback`."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ltrr.cli import app as cli_app
from ml.registry import CHAMPION, PREVIOUS_CHAMPION, _alias_version, promote_version, rollback_champion
from ml.settings import Settings
from serving.app import create_app
from serving.scorer import Scorer
from tests.serving.test_serving_app import AUTH, T0, FakeRanker, make_settings


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One registry per module (creating MLflow's tables takes seconds); each test uses its own model prefix."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _registered(tracking_uri: str, name: str, n_versions: int) -> mlflow.MlflowClient:
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.create_registered_model(name)
    for i in range(n_versions):
        client.create_model_version(name, source=f"/nowhere/{name}/{i}")   # aliases need no artifacts
    return client


def test_promote_and_rollback_move_aliases_and_record(tracking_uri, tmp_path):
    client = _registered(tracking_uri, "t1-ranker", 3)
    kw = {"reports_dir": tmp_path, "model_prefix": "t1-"}
    d1 = promote_version(tracking_uri, "ranker", "1", reason="bootstrap", **kw)
    assert (d1.version, d1.replaced_version) == ("1", None)
    assert _alias_version(client, "t1-ranker", PREVIOUS_CHAMPION) is None
    d2 = promote_version(tracking_uri, "ranker", "2", reason="hotfix", actor="alice", **kw)
    assert (d2.version, d2.replaced_version) == ("2", "1")
    assert (_alias_version(client, "t1-ranker", CHAMPION), _alias_version(client, "t1-ranker", PREVIOUS_CHAMPION)) \
        == ("2", "1")
    mv = client.get_model_version("t1-ranker", "2")
    assert mv.tags["manual_decision"] == "manual_promote" and "alice" in mv.tags["manual_reason"]
    assert "hotfix" in mv.tags["manual_reason"]

    r = rollback_champion(tracking_uri, "ranker", reason="v2 regressed", **kw)
    assert (r.action, r.version, r.replaced_version) == ("rollback", "1", "2")
    assert (_alias_version(client, "t1-ranker", CHAMPION), _alias_version(client, "t1-ranker", PREVIOUS_CHAMPION)) \
        == ("1", "2")
    record = json.loads(Path(r.record_path).read_text())
    assert record["action"] == "rollback" and record["version"] == "1" and record["reason"] == "v2 regressed"
    assert Path(r.record_path).parent == tmp_path / "decisions"
    assert "v1" in client.get_model_version("t1-ranker", "2").tags["replaced_by"]
    # a second rollback undoes the first
    assert rollback_champion(tracking_uri, "ranker", **kw).version == "2"


def test_rollback_and_promote_refuse_what_does_not_exist(tracking_uri, tmp_path):
    _registered(tracking_uri, "t2-bandit", 1)
    kw = {"reports_dir": tmp_path, "model_prefix": "t2-"}
    with pytest.raises(LookupError, match="no @previous_champion"):
        rollback_champion(tracking_uri, "bandit", **kw)
    with pytest.raises(LookupError, match="no version 9"):
        promote_version(tracking_uri, "bandit", "9", **kw)
    promote_version(tracking_uri, "bandit", "1", **kw)
    with pytest.raises(LookupError, match="no @previous_champion"):
        rollback_champion(tracking_uri, "bandit", **kw)
    assert not list((tmp_path / "decisions").glob("*rollback*"))


def _settings(tmp_path: Path, tracking_uri: str, prefix: str) -> Settings:
    return make_settings(tmp_path, mlflow_tracking_uri=tracking_uri, model_prefix=prefix)


def test_admin_rollback_and_promote_reload_the_scorer(tracking_uri, tmp_path):
    client = _registered(tracking_uri, "t3-ranker", 2)
    settings = _settings(tmp_path, tracking_uri, "t3-")

    def loader(family):   # what serving resolves: the version @champion points at (native model faked)
        if family != "ranker":
            return None
        version = _alias_version(client, "t3-ranker", CHAMPION)
        return (version, FakeRanker()) if version else None

    factory = lambda: Scorer(settings, feast_repo=settings.home / "none", champion_loader=loader,
                             clock=lambda: T0)
    with TestClient(create_app(settings, settings.home / "none", scorer_factory=factory)) as api:
        assert api.get("/models").json()["champions"]["ranker"] is None
        r = api.post("/admin/rollback", json={"family": "ranker"}, headers=AUTH)
        assert r.status_code == 409 and "no @previous_champion" in r.json()["detail"]
        assert api.post("/admin/promote", json={"family": "ranker", "version": "7"}, headers=AUTH).status_code == 404

        for v in ("1", "2"):
            r = api.post("/admin/promote", json={"family": "ranker", "version": v, "reason": "canary ok"},
                         headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.json()["champions"]["ranker"] == v and r.json()["action"] == "manual_promote"
        r = api.post("/admin/rollback", json={"family": "ranker", "reason": "p99 regression"}, headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["version"], body["replaced_version"], body["champions"]["ranker"]) == ("1", "2", "1")
        assert json.loads(Path(body["record_path"]).read_text())["actor"] == "admin-api"
        assert api.get("/models").json()["champions"]["ranker"] == "1"
        assert 'ltrr_model_version_info{family="ranker",version="1"} 1.0' in api.get("/metrics").text


def test_cli_rollback(tracking_uri, tmp_path, monkeypatch):
    client = _registered(tracking_uri, "t4-q2e", 2)
    settings = _settings(tmp_path, tracking_uri, "t4-")
    promote_version(tracking_uri, "q2e", "1", reports_dir=settings.reports_dir, model_prefix="t4-")
    promote_version(tracking_uri, "q2e", "2", reports_dir=settings.reports_dir, model_prefix="t4-")
    monkeypatch.setenv("LTRR_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("LTRR_MODEL_PREFIX", "t4-")
    runner = CliRunner()
    res = runner.invoke(cli_app, ["rollback", "q2e", "--reason", "bad memory", "--home", str(settings.home)])
    assert res.exit_code == 0, res.output
    assert "v2 -> v1" in res.output
    assert _alias_version(client, "t4-q2e", CHAMPION) == "1"
    res = runner.invoke(cli_app, ["rollback", "rankers", "--home", str(settings.home)])
    assert res.exit_code == 2 and "unknown family" in res.output
    _registered(tracking_uri, "t4-bandit", 1)
    res = runner.invoke(cli_app, ["rollback", "bandit", "--home", str(settings.home)])
    assert res.exit_code == 1 and "no @previous_champion" in res.output
