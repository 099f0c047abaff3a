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
