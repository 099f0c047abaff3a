"""`ltrr ranker eval-letor`: the ranker's trainer on LETOR files, its output and its errors."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from ltrr.cli import app

runner = CliRunner()


def _letor(path, n_queries: int, seed: int) -> None:
    """Grade = a known function of features 1 and 2 (feature 3 is noise); sparse rows (zeros omitted)."""
    rng = np.random.default_rng(seed)
    lines = []
    for q in range(n_queries):
        for _ in range(15):
            f = rng.random(3)
            grade = int(np.digitize(f[0] + f[1], [0.8, 1.2, 1.6]))
            feats = " ".join(f"{j + 1}:{v:.4f}" for j, v in enumerate(f) if not (j == 2 and v < 0.3))
            lines.append(f"{grade} qid:{seed}{q} {feats} # doc")
    path.write_text("\n".join(lines) + "\n")


def test_eval_letor_learns_a_known_ordering_and_prints_json(tmp_path):
    _letor(tmp_path / "train.txt", 80, seed=1)
    _letor(tmp_path / "test.txt", 30, seed=2)
    res = runner.invoke(app, ["ranker", "eval-letor", "--train", str(tmp_path / "train.txt"),
                              "--test", str(tmp_path / "test.txt"), "--trees", "40", "--leaves", "8", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["test_queries"] == 30 and out["features"] == 3
    assert out["ndcg@10"] > 0.85 and out["ndcg@1"] > 0.7
    table = runner.invoke(app, ["ranker", "eval-letor", "--train", str(tmp_path / "train.txt"),
                                "--test", str(tmp_path / "test.txt"), "--trees", "5"])
    assert table.exit_code == 0 and "NDCG@10" in table.output


def test_eval_letor_names_the_malformed_line(tmp_path):
    _letor(tmp_path / "train.txt", 5, seed=1)
    (tmp_path / "bad.txt").write_text("1 qid:1 1:0.5 2:0.1\n2 qid:1 1:0.7 2:oops\n")
    res = runner.invoke(app, ["ranker", "eval-letor", "--train", str(tmp_path / "train.txt"),
                              "--test", str(tmp_path / "bad.txt")])
    assert res.exit_code == 2
    assert "bad.txt:2" in res.output and "2:oops" in res.output


def test_eval_letor_missing_file_and_bad_objective(tmp_path):
    res = runner.invoke(app, ["ranker", "eval-letor", "--train", str(tmp_path / "nope.txt"),
                              "--test", str(tmp_path / "nope.txt")])
    assert res.exit_code == 2 and "no such file" in res.output
    # a long path is not wrapped (it can be copied), and brackets in it are not taken for markup
    deep = tmp_path / ("d" * 90) / "[draft] nope.txt"
    res = runner.invoke(app, ["ranker", "eval-letor", "--train", str(deep), "--test", str(deep)])
    assert res.exit_code == 2 and f"{deep}: no such file" in res.output
    _letor(tmp_path / "t.txt", 5, seed=1)
    res = runner.invoke(app, ["ranker", "eval-letor", "--train", str(tmp_path / "t.txt"), "--test",
                              str(tmp_path / "t.txt"), "--objective", "rank:map"])
    assert res.exit_code == 2 and "rank:map" in res.output
