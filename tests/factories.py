"""Tiny, hand-built raw event sets for tests (two days of traffic, every table, known answers).

``write_sample_events(raw_dir)`` writes the events below through ``ml.events.store.write_events`` and
returns the interval they cover. The story, with the answers the dbt tests check:

day 1 (2024-03-01)
  r1 10:00 "Red Shoes"  desktop  [lexical, popularity] p=0.8  impressions i1@1 i2@2 i3@3
       click i1 10:01, add_to_cart i1 10:05, purchase i1 on day 2 09:00 (delayed: lands in dt=2024-03-02)
       -> label_ranker(r1,i1)=3, reward=4 (1+1+2, cap 4)
  r2 15:00 "red shoe!"  mobile   [semantic] p=0.5               impressions i2@1 i4@2   click i4 15:02
  r3 20:00 "Leather Boxes" app   [exploration, lexical] p=0.1   impressions i5@1 i3@2   (no engagement)
day 2 (2024-03-02)
  r4 09:30 "red shoes"  desktop  [lexical] p=0.9                impressions i1@1 i6@2
       click i6 09:31, add_to_cart i6 09:40 -> label 2, reward 2
  r5 23:00 "Glass Vases" mobile  [memory] p=0.7                 impressions i3@1 i5@2
       click i3 23:30; purchase i3 on 2024-03-03 01:00, AFTER interval_end -> must not count (label 1)
day 3 (2024-03-03, after the interval): r6 with its decision and impressions -> excluded from marts.

catalog: i1..i5 created 2024-02-20; i1 re-published 2024-03-02 08:00 with a new price (newest row wins);
i6 created 2024-03-02 08:00; i7 created 2024-03-03 10:00 (after the interval, excluded).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from ml.events.store import write_events

DAY1 = date(2024, 3, 1)
DAY2 = date(2024, 3, 2)
INTERVAL_START = datetime(2024, 3, 1, tzinfo=UTC)
INTERVAL_END = datetime(2024, 3, 3, tzinfo=UTC)  # exclusive


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@dataclass
class SampleEvents:
    raw_dir: Path
    interval_start: datetime = INTERVAL_START
    interval_end: datetime = INTERVAL_END
    days: tuple[date, ...] = (DAY1, DAY2)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)


def sample_frames() -> dict[str, pd.DataFrame]:
    """The raw frames (all tables, including the events after the interval)."""
    catalog = pd.DataFrame([
        ("c-i1-v1", "i1", "Red running shoes", "Light red running shoes", "shoes", "Acme", "red", "mesh", 59.0,
         "2024-02-20 09:00"),
        ("c-i2", "i2", "Red leather boots", None, "shoes", "Boota", "red", "leather", 120.0, "2024-02-20 09:00"),
        ("c-i3", "i3", "Glass vase", "Tall clear glass vase", "home", None, "clear", "glass", 25.5,
         "2024-02-20 09:00"),
        ("c-i4", "i4", "Red canvas shoes", "Canvas sneakers", "shoes", "Acme", "red", "canvas", 35.0,
         "2024-02-20 09:00"),
        ("c-i5", "i5", "Leather box", "Small leather storage box", "home", "Stor", "brown", "leather", 40.0,
         "2024-02-20 09:00"),
        ("c-i1-v2", "i1", "Red running shoes", "Light red running shoes", "shoes", "Acme", "red", "mesh", 49.0,
         "2024-03-02 08:00"),
        ("c-i6", "i6", "Red trail shoes", "Trail shoes", "shoes", "Acme", "red", "mesh", 89.0, "2024-03-02 08:00"),
        ("c-i7", "i7", "Blue vase", "Blue ceramic vase", "home", None, "blue", "ceramic", 19.0, "2024-03-03 10:00"),
    ], columns=["event_id", "item_id", "title", "description", "category", "brand", "color", "material", "price",
                "created_at"])
    catalog["created_at"] = catalog["created_at"].map(_ts)

    requests_rows = [
        ("r1", "2024-03-01 10:00", "u1", "s1", "Red Shoes", "desktop", "en-US"),
        ("r2", "2024-03-01 15:00", "u2", "s2", "red shoe!", "mobile", "en-US"),
        ("r3", "2024-03-01 20:00", "u3", None, "Leather Boxes", "app", None),
        ("r4", "2024-03-02 09:30", "u1", "s4", "red shoes", "desktop", "en-US"),
        ("r5", "2024-03-02 23:00", "u4", "s5", "Glass Vases", "mobile", "en-GB"),
        ("r6", "2024-03-03 08:00", "u5", "s6", "red shoes", "app", "en-US"),
    ]
    requests = pd.DataFrame(requests_rows, columns=["request_id", "ts", "user_id", "session_id", "query", "device",
                                                    "locale"])
    requests["ts"] = requests["ts"].map(_ts)
    requests.insert(0, "event_id", requests["request_id"])
    requests["hour"] = requests["ts"].dt.hour.astype("int32")
    request_ts = dict(zip(requests["request_id"], requests["ts"]))

    decisions = pd.DataFrame([
        ("d-r1", "r1", ["lexical", "popularity"], [2, 1], 0.8, "v1", 40),
        ("d-r2", "r2", ["semantic"], [2], 0.5, "v1", 25),
        ("d-r3", "r3", ["exploration", "lexical"], [1, 1], 0.1, "v1", 30),
        ("d-r4", "r4", ["lexical"], [2], 0.9, "v1", 40),
        ("d-r5", "r5", ["memory"], [2], 0.7, "v1", 12),
        ("d-r6", "r6", ["lexical"], [2], 0.9, "v1", 40),
    ], columns=["event_id", "request_id", "strategies", "budgets", "propensity", "policy_version", "n_candidates"])
    decisions.insert(2, "ts", decisions["request_id"].map(request_ts))

    imp = [  # request, item, position, strategy, retrieval, lexical, semantic, memory, popularity, rank
        ("r1", "i1", 1, "lexical", 0.91, 0.91, 0.70, None, 0.40, 2.1),
        ("r1", "i2", 2, "lexical", 0.75, 0.75, 0.52, None, 0.20, 1.4),
        ("r1", "i3", 3, "popularity", 0.60, None, 0.10, None, 0.60, 0.3),
        ("r2", "i2", 1, "semantic", 0.82, 0.40, 0.82, None, 0.20, 1.2),
        ("r2", "i4", 2, "semantic", 0.78, 0.35, 0.78, None, 0.30, 1.1),
        ("r3", "i5", 1, "exploration", 0.10, None, None, None, 0.05, 0.2),
        ("r3", "i3", 2, "lexical", 0.30, 0.30, 0.10, None, 0.60, 0.1),
        ("r4", "i1", 1, "lexical", 0.93, 0.93, 0.71, 0.50, 0.45, 2.3),
        ("r4", "i6", 2, "lexical", 0.88, 0.88, 0.66, None, 0.10, 1.9),
        ("r5", "i3", 1, "memory", 0.70, 0.50, 0.60, 0.70, 0.60, 1.5),
        ("r5", "i5", 2, "memory", 0.40, None, 0.20, 0.40, 0.05, 0.4),
        ("r6", "i1", 1, "lexical", 0.93, 0.93, 0.71, 0.60, 0.50, 2.4),
        ("r6", "i6", 2, "lexical", 0.88, 0.88, 0.66, 0.20, 0.20, 1.8),
    ]
    impressions = pd.DataFrame(imp, columns=["request_id", "item_id", "position", "strategy", "retrieval_score",
                                             "lexical_score", "semantic_score", "memory_score",
                                             "popularity_score", "rank_score"])
    impressions.insert(0, "event_id", impressions["request_id"] + ":" + impressions["item_id"])
    impressions.insert(2, "ts", impressions["request_id"].map(request_ts))
    impressions["position"] = impressions["position"].astype("int32")

    engagements = pd.DataFrame([
        ("e1", "r1", "i1", "2024-03-01 10:01", "click"),
        ("e2", "r1", "i1", "2024-03-01 10:05", "add_to_cart"),
        ("e3", "r1", "i1", "2024-03-02 09:00", "purchase"),   # delayed purchase: next day's partition
        ("e4", "r2", "i4", "2024-03-01 15:02", "click"),
        ("e5", "r4", "i6", "2024-03-02 09:31", "click"),
        ("e6", "r4", "i6", "2024-03-02 09:40", "add_to_cart"),
        ("e7", "r5", "i3", "2024-03-02 23:30", "click"),
        ("e8", "r5", "i3", "2024-03-03 01:00", "purchase"),   # after interval_end: must not count
        ("e9", "r6", "i1", "2024-03-03 08:01", "click"),      # after interval_end
    ], columns=["event_id", "request_id", "item_id", "ts", "type"])
    engagements["ts"] = engagements["ts"].map(_ts)

    return {"catalog": catalog, "requests": requests, "decisions": decisions, "impressions": impressions,
            "engagements": engagements}


def write_sample_events(raw_dir: Path, batch_id: str = "factory") -> SampleEvents:
    """Write the sample events to ``raw_dir`` (idempotent per ``batch_id``); returns the covered interval."""
    frames = sample_frames()
    for table, frame in frames.items():
        write_events(Path(raw_dir), table, frame, batch_id)
    return SampleEvents(raw_dir=Path(raw_dir), frames=frames)


def one_day_end() -> datetime:
    """interval_end for a build over day 1 only (no purchases yet, engagements partition has 1 day)."""
    return INTERVAL_START + timedelta(days=1)
