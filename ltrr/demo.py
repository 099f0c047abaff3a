"""The main job: simulate a store's search traffic day by day and close the loop with the real DAG.

Each simulated day: new catalog items arrive; the simulator's users send that day's searches to the online
scorer (in-process, on a simulated clock), which logs decisions and impressions; users click, add to cart and
buy (purchases arrive days later); then the real Airflow DAG runs for that day's data interval, and the scorer
reloads the new champions to serve the next day.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from ml.events.schema import STRATEGIES
from ml.events.store import write_events
from ml.settings import FAMILIES, Settings


@dataclass
class DayRow:
    day: str
    requests: int
    click_rate: float
    purchase_rate: float
    ndcg10: float
    strategy_share: dict[str, float]
    ndcg_by_type: dict[str, float]
    champions: dict[str, str | None]
    dag_state: str
    dag_seconds: float
    serve_ms_p50: float
    promotions: list[str] = field(default_factory=list)
    # per query type: the share of the candidate budget the served plans gave the strategy the simulator made best
    # for that type (the bandit's mix should move toward it day after day)
    best_strategy_share: dict[str, float] = field(default_factory=dict)


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def serve_day(scorer, sim, day: date, clock: _Clock, progress: Callable[[int], None] | None = None):
    """Send one simulated day of searches to the scorer; returns (requests, impressions, per-request rows)."""
    from serving.scorer import RankRequest

    reqs = sim.requests(day).sort_values("ts").reset_index(drop=True)
    served, latencies = [], []
    for i, r in enumerate(reqs.itertuples(index=False)):
        clock.now = r.ts.to_pydatetime()
        t0 = time.perf_counter()
        resp = scorer.rank(RankRequest(query=r.query, user_id=r.user_id, session_id=r.session_id,
                                       device=r.device, locale=r.locale, request_id=r.request_id))
        latencies.append((time.perf_counter() - t0) * 1000)
        served.append({"request_id": resp.request_id, "query": r.query, "query_type": r.query_type,
                       "strategy": resp.strategy, "items": [it.item_id for it in resp.items]})
        if progress and i % 50 == 0:
            progress(min(50, len(reqs) - i))
    scorer.events.flush()
    return reqs, pd.DataFrame(served), float(np.median(latencies)) if latencies else 0.0


def run_demo(settings: Settings, *, days: int = 7, requests_per_day: int = 1000, seed: int = 7,
             n_items: int = 1500, start: date = date(2026, 1, 1), console=None) -> list[DayRow]:
    """Run the flywheel for ``days`` simulated days; returns one row per day and writes the report."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ltrr.airflow_env import configure, run_day
    from ltrr.report import print_table, write_report
    from ml.registry import champion_versions
    from ml.sim import SimConfig, Simulator
    from serving.scorer import Scorer

    settings.ensure_dirs()
    configure(settings)
    sim = Simulator(SimConfig(seed=seed, n_items=n_items, requests_per_day=requests_per_day, start=start))
    clock = _Clock()
    scorer = Scorer(settings, feast_repo=settings.feast_repo, clock=clock, rng_seed=seed)
    pending = pd.DataFrame()
    rows: list[DayRow] = []

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        for d in range(days):
            day = start + timedelta(days=d)
            day_end = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
            write_events(settings.raw_dir, "catalog", sim.catalog_events(day), batch_id=f"sim-{day}")
            scorer.load()
            task = progress.add_task(f"{day} serving", total=requests_per_day)
            reqs, served, p50 = serve_day(scorer, sim, day, clock,
                                          progress=lambda n, t=task: progress.advance(t, n))
            progress.remove_task(task)

            impressions = _impressions_of(settings, day)
            engagements = sim.respond(reqs, impressions)
            pending = pd.concat([pending, engagements], ignore_index=True) if len(pending) else engagements
            due = pending[pd.to_datetime(pending["ts"], utc=True) < day_end]
            pending = pending.drop(due.index).reset_index(drop=True)
            write_events(settings.raw_dir, "engagements", due, batch_id=f"sim-{day}")

            task = progress.add_task(f"{day} nightly DAG", total=None)
            t0 = time.perf_counter()
            result = run_day(settings, day)
            dag_seconds = time.perf_counter() - t0
            progress.remove_task(task)

            champions = champion_versions(settings.tracking_uri, settings.model_prefix)
            promotions = _promotions(settings)
            row = _day_row(day, reqs, served, engagements, sim, champions, result, dag_seconds, p50, promotions)
            row.best_strategy_share = _best_strategy_share(settings, day, served, sim)
            rows.append(row)
            print_table(rows, console=console, only_last=d > 0)   # best_strategy_share is a column

    report = write_report(rows, settings.reports_dir / "demo")
    (settings.reports_dir / "demo" / "days.json").write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    if console is not None:
        console.print(f"report: {report}")
    return rows


def _impressions_of(settings: Settings, day: date) -> pd.DataFrame:
    from ml.events.store import read_events

    return read_events(settings.raw_dir, "impressions", day, day)


def _best_strategy_share(settings: Settings, day: date, served: pd.DataFrame, sim) -> dict[str, float]:
    """Per query type, the mean share of the candidate budget that the served plans gave to the strategy the
    simulator made best for that type (from the logged decisions: strategies + budgets)."""
    from ml.events.store import read_events

    dec = read_events(settings.raw_dir, "decisions", day, day)
    if dec.empty or served.empty:
        return {}
    plans = dec.set_index("request_id")[["strategies", "budgets"]]
    out: dict[str, float] = {}
    for qt, group in served.groupby("query_type"):
        best = sim.BEST_STRATEGY.get(qt)
        shares = []
        for rid in group["request_id"]:
            if rid not in plans.index:
                continue
            ss, bb = list(plans.at[rid, "strategies"]), [float(b) for b in plans.at[rid, "budgets"]]
            shares.append(sum(b for s, b in zip(ss, bb) if s == best) / max(sum(bb), 1e-9))
        if shares:
            out[str(qt)] = round(float(np.mean(shares)), 4)
    return out


def _promotions(settings: Settings) -> list[str]:
    marker = settings.reports_dir / "last_promotion.json"
    if not marker.exists():
        return []
    decisions = json.loads(marker.read_text()).get("decisions", [])
    return [f"{d['family']} v{d['version']}" for d in decisions if d and d.get("promoted")]


def _day_row(day, reqs, served, engagements, sim, champions, result, dag_seconds, p50, promotions) -> DayRow:
    n = len(reqs)
    by_req = engagements.groupby("request_id")["type"].agg(set) if len(engagements) else pd.Series(dtype=object)
    clicked = sum(1 for t in by_req if "click" in t)
    bought = sum(1 for t in by_req if "purchase" in t)
    ndcgs = [sim.oracle.ndcg(q, items, k=10) for q, items in zip(served["query"], served["items"])]
    served = served.assign(ndcg=ndcgs)
    share = served["strategy"].value_counts(normalize=True).reindex(list(STRATEGIES), fill_value=0.0)
    return DayRow(
        day=str(day), requests=n, click_rate=clicked / max(n, 1), purchase_rate=bought / max(n, 1),
        ndcg10=float(np.mean(ndcgs)) if ndcgs else 0.0,
        strategy_share={k: round(float(v), 4) for k, v in share.items()},
        ndcg_by_type={k: round(float(v), 4) for k, v in served.groupby("query_type")["ndcg"].mean().items()},
        champions={f: champions.get(f) for f in FAMILIES}, dag_state=result["state"],
        dag_seconds=round(dag_seconds, 1), serve_ms_p50=round(p50, 2), promotions=promotions,
    )
