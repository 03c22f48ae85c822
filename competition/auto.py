"""`auto`: a portfolio of recipes tried on one fold (the weak stopped early), the best trained on every fold, predicted
and blended, within a time budget.

    python -m competition auto -c configs/demo.yaml --minutes 13 --jobs 2

Every unit of work (a recipe's trial, a recipe's fold, the blend) is claimed from a queue in `tune.storage`
(competition/units.py), so workers started on other machines against one PostgreSQL URL share the work with no
scheduler of ours. Killed and rerun, `auto` continues where it was: finished units are not redone
and a unit that was running resumes from its checkpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import qmc

from competition.config import Config, Recipe, load_config
from competition.console import beside_others, say
from competition.errors import ConfigError, WorkerError
from competition.units import drain, fill, queue, trials_of, unit_of

SEARCH, FOLDS, BLEND = "auto-search", "auto-folds", "auto-blend"  # the three queues, after the experiment's name
PREDICT_SHARE = 0.25  # a fold's OOF and test prediction take about this share of its training time (the demo's)


@dataclass
class Budget:
    """The minutes `auto` has, counted from its start in this process."""

    minutes: float
    start: float = field(default_factory=time.monotonic)

    def left(self, share: float = 1.0) -> float:
        """Seconds left of the first `share` of the budget."""
        return self.minutes * 60 * share - (time.monotonic() - self.start)


def portfolio(cfg: Config, path: Path | None, overrides: list[str]) -> list[Config]:
    """Each recipe's config (its file, else `path`, this config's, with its overrides, then the command line's) as
    experiment <experiment>-<name>, then the sampled variants of those with `samples`; [cfg] when the portfolio is
    empty."""
    if not cfg.auto.portfolio:
        return [cfg]
    fixed = [(r, r.name, []) for r in cfg.auto.portfolio]
    sampled = [(r, f"{r.name}_v{i}", point) for r in cfg.auto.portfolio for i, point in enumerate(variants(r, cfg.seed))]
    names = [name for _, name, _ in fixed + sampled]
    if len(set(names)) < len(names):
        raise ConfigError(f"auto.portfolio: two recipes share a name ({', '.join(names)}); give each its own")
    return [load_config(r.config or path, [*r.set, *point, *overrides, f"experiment={cfg.experiment}-{name}"])
            for r, name, point in fixed + sampled]  # fmt: skip


def variants(recipe: Recipe, seed: int) -> list[list[str]]:
    """The recipe's `samples` variants: each a list of key=value overrides at a scrambled Sobol point of its ranges,
    log-uniform (the same on every worker and every rerun of one seed)."""
    if not recipe.samples:
        return []
    keys = sorted(recipe.ranges)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Sobol prefers a power of two; any count spreads well enough
        points = qmc.Sobol(len(keys), scramble=True, seed=seed).random(recipe.samples)
    logs = np.log([recipe.ranges[k] for k in keys])  # (keys, 2): log low, log high
    values = np.exp(logs[:, 0] + points * (logs[:, 1] - logs[:, 0]))
    return [[f"{k}={float(f'{v:.3g}')}" for k, v in zip(keys, row, strict=True)] for row in values]


class RungPruner(optuna.pruners.BasePruner):
    """Successive halving for a portfolio: at each rung (a share of its training) a recipe stops when at least `keep`
    other recipes did better at that share. Optuna's SuccessiveHalvingPruner keeps only the best of the first trials
    at each rung, which would stop the blend's second and third recipes."""

    def __init__(self, rungs: list[float], keep: int) -> None:
        self.rungs, self.keep = sorted(rungs), keep

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Steps are percent of the trial's training; compare at every rung the trial has reached."""
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        for rung in (100 * r for r in self.rungs):
            mine = at_rung(trial, rung)
            if mine is None:
                return False
            better = [v for t in others if (v := at_rung(t, rung)) is not None and v > mine]
            if len(better) >= self.keep:
                return True
        return False


def at_rung(t: FrozenTrial, rung: float) -> float | None:
    """The best held-out accuracy a trial reported up to its first report at or past `rung` percent; None before."""
    steps = sorted(t.intermediate_values)
    reached = next((s for s in steps if s >= rung), None)
    return None if reached is None else max(t.intermediate_values[s] for s in steps if s <= reached)


def with_minutes(cfg: Config, seconds: float) -> Config:
    """The config with its training cut at `seconds` (at least a minute), unless its own train.max_minutes is less."""
    from competition.tuned import with_train

    minutes = max(seconds / 60, 1.0)
    if cfg.train.max_minutes is not None and cfg.train.max_minutes <= minutes:
        return cfg
    return with_train(cfg, {"max_minutes": minutes})


class Tried(NamedTuple):
    """A recipe's finished trial: held-out accuracy on the search fold, the seconds its whole training takes (estimated
    from its steps when the search's minutes cut it) and the seconds it trained."""

    recipe: Config
    accuracy: float
    seconds: float
    spent: float


def search(cfg: Config, recipes: list[Config], budget: Budget) -> optuna.Study:
    """Every recipe trained on fold tune.fold in its own experiment, in portfolio order, each stopped early when
    `auto.top` others did better at a rung; none started after the search's share of the minutes, and each cut at
    its end (it goes on from there if chosen)."""
    from competition.monitor import PruneOnEvaluate
    from competition.pipeline import stage_inputs
    from competition.train import clear_fold, train_fold

    by_name, fold = {r.experiment: r for r in recipes}, cfg.tune.fold
    study = queue(cfg, SEARCH, RungPruner(cfg.auto.rungs, cfg.auto.top))
    fill(study, [{"recipe": r.experiment} for r in recipes])

    def work(trial: optuna.Trial, unit: dict[str, Any]) -> float:
        r = by_name[unit["recipe"]]
        left = budget.left(cfg.auto.search_share)
        if left <= 0:
            trial.set_user_attr("skipped", "budget")
            raise optuna.TrialPruned()
        beside_others(r.experiment)  # workers share the terminal: each line names its recipe, no progress bars
        say(f"[auto] trying {r.experiment} on fold {fold}")
        report, start = PruneOnEvaluate(trial, percent=True), time.monotonic()
        metrics, _ = train_fold(with_minutes(r, left), *stage_inputs(r), fold, log=say, callbacks=[report])
        spent = metrics.get("train_seconds") or time.monotonic() - start
        trial.set_user_attr("seconds", spent)
        trial.set_user_attr("whole_seconds", whole_seconds(metrics, spent))
        if report.pruned:
            clear_fold(r, fold)
            say(f"[auto] {r.experiment}: stopped, {cfg.auto.top} recipes did better at the same share of training")
            raise optuna.TrialPruned()
        return float(metrics.get("best_accuracy") or 0.0)

    drain(study, work)
    return study


def whole_seconds(metrics: dict[str, Any], spent: float) -> float:
    """The seconds a whole training run of the recipe takes: `spent`, scaled to all its steps when the time cut it."""
    if metrics.get("stopped_by_time") and metrics.get("steps"):
        return spent * metrics["max_steps"] / metrics["steps"]
    return spent


def scored(study: optuna.Study, recipes: list[Config]) -> list[Tried]:
    """Every finished recipe's trial, best first (ties: portfolio order)."""
    done = {unit_of(t)["recipe"]: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    rows = []
    for r in (r for r in recipes if r.experiment in done):
        attrs = done[r.experiment].user_attrs
        spent = attrs.get("seconds", 0.0)
        rows.append(Tried(r, done[r.experiment].value, attrs.get("whole_seconds", spent), spent))
    return sorted(rows, key=lambda row: -row.accuracy)


def choose(cfg: Config, study: optuna.Study, rows: list[Tried], budget: Budget, workers: int) -> list[str]:
    """The recipes whose other folds are trained: the best first, then each next best while the estimate of all their
    folds (and the rest of a search fold the minutes cut) fits the minutes left (`workers` side by side), at most
    auto.top. Decided once and kept in the queue, so every worker (and a rerun) trains the same ones."""
    if (kept := study.user_attrs.get("chosen")) is not None:
        return kept
    chosen, cost, per_recipe = [], 0.0, cfg.folds.k - 1 + PREDICT_SHARE * cfg.folds.k
    for row in rows[: cfg.auto.top]:
        cost += (row.seconds * per_recipe + row.seconds - row.spent) / workers
        if chosen and cost > budget.left():
            break
        chosen.append(row.recipe.experiment)
    study.set_user_attr("chosen", chosen)
    return chosen


def train_folds(cfg: Config, recipes: list[Config], rows: list[Tried], budget: Budget, workers: int) -> list[str]:
    """Every fold of the chosen recipes trained (the search fold is, unless the search's minutes cut it: then it goes
    on from its last checkpoint) and predicted, OOF and test; the chosen recipes, best first. A fold whose estimate no
    longer fits the minutes is not started, but for the best recipe's."""
    from competition.pipeline import stage_inputs
    from competition.predict import predict_fold
    from competition.train import reopen_fold, train_fold

    study = queue(cfg, FOLDS)
    chosen = choose(cfg, study, rows, budget, workers)
    by_name, seconds = {r.experiment: r for r in recipes}, {row.recipe.experiment: row.seconds for row in rows}
    fill(study, [{"experiment": name, "fold": k} for name in chosen for k in range(cfg.folds.k)])

    def work(trial: optuna.Trial, unit: dict[str, Any]) -> float:
        r, k = by_name[unit["experiment"]], int(unit["fold"])
        if unit["experiment"] != chosen[0] and budget.left() < seconds[r.experiment] * (1 + PREDICT_SHARE):
            trial.set_user_attr("skipped", "budget")
            raise optuna.TrialPruned()
        comp, folds = stage_inputs(r)
        beside_others(r.experiment)
        say(f"[auto] fold {k}" + (" (on from where the search stopped it)" if reopen_fold(r, k) else ""))
        metrics, _ = train_fold(with_minutes(r, budget.left()), comp, folds, k, log=say)
        predict_fold(r, comp, folds, k, ("oof", "test"))
        return float(metrics.get("best_accuracy") or 0.0)

    drain(study, work)
    return chosen


def blend(cfg: Config, recipes: list[Config], chosen: list[str]) -> dict[str, Any] | None:
    """CV of every chosen recipe with all its folds, and their blend (the best recipe's experiment with the others
    joining, voted as `cfg.ensemble` says), scored by nested CV and ranked on the leaderboard; done by one worker
    (None in the others)."""
    from competition.cv import run_cv
    from competition.ensemble import run_ensemble
    from competition.ensemble import summary_lines as blend_lines
    from competition.pipeline import stage_inputs

    folds_study, study = queue(cfg, FOLDS), queue(cfg, BLEND)
    complete = [name for name in chosen
                if all(trials_of(folds_study, {"experiment": name, "fold": k}, (TrialState.COMPLETE,))
                       for k in range(cfg.folds.k))]  # fmt: skip
    if not complete:
        raise ConfigError(f"auto: no recipe has all {cfg.folds.k} folds trained within the minutes; give it more")
    by_name, result = {r.experiment: r for r in recipes}, {}

    def work(trial: optuna.Trial, unit: dict[str, Any]) -> float:
        for name in complete:
            run_cv(by_name[name], *stage_inputs(by_name[name], make_folds=False))
        top = by_name[complete[0]].model_copy(deep=True)  # the blend's settings: the config auto was given
        top.ensemble = cfg.ensemble.model_copy(update={"experiments": complete[1:]}, deep=True)
        result.update(run_ensemble(top, *stage_inputs(top, make_folds=False), name="auto"), blended=complete)
        trial.set_user_attr("lines", blend_lines(result))  # what any worker prints of the blend
        return float(result["cv"])

    fill(study, [{"blend": "+".join(complete)}])
    drain(study, work)
    return result or None


def run_auto(path: Path | None, overrides: list[str], minutes: float, jobs: int = 1, worker: bool = False
             ) -> dict[str, Any]:  # fmt: skip
    """The `auto` command: this process and `jobs`-1 more (workers on other machines may join through
    tune.storage) search the portfolio, train the chosen recipes' folds and blend them; what it did, for the CLI."""
    from competition.demo import check_same_folds  # the recipes blend only when they share one folds.csv
    from competition.pipeline import stage_inputs
    from competition.plan import check_model

    budget, cfg = Budget(minutes), load_config(path, overrides)
    recipes = portfolio(cfg, path, overrides)
    for r in recipes:
        check_model(r)
        check_same_folds(recipes[0], r)
    for r in recipes:
        stage_inputs(r)  # folds.csv (the same for all) before any worker starts
        r.save()
    helpers = [] if worker else start_helpers(path, overrides, minutes, jobs)
    if jobs > 1:
        share_cores(jobs)
    study = search(cfg, recipes, budget)
    rows = scored(study, recipes)
    if not rows:
        raise ConfigError("auto: no recipe of the portfolio finished its trial within the minutes; give it more")
    chosen = train_folds(cfg, recipes, rows, budget, jobs)
    result = blend(cfg, recipes, chosen)
    beside_others("")
    wait_for(helpers)
    made = [t for t in queue(cfg, BLEND).get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    lines = made[-1].user_attrs.get("lines", []) if made else []
    return {"search": study, "rows": rows, "chosen": chosen, "blend": result, "blend_lines": lines, "search_cfg": cfg}


def start_helpers(path: Path | None, overrides: list[str], minutes: float, jobs: int) -> list[Any]:
    """`jobs`-1 more worker processes of this `auto` run on this machine."""
    cmd = [sys.executable, "-m", "competition", "auto", *(["-c", str(path)] if path else []), "--minutes", str(minutes),
           "--jobs", str(jobs), "--worker", *(f"--set={o}" for o in overrides)]  # fmt: skip
    return [subprocess.Popen(cmd) for _ in range(jobs - 1)]


def share_cores(jobs: int) -> None:
    """This worker's share of the CPU cores, when `jobs` workers run on this machine."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // jobs))


def wait_for(helpers: list[Any]) -> None:
    """Wait for the helper workers; a WorkerError when one failed (its error is printed above)."""
    failed = [h for h in helpers if h.wait()]
    if failed:
        raise WorkerError(f"{len(failed)} of {len(helpers)} auto workers failed; their errors are printed above")


def summary_lines(res: dict[str, Any]) -> list[str]:
    """What `auto` tells the user: each recipe's trial, the recipes blended, the blend's lines (whichever worker
    made it)."""
    lines = []
    for t in res["search"].get_trials(deepcopy=False):
        name = unit_of(t).get("recipe")
        if name:
            how = f"{t.value:.4f}" if t.state == TrialState.COMPLETE else t.user_attrs.get("skipped", "stopped early")
            spent = t.user_attrs.get("seconds", 0)
            cut = f" of {whole:.0f}: the search's minutes ran out" if (whole := t.user_attrs.get("whole_seconds", 0)) > spent else ""
            lines.append(f"{name}: {how} ({spent:.0f} s on fold{cut})")
    lines.append(f"trained on every fold: {', '.join(res['chosen'])}")
    return lines + (res["blend_lines"] or ["the blend was made before this run: see the leaderboard"])
