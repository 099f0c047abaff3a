"""Ranker family: the input frame, a known-answer LTR problem, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.families.base import NotEnoughData
from ml.families.ranker import FAMILY, RankerModel, ndcg_by_request, position_bias_eta, ranker_frame
from ml.features import RANKER_FEATURES


def _queries(n_queries: int, seed: int, n_items: int = 20) -> pd.DataFrame:
    """Label = a known function of two features (lexical + semantic score); logged positions are random."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        lex, sem = rng.random(n_items), rng.random(n_items)
        label = np.digitize(lex + sem, [1.0, 1.4, 1.7])
        pos = rng.permutation(n_items) + 1
        for i in range(n_items):
            rows.append({"request_id": f"s{seed}-r{q}", "position": int(pos[i]), "item_id": f"i{i}",
                         "strategy": "semantic" if i % 2 else "lexical", "lexical_score": lex[i],
                         "semantic_score": sem[i], "label": int(label[i])})
    return pd.DataFrame(rows)


class _ColumnScorer:
    """A baseline 'model' ordering by one column."""

    def __init__(self, column: str | None, seed: int = 0):
        self.column, self.rng = column, np.random.default_rng(seed)

    def score(self, X: pd.DataFrame) -> np.ndarray:
        return X[self.column].to_numpy() if self.column else self.rng.random(len(X))


@pytest.fixture(scope="module")
def trained():
    params = {**FAMILY.default_params, "n_estimators": 60, "max_depth": 4}
    return FAMILY.train(_queries(150, seed=1), params)


def test_ranker_frame_has_the_feature_columns_in_order_filled_and_one_hot():
    cands = pd.DataFrame({"strategy": ["memory", "lexical"], "lexical_score": [0.5, np.nan],
                          "i_ctr": [0.1, None], "unrelated": ["x", "y"]})
    X = ranker_frame(cands)
    assert list(X.columns) == list(RANKER_FEATURES)
    assert not X.isna().any().any()
    assert X["from_memory"].tolist() == [1.0, 0.0] and X["from_lexical"].tolist() == [0.0, 1.0]
    assert X["lexical_score"].tolist() == [0.5, 0.0] and X["i_ctr"].tolist() == [0.1, 0.0]
    assert X["qi_ctr"].tolist() == [0.0, 0.0]          # absent column -> default


def test_ndcg_of_the_ideal_and_the_reversed_order():
    frame = pd.DataFrame({"request_id": ["a"] * 3 + ["b"] * 2, "label": [3, 1, 0, 0, 0], "position": [1, 2, 3, 1, 2]})
    assert ndcg_by_request(frame, np.array([3.0, 2, 1, 0, 0])).tolist() == [1.0]   # "b" has no positive: skipped
    assert ndcg_by_request(frame, np.array([1.0, 2, 3, 0, 0]))[0] < 0.7


def test_ranker_recovers_a_known_ordering(trained):
    holdout = _queries(40, seed=2)
    m = FAMILY.evaluate(trained, holdout)
    lexical_only = FAMILY.evaluate(_ColumnScorer("lexical_score"), holdout)["ndcg@10"]
    random_order = FAMILY.evaluate(_ColumnScorer(None), holdout)["ndcg@10"]
    assert m["ndcg@10"] > 0.9
    assert m["ndcg@10"] > lexical_only + 0.05 and m["ndcg@10"] > random_order + 0.2
    # Logged positions are random here, so the model must beat the logged-order baseline by a wide margin.
    assert m["baseline_ndcg@10"] < 0.75 and m["ndcg_lift@10"] == pytest.approx(m["ndcg@10"] - m["baseline_ndcg@10"])


def test_save_load_round_trip_gives_identical_scores(trained, tmp_path):
    FAMILY.save(trained, tmp_path / "m")
    loaded = FAMILY.load(tmp_path / "m")
    assert isinstance(loaded, RankerModel) and loaded.feature_names == list(RANKER_FEATURES)
    X = ranker_frame(_queries(5, seed=3))
    np.testing.assert_array_equal(loaded.score(X), trained.score(X))


def test_too_few_requests_with_signal_is_not_enough_data():
    frame = _queries(30, seed=4)
    frame.loc[frame["request_id"] != "s4-r0", "label"] = 0      # one request with a positive label
    with pytest.raises(NotEnoughData):
        FAMILY.train(frame, FAMILY.default_params)


def _shuffled_pages(n_requests: int, eta: float, seed: int) -> pd.DataFrame:
    """Shuffled pages: relevance from lexical + semantic, clicks only where examined (P = position^-eta)."""
    frame = _queries(n_requests, seed=seed, n_items=10)
    rng = np.random.default_rng(seed)
    examined = rng.random(len(frame)) < frame["position"].to_numpy(dtype=float) ** -eta
    return frame.assign(label=np.where(examined, frame["label"], 0), position_randomized=True)


def test_position_bias_is_recovered_from_shuffled_pages():
    eta = position_bias_eta(_shuffled_pages(400, eta=1.0, seed=3))
    assert eta is not None and 0.75 < eta < 1.25
    assert position_bias_eta(_shuffled_pages(400, eta=0.0, seed=4)) < 0.25
    assert position_bias_eta(_queries(20, seed=1)) is None               # no shuffled pages: nothing to fit


def test_evaluate_weights_clicks_by_inverse_examination_when_shuffled_pages_allow():
    """Served pages: clicks go to position 1 whatever the item (the champion's order, pure position bias)."""
    served = _queries(60, seed=5, n_items=10)
    served["label"] = (served["position"] == 1).astype(int) * 2
    frame = pd.concat([served.assign(position_randomized=False), _shuffled_pages(60, eta=1.0, seed=6)])
    good = _ColumnScorer("lexical_score")
    weighted = FAMILY.evaluate(good, frame)
    assert weighted["ips_weighted"] == 1.0 and 0.5 < weighted["position_bias_eta"] < 1.5
    unweighted = FAMILY.evaluate(good, served)
    assert unweighted["ips_weighted"] == 0.0
    # the logged (biased) order looks perfect on its own clicks; the IPS weights take that advantage away
    assert unweighted["baseline_ndcg@10"] == pytest.approx(1.0)
    assert weighted["ndcg_lift@10"] > unweighted["ndcg_lift@10"]
