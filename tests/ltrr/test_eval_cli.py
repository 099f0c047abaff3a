"""`ltrr eval judgments` on a tiny catalog whose answers are known: per-strategy, union and pipeline metrics."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ltrr.cli import app
from ltrr.eval_cli import metrics_of

sys.path.insert(0, str(Path(__file__).parents[1] / "ml" / "retrieval"))
from test_retrieval_strategies import ITEMS

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    cols = ("id", "title", "description", "category", "brand", "color", "material")
    pd.DataFrame([dict(zip(cols, r)) for r in ITEMS]).to_csv(d / "catalog.csv", index=False)
    pd.DataFrame({"query": ["red leather bag", "jogging trainers", "jogging trainers"],
                  "doc_id": ["d", "f", "e"], "rel": [3, 2, 1]}).to_csv(d / "judgments.csv", index=False)
    (d / "judgments.qrels").write_text("red_leather_bag 0 d 3\n")
    return d


def test_metrics_of_known_ranking():
    m = metrics_of(["x", "a", "y", "b"], {"a": 3, "b": 1, "z": 0})
    assert m["recall@10"] == 1.0 and m["mrr"] == 0.5
    ideal = (7 / math.log2(2) + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((7 / math.log2(3) + 1 / math.log2(5)) / ideal)


def test_eval_judgments_table_and_json(files, tmp_path):
    out = tmp_path / "res.json"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = runner.invoke(app, ["eval", "judgments", "--catalog", str(files / "catalog.csv"), "--judgments",
                            str(files / "judgments.csv"), "--tracking-uri", uri, "--output", str(out)],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "bandit_union" in r.output and "pipeline" in r.output and "ndcg@10" in r.output
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert res["n_queries"] == 2 and res["n_judgments"] == 3 and res["judged_items_not_in_catalog"] == 0
    assert m["lexical"]["recall@10"] == 1.0 and m["lexical"]["mrr"] == 1.0    # the exact titles come first
    assert m["memory"]["recall@1000"] == 0.0                                   # no q2e model from a catalog
    assert m["exploration"]["recall@1000"] == 1.0 and m["bandit_union"]["recall@1000"] == 1.0   # 10 items
    assert res["pipeline_ranker"].startswith("none")                          # empty registry: union order
    assert m["pipeline"] == m["bandit_union"]


def test_qrels_format_and_bad_files(files, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = runner.invoke(app, ["eval", "judgments", "--catalog", str(files / "catalog.csv"), "--judgments",
                            str(files / "judgments.qrels"), "--tracking-uri", uri, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["metrics"]["lexical"]["mrr"] == 1.0   # "red_leather_bag"
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"query": ["q"], "item_id": ["a"]}).to_csv(bad, index=False)
    r = runner.invoke(app, ["eval", "judgments", "--catalog", str(files / "catalog.csv"), "--judgments", str(bad)],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 2 and "no relevance column" in " ".join(r.output.split())
