"""Units of work claimed through an Optuna study's storage: each unit is an enqueued trial, claimed by moving it from
WAITING to RUNNING in one transaction, so workers on several machines against one PostgreSQL URL share a queue with
no scheduler of ours; a worker that dies stops beating its heartbeat and its unit goes back to the queue. `auto`'s
search, folds and blend are three such queues."""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from competition.config import Config
from competition.tune import heartbeat, storage_url

POLL_S = 3  # seconds between looks at the queue while other workers finish their units
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def queue(cfg: Config, name: str, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """The queue `name` of this experiment in its study storage: a failed unit (its worker's heartbeat stopped) is
    enqueued again."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3, inherit_intermediate_values=True)
        storage = rdb(storage_url(cfg), **heartbeat(cfg), heartbeat_stale_trial_callback=retry)
        return optuna.create_study(study_name=f"{cfg.experiment}-{name}", storage=storage, direction="maximize",
                                   load_if_exists=True, pruner=pruner or optuna.pruners.NopPruner())  # fmt: skip


def rdb(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    """The storage at `url`; when workers start together and another is creating its tables, the second try finds them."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(3):
        try:
            storage = optuna.storages.RDBStorage(url, **kwargs)
            break
        except (IntegrityError, OperationalError, ProgrammingError):
            if attempt == 2:
                raise
            time.sleep(1 + attempt)
    one_writer_at_a_time(storage.engine)
    return storage


def one_writer_at_a_time(engine: Any) -> None:
    """SQLite: each transaction takes the database's write lock when it begins (BEGIN IMMEDIATE), so that a claim's
    look at WAITING and its move to RUNNING are one step, as a row lock makes them on PostgreSQL or MySQL."""
    if engine.dialect.name != "sqlite":
        return
    from sqlalchemy import event

    event.listen(engine, "connect", lambda conn, _: setattr(conn, "isolation_level", None))  # the driver begins nothing
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    engine.dispose()  # connections opened before the listeners close


def unit_of(t: FrozenTrial) -> dict[str, Any]:
    """The unit a trial stands for: its enqueued parameters (a retried trial keeps them); {} for none."""
    return dict(t.system_attrs.get("fixed_params") or {})


def key(unit: dict[str, Any]) -> tuple:
    """A unit as a hashable key."""
    return tuple(sorted(unit.items()))


def fill(study: optuna.Study, units: list[dict[str, Any]]) -> None:
    """Enqueue every unit that no trial waits for, runs or finished (a failed one goes back in the queue)."""
    have = {key(unit_of(t)) for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING, *DONE))}
    for unit in units:
        if key(unit) not in have:
            study.enqueue_trial(unit)


def trials_of(study: optuna.Study, unit: dict[str, Any], states: tuple[TrialState, ...] = DONE) -> list[FrozenTrial]:
    """The trials of `unit` in `states`."""
    return [t for t in study.get_trials(deepcopy=False, states=states) if key(unit_of(t)) == key(unit)]


def claimed_before(study: optuna.Study, trial: optuna.Trial, unit: dict[str, Any]) -> bool:
    """Whether another trial of the same unit finished, or runs and was numbered first (two workers filled the queue
    at once): then this one leaves the unit to it."""
    others = trials_of(study, unit, (TrialState.RUNNING, *DONE))
    return any(t.number != trial.number and (t.state in DONE or t.number < trial.number) for t in others)


def drain(study: optuna.Study, work: Callable[[optuna.Trial, dict[str, Any]], float]) -> None:
    """Claim and do waiting units one at a time until none waits, then wait for the units other workers run (a dead
    worker's unit comes back and is claimed here)."""
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        states = {t.state for t in study.get_trials(deepcopy=False)}
        if TrialState.WAITING in states:
            study.optimize(lambda trial: do_unit(study, trial, work), n_trials=1)
        elif TrialState.RUNNING in states:
            time.sleep(POLL_S)
        else:
            return


def do_unit(study: optuna.Study, trial: optuna.Trial, work: Callable[[optuna.Trial, dict[str, Any]], float]) -> float:
    """One claimed unit: `work` on it, unless another worker has it (or the queue was empty: nothing to do)."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    unit = unit_of(frozen)
    if not unit or claimed_before(study, trial, unit):
        trial.set_user_attr("skipped", "duplicate" if unit else "empty queue")
        raise optuna.TrialPruned()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    return work(trial, unit)
