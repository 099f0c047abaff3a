"""The simulator's configuration: one frozen dataclass, every field with a sensible default."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from ml.sim.vocab import HEAD_QUERIES

QUERY_TYPES: tuple[str, ...] = ("head", "exact", "attribute", "thematic")


@dataclass(frozen=True)
class SimConfig:
    """Everything that shapes the simulated world; the same config always yields the same frames."""

    seed: int = 7
    n_items: int = 1500                      # initial catalog, created at ``start`` 00:00 UTC
    n_users: int = 500
    requests_per_day: int = 1500
    start: date = date(2026, 1, 1)
    new_items_per_day: int = 15              # cold-start items created on each later day
    hidden_attribute_share: float = 0.3      # per attribute (brand, color, material): share shown as None
    # share of requests per query type
    query_mix: dict[str, float] = field(default_factory=lambda: {
        "head": 0.35, "exact": 0.20, "attribute": 0.25, "thematic": 0.20})
    n_head_queries: int = 40
    head_set_size: int = 15                  # latent items per head query (5 grade 3, 5 grade 2, rest 1)
    typo_rate: float = 0.25                  # share of exact queries with a one-letter typo in the model name
    title_color_share: float = 0.6           # share of titles that mention the item's color
    # text noise (see ml/sim/__init__.py "Text noise"); none of it changes any attribute, query or grade
    title_color_variant_share: float = 0.0   # of color-mentioning titles: a shade (60%), a code (20%), a typo (20%)
    title_second_color_share: float = 0.0    # of color-mentioning titles: "Black/White", the item's color first
    description_distractor_share: float = 0.0  # of items: one description sentence names another color
    # of items: the description also names one of its theme's shopper words (the words thematic queries use;
    # vocab.THEME_SHOPPER_WORDS): the rest can be matched to such a query only through co-occurrence
    shopper_word_share: float = 0.15
    high_quality: float = 0.7                # latent quality at or above which an item counts as high quality
    session_mean_requests: float = 2.5
    # engagement model
    examination_decay: dict[str, float] = field(default_factory=lambda: {
        "desktop": 0.8, "mobile": 1.0, "app": 0.9})   # P(examine position p) = p ** -decay[device]
    click_by_grade: tuple[float, float, float, float] = (0.02, 0.12, 0.35, 0.65)  # P(click | examined, grade)
    fast_purchase_share: float = 0.35        # purchases within the hour after add-to-cart
    purchase_delay_mean_days: float = 2.0    # the rest: exponential delay, at least 1 hour ...
    purchase_delay_cap_days: float = 14.0    # ... and at most this

    def __post_init__(self) -> None:
        if self.n_items < 50 or self.n_users < 1 or self.requests_per_day < 0 or self.new_items_per_day < 0:
            raise ValueError("SimConfig: need n_items >= 50, n_users >= 1, non-negative daily counts")
        if not 0.0 <= self.hidden_attribute_share <= 1.0:
            raise ValueError("SimConfig.hidden_attribute_share must be within [0, 1]")
        if set(self.query_mix) - set(QUERY_TYPES) or sum(self.query_mix.values()) <= 0:
            raise ValueError(f"SimConfig.query_mix: keys among {QUERY_TYPES}, positive total")
        if not 1 <= self.n_head_queries <= len(HEAD_QUERIES):
            raise ValueError(f"SimConfig.n_head_queries must be within 1..{len(HEAD_QUERIES)}")
        if not 1 <= self.head_set_size <= self.n_items:
            raise ValueError("SimConfig.head_set_size must be within 1..n_items")
        for name in ("title_color_share", "title_color_variant_share", "title_second_color_share",
                     "description_distractor_share", "shopper_word_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SimConfig.{name} must be within [0, 1]")
        if not 0 < self.purchase_delay_cap_days:
            raise ValueError("SimConfig.purchase_delay_cap_days must be positive")
