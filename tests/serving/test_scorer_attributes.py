"""The scorer fills every attribute the attributes champion extracts, never a known catalog value."""

from __future__ import annotations

from typing import ClassVar

import pandas as pd

from serving.scorer import Scorer


class FakeExtractor:
    def __init__(self, value: str, accept: bool) -> None:
        self.value, self.accept = value, accept

    def extract(self, texts):
        n = len(texts)
        return pd.DataFrame({"value": [self.value] * n, "confidence": [0.9] * n, "uncertainty": [0.01] * n,
                             "level": ["low"] * n, "accepted": [self.accept] * n})


class FakeModel:
    attribute = "color"
    extractors: ClassVar[dict] = {"color": FakeExtractor("red", True), "brand": FakeExtractor("Acme", True),
                                  "material": FakeExtractor("wool", False)}


def test_fills_every_accepted_attribute_of_missing_values_only():
    catalog = pd.DataFrame({"item_id": ["a", "b"], "title": ["x", "y"], "description": ["", None],
                            "color": [None, "blue"], "brand": [None, None], "material": [None, "steel"]})
    got = Scorer._attribute_predictions(FakeModel(), catalog)
    assert got == {"a": {"color": "red", "brand": "Acme"}, "b": {"brand": "Acme"}}
    assert Scorer._attribute_predictions(None, catalog) is None


def test_serving_fills_exactly_what_the_backfill_file_holds(tmp_path):
    """Train/serve parity: the scorer's fill and the ranker's training file (``item_attributes.parquet``) come
    from one acceptance rule."""
    import sys
    from pathlib import Path

    from ml.backfill import (
        backfill_attributes,
        filled_attributes,
        read_item_attributes,
        write_item_attributes,
    )
    from ml.families.attributes import FAMILY

    sys.path.insert(0, str(Path(__file__).parents[1] / "ml" / "families"))
    from test_attributes import catalog

    model = FAMILY.train(catalog(n=600, seed=1), {"n_bootstrap": 2, "attributes": ["color", "brand"]})
    items = catalog(n=200, seed=2, unknown_share=0.3).drop(columns=["silent", "true_color"])
    write_item_attributes(backfill_attributes(model, items, "5"), tmp_path)
    training_side = filled_attributes(read_item_attributes(tmp_path))
    serving_side = Scorer._attribute_predictions(model, items, "5")
    assert serving_side == training_side and sum(len(v) for v in serving_side.values()) > 20


class LowConfidenceExtractor(FakeExtractor):
    def extract(self, texts):
        return super().extract(texts).assign(confidence=0.3)


def test_no_serving_only_confidence_floor():
    """A value the model's per-level thresholds accept is served even at a low ensemble confidence (a stated
    brand among 30 classes can be right at 0.3): serving adds no floor the training file does not have."""
    model = FakeModel()
    model.extractors = {"brand": LowConfidenceExtractor("Acme", True)}
    catalog = pd.DataFrame({"item_id": ["a"], "title": ["Acme thing"], "brand": [None]})
    assert Scorer._attribute_predictions(model, catalog) == {"a": {"brand": "Acme"}}
