"""dbt project end to end on the tiny factory data: real dbt-duckdb builds, marts read back from Parquet."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from ml.dbt_runner import MARTS, DbtBuildError, build
from ml.events.store import write_events
from ml.features import ITEM_FEATURES, QUERY_FEATURES, QUERY_ITEM_FEATURES, STRATEGY_FEATURES
from ml.text import normalize_query
from tests.factories import INTERVAL_END, INTERVAL_START, sample_frames, write_sample_events

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2] / "dbt_project"

COLUMNS = {
    "dim_items": ["item_id", "title", "description", "category", "brand", "color", "material", "price",
                  "created_at", "event_timestamp"],
    "feat_query_daily": ["query_norm", "event_timestamp", *QUERY_FEATURES],
    "feat_strategy_daily": ["strategy", "event_timestamp", *STRATEGY_FEATURES],
    "feat_item_daily": ["item_id", "event_timestamp", *ITEM_FEATURES],
    "feat_query_item_daily": ["query_norm", "item_id", "event_timestamp", *QUERY_ITEM_FEATURES],
    "label_bandit": ["request_id", "event_timestamp", "query_norm", "device", "hour", "strategy", "strategies",
                     "budgets", "propensity", "reward", "policy_version", "probe_counts", "probe_scores"],
    "label_ranker": ["request_id", "event_timestamp", "query_norm", "item_id", "position", "strategy",
                     "retrieval_score", "lexical_score", "semantic_score", "memory_score", "popularity_score",
                     "position_randomized", "label"],
    "label_conversion": ["request_id", "item_id", "query_norm", "event_timestamp", "has_atc", "elapsed_hours",
                         "converted_observed", "purchase_delay_hours", "matured"],
}
GRAINS = {
    "dim_items": ["item_id"],
    "feat_query_daily": ["query_norm", "event_timestamp"],
    "feat_strategy_daily": ["strategy", "event_timestamp"],
    "feat_item_daily": ["item_id", "event_timestamp"],
    "feat_query_item_daily": ["query_norm", "item_id", "event_timestamp"],
    "label_bandit": ["request_id"],
    "label_ranker": ["request_id", "item_id"],
    "label_conversion": ["request_id", "item_id"],
}
DAY1_END = pd.Timestamp("2024-03-01 23:59:59.999999", tz="UTC")
DAY2_END = pd.Timestamp("2024-03-02 23:59:59.999999", tz="UTC")


def _build(home: Path, **kw):
    return build(PROJECT, target="duckdb", raw_dir=home / "raw", marts_dir=home / "marts",
                 warehouse_path=home / "warehouse.duckdb", **kw)


def _read(home: Path, mart: str) -> pd.DataFrame:
    return pd.read_parquet(home / "marts" / f"{mart}.parquet")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("dbt")
    write_sample_events(home / "raw")
    result = _build(home, interval_end=INTERVAL_END)
    return home, result


def test_build_reports_every_mart_with_rows(built):
    _, result = built
    assert set(MARTS) <= set(result.models)
    assert all(result.models[m].rows for m in MARTS), result.row_counts
    assert result.tests_passed > 50  # schema tests + unit tests ran inside `dbt build`
    assert not any((PROJECT / d).exists() for d in ("target", "logs")), "dbt wrote into the repository"


@pytest.mark.parametrize("mart", MARTS)
def test_mart_columns_and_grain(built, mart):
    home, _ = built
    frame = _read(home, mart)
    assert list(frame.columns) == COLUMNS[mart]
    assert not frame.duplicated(GRAINS[mart]).any()
    assert str(frame["event_timestamp"].dt.tz) == "UTC"
    assert (frame["event_timestamp"] < pd.Timestamp(INTERVAL_END)).all()


def test_delayed_purchase_is_attributed(built):
    home, _ = built
    ranker = _read(home, "label_ranker").set_index(["request_id", "item_id"])["label"]
    assert ranker[("r1", "i1")] == 3 and ranker[("r1", "i2")] == 0 and ranker[("r4", "i6")] == 2
    bandit = _read(home, "label_bandit").set_index("request_id")
    assert bandit.loc["r1", "reward"] == 4 and bandit.loc["r3", "reward"] == 0
    assert bandit.loc["r1", "strategy"] == "lexical" and bandit.loc["r1", "query_norm"] == "red shoe"
    conv = _read(home, "label_conversion").set_index(["request_id", "item_id"])
    r1 = conv.loc[("r1", "i1")]
    assert (r1.has_atc, r1.converted_observed, r1.matured) == (1, 1, 0)
    assert r1.purchase_delay_hours == pytest.approx(22 + 59 / 60)
    assert r1.elapsed_hours == pytest.approx(37 + 59 / 60)


def test_events_after_interval_end_are_excluded(built):
    home, _ = built
    assert "r6" not in set(_read(home, "label_bandit")["request_id"])
    assert "r6" not in set(_read(home, "label_ranker")["request_id"])
    # r5's purchase lands at 01:00 after interval_end: click only
    conv = _read(home, "label_conversion").set_index(["request_id", "item_id"])
    assert conv.loc[("r5", "i3"), "converted_observed"] == 0
    assert pd.isna(conv.loc[("r5", "i3"), "purchase_delay_hours"])
    items = _read(home, "dim_items").set_index("item_id")
    assert "i7" not in items.index
    assert items.loc["i1", "price"] == 49.0  # newest catalog row wins
    assert items.loc["i1", "created_at"] == pd.Timestamp("2024-02-20 09:00", tz="UTC")


def test_feature_rows_are_point_in_time(built):
    home, _ = built
    item = _read(home, "feat_item_daily").set_index(["item_id", "event_timestamp"])
    # i1: the purchase of day 1's click arrives on day 2, so day 1's row has none
    assert item.loc[("i1", DAY1_END), "i_purchase_rate"] == pytest.approx(1 / 11)
    assert item.loc[("i1", DAY2_END), "i_purchase_rate"] == pytest.approx(2 / 12)
    assert item.loc[("i1", DAY2_END), "i_impressions"] == 2
    assert ("i6", DAY1_END) not in item.index  # created on day 2
    q = _read(home, "feat_query_daily").set_index(["query_norm", "event_timestamp"])
    assert q.loc[("red shoe", DAY1_END), "q_n_requests"] == 2
    assert q.loc[("red shoe", DAY2_END), "q_n_requests"] == 3
    assert q.loc[("red shoe", DAY1_END), "q_rate_lexical"] == pytest.approx((0.5 + 1) / 11)
    assert q.loc[("red shoe", DAY2_END), "q_rate_lexical"] == pytest.approx((1.5 + 1) / 12)
    assert q.loc[("red shoe", DAY1_END), "q_len_tokens"] == 2


def test_rerun_gives_identical_marts(built):
    home, _ = built
    before = {m: _read(home, m) for m in MARTS}
    _build(home, interval_end=INTERVAL_END)
    for m in MARTS:
        pd.testing.assert_frame_equal(_read(home, m), before[m])


def test_missing_table_uses_empty_placeholder(tmp_path):
    """Day 1 only, and no engagements table at all: builds, with zero labels and no fake rows."""
    frames = sample_frames()
    for table, frame in frames.items():
        if table != "engagements":
            write_events(tmp_path / "raw", table, frame, "factory")
    day1_end = INTERVAL_START + pd.Timedelta(days=1)
    result = _build(tmp_path, interval_end=day1_end)
    assert not (tmp_path / "raw" / "engagements").exists()
    assert result.models["label_conversion"].rows == 0
    ranker = _read(tmp_path, "label_ranker")
    assert set(ranker["request_id"]) == {"r1", "r2", "r3"} and (ranker["label"] == 0).all()
    assert set(_read(tmp_path, "feat_item_daily")["event_timestamp"]) == {DAY1_END}


def test_failing_dbt_test_raises_with_the_node(tmp_path):
    frames = sample_frames()
    frames["decisions"].loc[0, "propensity"] = 0.0
    for table, frame in frames.items():
        write_events(tmp_path / "raw", table, frame, "factory")
    with pytest.raises(DbtBuildError) as err:
        _build(tmp_path, interval_end=INTERVAL_END, select=["stg_raw__decisions"])
    assert any("propensity" in node for node, _, _ in err.value.failures)
    assert "propensity" in str(err.value)


TRICKY = [
    "Red Shoes", "  red   SHOES!! ", "boxes", "classes", "lenses", "glass", "bus", "gas", "xes", "oss",
    "dress shoes, size 10s", "Kids' T-Shirts & Tops", "café crème", "naïve résumé", "ÉCHARPES", "über-boots",
    "a\tb\nc", "", "   ", "!!!", "USB-C cables (2-pack)", "100% cotton sheets", "iphones12", "zzzs", "ss",
    "fizzes", "foxes", "quizzes", "bass", "yes", "news", "this is", "the buses' seats", "Ｆｕｌｌ width",
    # spelling variants (ml.text.SPELLING_VARIANTS), alone, plural, inside words, next to punctuation
    "Colour", "colours", "grey vs GRAY", "Grays", "grayson", "t-shirt", "TShirts", "tee", "tees", "Tee-Shirt",
    "hoody", "hoodies", "jewellery box", "colourful", "gray-blue tshirt!", "tea", "tees-shirts",
]


def test_normalize_query_macro_matches_python(tmp_path):
    """Render the dbt macro with `dbt compile --inline`, run the SQL in DuckDB, compare with Python."""
    from dbt.cli.main import dbtRunner

    from ml.environ import temporary_environ as _env

    env = {"LTRR_RAW_DIR": str(tmp_path / "raw"), "LTRR_MARTS_DIR": str(tmp_path / "marts"),
           "LTRR_WAREHOUSE_PATH": str(tmp_path / "w.duckdb")}
    with _env(env):
        res = dbtRunner().invoke([
            "compile", "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT), "--quiet",
            "--no-send-anonymous-usage-stats",
            "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
            "--vars", '{"interval_end": "2024-03-03 00:00:00"}',
            "--inline", "select q, {{ normalize_query('q') }} as n from qs",
        ])
    assert res.success, res.exception
    sql = res.result.results[0].node.compiled_code
    con = duckdb.connect()
    con.execute("create table qs (i integer, q varchar)")
    con.executemany("insert into qs values (?, ?)", list(enumerate(TRICKY)))
    got = dict(con.execute(f"select q, n from ({sql})").fetchall())
    expected = {q: normalize_query(q) for q in TRICKY}
    assert got == expected
