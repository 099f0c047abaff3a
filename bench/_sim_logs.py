"""Simulated logged traffic without Airflow, shared by benchmarks (the logging loop of bench_families.py).

``simulate_logs`` serves ``days`` simulated days with a uniform-random policy over the six strategies, rebuilding
the strategies every night from what the platform knows by then (catalog, popularity, a q2e memory retrained on
the impressions so far, with the catalog so it carries predicted entries), and returns the logs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.bench_families import (
    DAY,
    DailyFeatures,
    attributed,
    impressions_of,
    label_ranker,
    prepare_requests,
)
from ml.events.schema import STRATEGIES
from ml.families.q2e import FAMILY as Q2E
from ml.families.q2e import training_frame
from ml.retrieval import build_strategies
from ml.sim import Simulator


@dataclass
class Logs:
    catalog: pd.DataFrame        # every catalog event through the last simulated day asked for
    requests: pd.DataFrame
    impressions: pd.DataFrame
    engagements: pd.DataFrame
    start: pd.Timestamp

    def day_start(self, d: int) -> pd.Timestamp:
        return self.start + d * DAY

    def dim_items(self, before: pd.Timestamp) -> pd.DataFrame:
        """The ``dim_items`` mart as of ``before``: newest row per item created before it."""
        c = self.catalog[self.catalog["created_at"] < before].sort_values("created_at")
        c = c.drop_duplicates("item_id", keep="last").drop(columns=["event_id"])
        return c.assign(event_timestamp=c["created_at"]).reset_index(drop=True)

    def label_ranker(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """``label_ranker`` at the cutoff: impressions with engagements attributed and observed before it."""
        att = attributed(self.impressions, self.engagements)
        return label_ranker(self.impressions[self.impressions["ts"] < cutoff], self.requests, att, cutoff)


def simulate_logs(sim: Simulator, days: int, catalog_days: int, budget: int, seed: int,
                  progress: Callable[[str], None] = lambda _m: None) -> Logs:
    """Serve days 0..days-1 with a uniform logging policy; the catalog covers days 0..catalog_days-1."""
    start = pd.Timestamp(sim.cfg.start, tz="UTC")
    rng = np.random.default_rng([seed, 1001])
    catalog = pd.concat([sim.catalog_events(sim.day(d)) for d in range(max(days, catalog_days))], ignore_index=True)
    catalog["created_at"] = pd.to_datetime(catalog["created_at"], utc=True)
    log_req: list[pd.DataFrame] = []
    log_imp: list[pd.DataFrame] = []
    log_eng: list[pd.DataFrame] = []
    for d in range(days):
        now = start + d * DAY
        cat_d = catalog[catalog["created_at"] <= now]
        pop, q2e_model = None, None
        if d > 0:
            reqs, imps = pd.concat(log_req), pd.concat(log_imp)
            att = attributed(imps, pd.concat(log_eng))
            pop = DailyFeatures(start, reqs, imps, att, cat_d, now).popularity(d)
            lr = label_ranker(imps, reqs, att, now)
            q2e_model = Q2E.train(training_frame(lr, cat_d), {})
        strategies = build_strategies(cat_d, pop, q2e_model, None, seed=seed)
        req = prepare_requests(sim, d)
        chosen = np.asarray(STRATEGIES, dtype=object)[rng.integers(0, len(STRATEGIES), len(req))]
        req["strategy"], req["propensity"] = chosen, 1.0 / len(STRATEGIES)
        imp, _ = impressions_of(strategies, req, chosen, budget)
        eng = sim.respond(req, imp)
        eng["ts"] = pd.to_datetime(eng["ts"], utc=True)
        log_req.append(req)
        log_imp.append(imp)
        log_eng.append(eng)
        progress(f"logged day {d + 1}/{days}: {len(req)} requests, {int((eng['type'] == 'click').sum())} clicks, "
                 f"q2e entries {0 if q2e_model is None else q2e_model.n_entries}")
    return Logs(catalog=catalog, requests=pd.concat(log_req, ignore_index=True),
                impressions=pd.concat(log_imp, ignore_index=True),
                engagements=pd.concat(log_eng, ignore_index=True), start=start)
