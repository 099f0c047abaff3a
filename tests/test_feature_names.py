"""ml/features.py (feature names, defined once) agrees with the Feast repo's views and services."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ml.feature_store import feast_env, load_repo
from ml.features import FEATURE_SERVICES, FEATURE_VIEWS, feature_refs

REPO = Path(__file__).resolve().parents[1] / "feature_repo"

MART_OF_VIEW = {
    "query_stats_fv": "feat_query_daily",
    "strategy_stats_fv": "feat_strategy_daily",
    "item_stats_fv": "feat_item_daily",
    "query_item_stats_fv": "feat_query_item_daily",
    "item_catalog_fv": "dim_items",
}
ENTITIES_OF_VIEW = {
    "query_stats_fv": ["query"],
    "strategy_stats_fv": ["strategy"],
    "item_stats_fv": ["item"],
    "query_item_stats_fv": ["query", "item"],
    "item_catalog_fv": ["item"],
}
STRING_FEATURES = {"category", "brand", "color", "material"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("names")
    return load_repo(REPO, feast_env(feast_dir=base / "feast", marts_dir=base / "marts")), base / "marts"


def test_feature_views_match_ml_features(repo):
    contents, _ = repo
    views = {fv.name: tuple(f.name for f in fv.features) for fv in contents.feature_views}
    assert views == FEATURE_VIEWS


def test_feature_services_match_ml_features(repo):
    contents, _ = repo
    services = {s.name: tuple(p.name for p in s.feature_view_projections) for s in contents.feature_services}
    assert services == FEATURE_SERVICES
    for s in contents.feature_services:
        refs = [f"{p.name}:{f.name}" for p in s.feature_view_projections for f in p.features]
        assert refs == feature_refs(s.name)


def test_bare_feature_names_are_unique_within_each_service():
    # historical_features/online lookups use bare names (full_feature_names=False): no two views may collide.
    for service in FEATURE_SERVICES:
        names = [ref.split(":", 1)[1] for ref in feature_refs(service)]
        assert len(names) == len(set(names)), service


def test_dtypes_entities_and_sources(repo):
    from feast.types import Float64, String

    contents, marts = repo
    for fv in contents.feature_views:
        for f in fv.features:
            assert f.dtype == (String if f.name in STRING_FEATURES else Float64), (fv.name, f.name)
        assert fv.entities == ENTITIES_OF_VIEW[fv.name]
        assert fv.batch_source.timestamp_field == "event_timestamp"
        assert Path(fv.batch_source.path) == marts.resolve() / f"{MART_OF_VIEW[fv.name]}.parquet"
        assert fv.ttl is not None and fv.ttl.total_seconds() > 0
    entities = {e.name: e.join_key for e in contents.entities if not e.name.startswith("__")}
    assert entities == {"query": "query_norm", "item": "item_id", "strategy": "strategy"}


def test_repo_is_loaded_afresh_for_each_marts_dir(tmp_path):
    # data_sources.py reads LTRR_MARTS_DIR at import: a second load in the same process must not reuse paths.
    a = load_repo(REPO, feast_env(feast_dir=tmp_path / "f", marts_dir=tmp_path / "a"))
    b = load_repo(REPO, feast_env(feast_dir=tmp_path / "f", marts_dir=tmp_path / "b"))
    pa = {s.name: Path(s.path).parent for s in a.data_sources}
    pb = {s.name: Path(s.path).parent for s in b.data_sources}
    assert set(pa.values()) == {(tmp_path / "a").resolve()}
    assert set(pb.values()) == {(tmp_path / "b").resolve()}
    assert not {"entities", "data_sources", "feature_views", "feature_services"} & set(sys.modules)


def test_load_refuses_without_marts_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("LTRR_MARTS_DIR", raising=False)
    with pytest.raises(RuntimeError, match="LTRR_MARTS_DIR"):
        load_repo(REPO, {"LTRR_FEAST_DIR": str(tmp_path)})
