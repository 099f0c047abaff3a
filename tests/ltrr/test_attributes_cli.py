"""`ltrr attributes eval` on a small CSV: a table and JSON; a bad file is exit code 2 without a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ltrr.cli import app

sys.path.insert(0, str(Path(__file__).parents[1] / "ml" / "families"))
from test_attributes import catalog

runner = CliRunner()


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cat") / "catalog.csv"
    frame = catalog(n=500, seed=3).drop(columns=["silent", "true_color", "category", "price"])
    frame.rename(columns={"item_id": "id"}).to_csv(path, index=False)
    return path


def test_eval_prints_the_table_and_json(csv_file, tmp_path):
    out = tmp_path / "res.json"
    r = runner.invoke(app, ["attributes", "eval", "--catalog", str(csv_file), "--json", str(out)],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "attribute extraction" in r.output and "precision" in r.output
    res = json.loads(out.read_text())
    assert set(res["attributes"]) == {"brand", "color", "material"}
    assert res["attributes"]["brand"]["precision"] >= 0.95 and res["attributes"]["brand"]["coverage"] > 0.9
    assert res["attributes"]["color"]["precision"] >= 0.9
    assert res["attributes"]["material"]["coverage"] == 0.0          # not in the text: abstains
    assert json.loads(r.output[r.output.index("{"):]) == res


@pytest.mark.parametrize(("content", "message"), [
    ("name,title,color\na,Red shoe,red\n", "no id column"),
    ("id,name,color\na,Red shoe,red\n", "no title column"),
    ("id,title\na,Red shoe\nb,Blue shoe\n", "no attribute columns"),
    ("\x00\x01garbage", "unreadable"),
])
def test_bad_files_exit_2_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / ("bad.parquet" if message == "unreadable" else "bad.csv")
    path.write_text(content)
    r = runner.invoke(app, ["attributes", "eval", "--catalog", str(path)], env={"COLUMNS": "200"})
    assert r.exit_code == 2 and message in r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)


def test_missing_file_exits_2(tmp_path):
    r = runner.invoke(app, ["attributes", "eval", "--catalog", str(tmp_path / "nope.csv")])
    assert r.exit_code == 2 and "no such file" in r.output
