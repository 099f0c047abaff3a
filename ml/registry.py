"""The MLflow side of every model family, alike: run -> registered version -> gate vs ``@champion`` -> alias.

Aliases, never stages. ``@champion`` is what serving loads; a promotion moves the previous one to
``@previous_champion`` (for rollback); a refused version gets ``@challenger``. Every decision is recorded with the
numbers that decided it: as run tags and as ``<reports_dir>/decisions/<family>-<interval>-v<version>.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd

from ml.families import FAMILY_MODULES, get_family
from ml.families.base import GateSpec, NotEnoughData, TrainContext

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"

# What a logged model needs at load time. Explicit, so MLflow does not spend seconds inferring requirements.
PIP_REQUIREMENTS: dict[str, list[str]] = {
    "bandit": ["mlflow>=3.17,<3.18", "vowpalwabbit>=9.11", "numpy", "pandas"],
    "ranker": ["mlflow>=3.17,<3.18", "xgboost-cpu>=3.2", "numpy", "pandas"],
}
_DEFAULT_REQUIREMENTS = ["mlflow>=3.17,<3.18", "scikit-learn>=1.5", "numpy", "pandas"]

_NOISY_LOGGERS = ("mlflow", "alembic", "urllib3", "git", "databricks")


@dataclass
class Decision:
    """What the gate decided for one trained version, with the numbers that decided it."""

    family: str
    version: str
    promoted: bool                    # the champion alias moved to this version
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None
    champion_version: str | None
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    passed: bool = False              # the gate's verdict (equals ``promoted`` unless dry_run)
    dry_run: bool = False
    interval_start: str = ""
    interval_end: str = ""
    record_path: str = ""


# --------------------------------------------------------------------------------------------------------------
# pyfunc wrapper


class FamilyPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc around a family's native model; ``.model`` is the native object serving uses."""

    def __init__(self, family_name: str):
        self.family_name = family_name
        self.model: Any = None

    def load_context(self, context) -> None:
        self.model = get_family(self.family_name).load(Path(context.artifacts["model_dir"]))

    def predict(self, context, model_input: pd.DataFrame, params=None):
        # The pd.DataFrame hint is what MLflow's type-hint support accepts without warning; every family takes a
        # frame (candidates for the ranker, requests for the bandit, ...).
        family = get_family(self.family_name)
        if hasattr(family, "pyfunc_predict"):
            return family.pyfunc_predict(self.model, model_input)
        return self.model.predict(model_input)


# --------------------------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _quiet():
    """Silence MLflow's (and alembic's) logs, warnings and progress bars for the duration of a call."""
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",)}
    from mlflow.utils import logging_utils

    stream_enabled = logging_utils.MLFLOW_LOGGING_STREAM.enabled   # eprint() ("Registered model ...") goes here
    try:
        logging_utils.disable_logging()
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging_utils.MLFLOW_LOGGING_STREAM.enabled = stream_enabled
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _client(tracking_uri: str):
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _artifact_root(tracking_uri: str, artifact_root: Path | None = None) -> Path | None:
    """Where new experiments keep their artifacts: ``artifact_root`` when given (the production profile: a
    PostgreSQL backend store, artifacts on a file path), else ``<dir of the sqlite db>/mlartifacts`` for a sqlite
    store (so nothing lands in the CWD); None otherwise (MLflow's default)."""
    if artifact_root is not None:
        return Path(artifact_root).resolve()
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///"):])
    return db.resolve().parent / "mlartifacts"


def _experiment_id(client, tracking_uri: str, name: str, artifact_root: Path | None = None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = _artifact_root(tracking_uri, artifact_root)
    location = (root / name).as_uri() if root is not None else None
    return client.create_experiment(name, artifact_location=location)


def _mlflow_key(name: str) -> str:
    """MLflow metric/param names allow ``[/\\w.\\- :]`` only: ``ndcg@10`` -> ``ndcg_at_10``."""
    return name.replace("@", "_at_")


def _alias_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _interval_label(ts) -> str:
    t = pd.Timestamp(ts)
    return t.strftime("%Y-%m-%d") if t == t.normalize() else t.strftime("%Y-%m-%dT%H%M%S")


def gate(spec: GateSpec, metrics: dict[str, float], champion_value: float | None,
         extra_floors: dict[str, float] | None = None) -> tuple[bool, str]:
    """The promotion rule: the absolute floor (and any family ``extra_floors``, all minimums) always; against a
    champion, the challenger must also improve on it by at least ``min_delta`` in the metric's direction."""
    value = metrics.get(spec.metric)
    if value is None or not math.isfinite(value):
        return False, f"{spec.metric} is missing or not finite ({value})"
    sign = 1.0 if spec.direction == "max" else -1.0
    if spec.floor is not None and sign * (value - spec.floor) < 0:
        word = ">=" if spec.direction == "max" else "<="
        return False, f"{spec.metric}={value:.6g} fails the floor ({word} {spec.floor:.6g})"
    for name, bound in (extra_floors or {}).items():
        v = metrics.get(name)
        if v is None or not math.isfinite(v) or v < bound:
            return False, f"{name}={v} fails the floor (>= {bound:.6g})"
    if champion_value is None or not math.isfinite(champion_value):
        return True, f"{spec.metric}={value:.6g} passes the floor; no champion to beat"
    delta = sign * (value - champion_value)
    if delta < spec.min_delta:
        return False, (f"{spec.metric}={value:.6g} does not beat champion {champion_value:.6g} "
                       f"by min_delta {spec.min_delta:.6g} (change {sign * delta:+.6g})")
    return True, (f"{spec.metric}={value:.6g} vs champion {champion_value:.6g}: change {sign * delta:+.6g} "
                  f">= min_delta {spec.min_delta:.6g}")


# --------------------------------------------------------------------------------------------------------------
# public API


def load_champion(tracking_uri: str, family: str, model_prefix: str = "ltrr-",
                  alias: str = CHAMPION) -> tuple[str, Any] | None:
    """(version, native model) of ``models:/<prefix><family>@<alias>``; None when there is no such model/alias."""
    name = f"{model_prefix}{family}"
    with _quiet():
        client = _client(tracking_uri)
        version = _alias_version(client, name, alias)
        if version is None:
            return None
        loaded = mlflow.pyfunc.load_model(f"models:/{name}@{alias}")
        return version, loaded.unwrap_python_model().model


def champion_versions(tracking_uri: str, model_prefix: str = "ltrr-") -> dict[str, str | None]:
    """``{family: champion version or None}`` for every family."""
    with _quiet():
        client = _client(tracking_uri)
        return {fam: _alias_version(client, f"{model_prefix}{fam}", CHAMPION) for fam in FAMILY_MODULES}


def train_and_gate(family_name: str, ctx: TrainContext, *, tracking_uri: str, model_prefix: str = "ltrr-",
                   reports_dir: Path, dry_run: bool = False, frame: pd.DataFrame | None = None,
                   artifact_root: Path | None = None) -> Decision:
    """Train one family on the interval, judge it against ``@champion`` on the same holdout, register, move aliases.

    Raises ``NotEnoughData`` (from the family) when the interval cannot train or judge a model: the caller
    records a skip and the champion keeps serving.
    """
    family = get_family(family_name)
    if frame is None:
        frame = family.training_set(ctx)
    train, holdout = family.split(frame, ctx)
    if len(train) == 0 or len(holdout) == 0:
        raise NotEnoughData(f"{family_name}: empty split (train={len(train)}, holdout={len(holdout)})")
    params = {**family.default_params, **ctx.params}
    model = family.train(train, params)
    metrics = {k: float(v) for k, v in family.evaluate(model, holdout).items()}
    spec: GateSpec = family.gate_spec
    name = f"{model_prefix}{family_name}"
    t0 = time.perf_counter()

    root = _artifact_root(tracking_uri, artifact_root)
    if root is not None:
        root.parent.mkdir(parents=True, exist_ok=True)     # the sqlite file's folder (MLflow won't create it)
    with _quiet():
        client = _client(tracking_uri)

        # Champion on the SAME holdout. If it cannot be loaded or judged, say so and judge on the floor only.
        champion_version, champion_value, champion_metrics, champion_error = None, None, {}, ""
        try:
            champ = load_champion(tracking_uri, family_name, model_prefix)
            if champ is not None:
                champion_version = champ[0]
                champion_metrics = {k: float(v) for k, v in family.evaluate(champ[1], holdout).items()}
                champion_value = champion_metrics.get(spec.champion_metric or spec.metric)
        except Exception as exc:  # noqa: BLE001 - a broken champion must not block a good challenger
            champion_error = f"{type(exc).__name__}: {exc}"[:500]
            champion_value = None

        passed, reason = gate(spec, metrics, champion_value, getattr(family, "extra_floors", None))
        compare = getattr(family, "compare", None)
        if compare is not None and champion_value is not None and not champion_error:
            # A family with a paired rule (the ranker: paired bootstrap over the same holdout requests) judges the
            # challenger against the champion itself; the floors still apply first.
            floors_ok, floor_reason = gate(spec, metrics, None, getattr(family, "extra_floors", None))
            try:
                passed, reason, paired = compare(model, champ[1], holdout) if floors_ok else (False, floor_reason, {})
                metrics.update({k: float(v) for k, v in paired.items()})
            except Exception as exc:  # noqa: BLE001 - fall back to the scalar rule, and say so
                reason += f" (paired comparison failed: {type(exc).__name__}: {exc}"[:500] + ")"
        if champion_error:
            reason += f" (champion v{champion_version} could not be evaluated: {champion_error})"
        if dry_run:
            reason = f"dry run, nothing promoted; gate would {'pass' if passed else 'refuse'}: {reason}"

        exp_id = _experiment_id(client, tracking_uri, f"ltrr-{family_name}", artifact_root)
        tags = {
            "family": family_name,
            "interval_start": pd.Timestamp(ctx.interval_start).isoformat(),
            "interval_end": pd.Timestamp(ctx.interval_end).isoformat(),
            "gate.metric": spec.metric,
            "gate.direction": spec.direction,
            "gate.floor": str(spec.floor),
            "gate.min_delta": str(spec.min_delta),
            "decision": ("dry_run_pass" if passed else "dry_run_refuse") if dry_run else
                        ("promoted" if passed else "refused"),
            "reason": reason[:5000],
            "champion_version": champion_version or "",
            "dry_run": str(dry_run).lower(),
        }
        with tempfile.TemporaryDirectory(prefix=f"ltrr-{family_name}-") as tmp:
            model_dir = Path(tmp) / "model_dir"
            family.save(model, model_dir)
            with mlflow.start_run(experiment_id=exp_id, run_name=f"{family_name}-{_interval_label(ctx.interval_start)}",
                                  tags=tags) as run:
                mlflow.log_params({_mlflow_key(k): str(v)[:500] for k, v in params.items()})
                logged = {_mlflow_key(k): v for k, v in metrics.items() if math.isfinite(v)}
                logged.update({f"champion_{_mlflow_key(k)}": v for k, v in champion_metrics.items()
                               if math.isfinite(v)})
                mlflow.log_metrics(logged)
                info = mlflow.pyfunc.log_model(
                    name="model", python_model=FamilyPyfunc(family_name),
                    artifacts={"model_dir": str(model_dir)},
                    pip_requirements=PIP_REQUIREMENTS.get(family_name, _DEFAULT_REQUIREMENTS),
                )
                run_id = run.info.run_id
        mv = mlflow.register_model(info.model_uri, name, tags={"interval_start": tags["interval_start"]})
        version = str(mv.version)

        promoted = passed and not dry_run
        if promoted:
            old = _alias_version(client, name, CHAMPION)
            if old is not None and old != version:
                client.set_registered_model_alias(name, PREVIOUS_CHAMPION, old)
            client.set_registered_model_alias(name, CHAMPION, version)
        elif not dry_run:
            client.set_registered_model_alias(name, CHALLENGER, version)
        client.set_model_version_tag(name, version, "decision", tags["decision"])
        client.set_model_version_tag(name, version, "reason", reason[:5000])
        client.set_tag(run_id, "registered_version", version)

    decision = Decision(
        family=family_name, version=version, promoted=promoted, reason=reason, metric=spec.metric,
        challenger_value=float(metrics.get(spec.metric, float("nan"))), champion_value=champion_value,
        champion_version=champion_version, run_id=run_id, metrics=metrics, passed=passed, dry_run=dry_run,
        interval_start=tags["interval_start"], interval_end=tags["interval_end"],
    )
    out = Path(reports_dir) / "decisions" / f"{family_name}-{_interval_label(ctx.interval_start)}-v{version}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    decision.record_path = str(out)
    record = {**asdict(decision), "champion_metrics": champion_metrics, "champion_error": champion_error,
              "gate": asdict(spec), "extra_floors": dict(getattr(family, "extra_floors", {}) or {}),
              "params": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                         for k, v in params.items()},
              "n_train": len(train), "n_holdout": len(holdout),
              "mlflow_seconds": round(time.perf_counter() - t0, 3)}
    out.write_text(json.dumps(record, indent=2, default=str))
    return decision


# --------------------------------------------------------------------------------------------------------------
# manual alias moves: rollback and gate-bypassing promotion (operators; the scorer's admin API, `ltrr rollback`)


@dataclass
class AliasDecision:
    """A manual move of ``@champion``, recorded like the gate's decisions (version tags + a JSON record)."""

    family: str
    action: str                       # "rollback" | "manual_promote"
    version: str                      # @champion after the move
    replaced_version: str | None      # @champion before the move
    reason: str
    actor: str
    at: str
    record_path: str = ""


def _record_alias_decision(client, name: str, decision: AliasDecision, reports_dir: Path) -> AliasDecision:
    stamp = pd.Timestamp(decision.at).strftime("%Y%m%dT%H%M%S%f")
    out = Path(reports_dir) / "decisions" / f"{decision.family}-{decision.action}-{stamp}-v{decision.version}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    decision.record_path = str(out)
    # Own tag keys: the version's "decision"/"reason" tags keep what the gate said when it was trained.
    client.set_model_version_tag(name, decision.version, "manual_decision", decision.action)
    client.set_model_version_tag(name, decision.version, "manual_reason",
                                 f"{decision.action} by {decision.actor} at {decision.at}: {decision.reason}"[:5000])
    if decision.replaced_version:
        client.set_model_version_tag(name, decision.replaced_version, "replaced_by",
                                     f"v{decision.version} ({decision.action} at {decision.at})")
    out.write_text(json.dumps(asdict(decision), indent=2))
    return decision


def rollback_champion(tracking_uri: str, family: str, *, reports_dir: Path, model_prefix: str = "ltrr-",
                      reason: str = "manual rollback", actor: str = "operator") -> AliasDecision:
    """``@previous_champion`` becomes ``@champion`` again; the replaced version becomes ``@previous_champion``.

    Swapping (rather than dropping the alias) makes a rollback undoable by a second rollback. Raises
    ``LookupError`` when the family has no ``@previous_champion`` (nothing was ever promoted over a champion).
    """
    from datetime import UTC, datetime

    name = f"{model_prefix}{family}"
    with _quiet():
        client = _client(tracking_uri)
        previous = _alias_version(client, name, PREVIOUS_CHAMPION)
        if previous is None:
            raise LookupError(f"{name} has no @{PREVIOUS_CHAMPION} to roll back to")
        current = _alias_version(client, name, CHAMPION)
        client.set_registered_model_alias(name, CHAMPION, previous)
        if current is not None and current != previous:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
        else:
            client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
        decision = AliasDecision(family=family, action="rollback", version=previous, replaced_version=current,
                                 reason=reason, actor=actor, at=datetime.now(UTC).isoformat())
        return _record_alias_decision(client, name, decision, reports_dir)


def promote_version(tracking_uri: str, family: str, version: str, *, reports_dir: Path,
                    model_prefix: str = "ltrr-", reason: str = "manual promotion",
                    actor: str = "operator") -> AliasDecision:
    """Make ``version`` the ``@champion`` without the gate (recorded as a manual decision); the replaced champion
    becomes ``@previous_champion`` as in a gated promotion. Raises ``LookupError`` for an unknown version."""
    from datetime import UTC, datetime

    from mlflow.exceptions import MlflowException

    name = f"{model_prefix}{family}"
    version = str(version)
    with _quiet():
        client = _client(tracking_uri)
        try:
            client.get_model_version(name, version)
        except MlflowException as exc:
            raise LookupError(f"{name} has no version {version}") from exc
        current = _alias_version(client, name, CHAMPION)
        if current is not None and current != version:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current)
        client.set_registered_model_alias(name, CHAMPION, version)
        decision = AliasDecision(family=family, action="manual_promote", version=version, replaced_version=current,
                                 reason=reason, actor=actor, at=datetime.now(UTC).isoformat())
        return _record_alias_decision(client, name, decision, reports_dir)
