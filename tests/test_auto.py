"""`auto`: units claimed once through the study storage, a dead worker's unit back in the queue, the portfolio's
successive halving, and the whole run: search, folds, blend, resumed after a kill, shared by two workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState as State

from competition.auto import (
    BLEND,
    FOLDS,
    SEARCH,
    Budget,
    RungPruner,
    Tried,
    at_rung,
    choose,
    portfolio,
    run_auto,
    whole_seconds,
)
from competition.config import load_config
from competition.submit import leaderboard
from competition.units import drain, fill, queue, unit_of
from tests.postgres import postgres_server
from tests.test_train import scripted_accuracy


def work_log(seen: list[dict], pause: float = 0.0):  # noqa: ANN201
    """A unit's work that records the unit (after `pause` seconds) and scores it 1."""

    def work(trial: optuna.Trial, unit: dict) -> float:
        time.sleep(pause)
        seen.append(unit)
        return 1.0

    return work


def test_two_workers_claim_every_unit_once_even_when_both_filled_the_queue(tmp_path: Path) -> None:
    cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}"])
    units = [{"experiment": "a", "fold": k} for k in range(4)]
    study = queue(cfg, "units")
    fill(study, units)
    study.enqueue_trial(units[2])  # a second filler raced the first: unit 2 waits twice
    fill(study, units)  # a filler after both: nothing more
    assert len(study.trials) == 5
    seen: list[dict] = []
    other = threading.Thread(target=drain, args=(queue(cfg, "units"), work_log(seen, 0.2)))
    other.start()
    drain(study, work_log(seen, 0.2))
    other.join()
    assert sorted(seen, key=str) == sorted(units, key=str)  # each unit done once
    skipped = [t for t in study.get_trials() if t.state == State.PRUNED]
    assert [t.user_attrs["skipped"] for t in skipped] == ["duplicate"] and unit_of(skipped[0]) == units[2]


@pytest.mark.e2e(minutes=0.15)
def test_a_dead_workers_unit_goes_back_to_the_queue(tmp_path: Path) -> None:
    cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}", "tune.grace_seconds=6"])
    study = queue(cfg, "units")
    fill(study, [{"unit": 0}, {"unit": 1}])
    dead = study.get_trials()[0]
    study._storage.set_trial_state_values(dead._trial_id, State.RUNNING)  # claimed by a worker that then died
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(7)
    seen: list[dict] = []
    drain(study, work_log(seen))
    assert sorted(seen, key=str) == [{"unit": 0}, {"unit": 1}]
    assert [t.state for t in study.get_trials()] == [State.FAIL, State.COMPLETE, State.COMPLETE]


def frozen(values: dict[int, float]) -> optuna.trial.FrozenTrial:
    """A running trial that reported `values` (percent of training -> held-out accuracy)."""
    return optuna.trial.create_trial(state=State.COMPLETE, value=max(values.values()), intermediate_values=values,
                                     params={}, distributions={})  # fmt: skip


def test_the_rung_pruner_stops_a_recipe_only_when_top_others_did_better_at_the_same_share() -> None:
    study = optuna.create_study(direction="maximize")
    for values in ({25: 0.5, 50: 0.6, 100: 0.7}, {30: 0.4, 60: 0.7, 100: 0.8}):
        study.add_trial(frozen(values))
    t = frozen({10: 0.2, 20: 0.3, 40: 0.35})
    assert at_rung(t, 25) == 0.35 and at_rung(t, 50) is None  # its best up to its first report past 25 %
    assert at_rung(study.trials[1], 25) == 0.4
    assert RungPruner([0.25, 0.5], keep=2).prune(study, t)  # 0.5 and 0.4 beat its 0.35 at 25 %
    assert not RungPruner([0.25, 0.5], keep=3).prune(study, t)  # three must
    assert not RungPruner([0.25, 0.5], keep=2).prune(study, frozen({25: 0.45}))  # only 0.5 beats it
    assert not RungPruner([0.25], keep=1).prune(study, frozen({20: 0.9}))  # no rung reached yet


def test_a_trial_the_search_cut_counts_its_whole_training_and_the_rest_of_its_fold() -> None:
    assert whole_seconds({"stopped_by_time": True, "steps": 20, "max_steps": 80}, 50.0) == 200.0
    assert whole_seconds({"stopped_by_time": False, "steps": 20, "max_steps": 80}, 50.0) == 50.0  # early stopping
    cfg = load_config("configs/demo.yaml", ["folds.k=3", "auto.top=3"])
    a, b, c = (load_config("configs/demo.yaml", [f"experiment={n}"]) for n in "abc")
    rows = [Tried(a, 0.9, 100.0, 50.0), Tried(b, 0.8, 100.0, 100.0), Tried(c, 0.7, 10.0, 10.0)]
    # a: 2.75 x 100 for its other folds and predictions, plus the 50 s left of its search fold; b: 275
    assert choose(cfg, optuna.create_study(), rows, Budget(550 / 60), workers=1) == ["a"]
    assert choose(cfg, optuna.create_study(), rows, Budget(640 / 60), workers=1) == ["a", "b", "c"]
    assert choose(cfg, optuna.create_study(), rows, Budget(310 / 60), workers=2) == ["a", "b"]  # c: 13.75 more


RECIPE = ["train.epochs=2", "train.patience=null", "train.logging_steps=5", "predict.batch_size=64"]
PORTFOLIO = ("auto.portfolio=[{name: patch, config: configs/demo_classifier_patch.yaml}, "
             "{name: mlp, config: configs/demo_classifier_mlp.yaml}, "
             "{name: pooled, config: configs/demo_classifier_pooled.yaml, set: [model.classifier.image_size=48]}]")  # fmt: skip


def auto_sets(data: Path, work: Path, *more: str) -> list[str]:
    return [f"data.root={data}", f"workdir={work}", "experiment=t", PORTFOLIO, "auto.top=2", *RECIPE, *more]


def board(work: Path) -> list[tuple]:
    """The leaderboard without its file names and times."""
    b = leaderboard(work / "submissions")
    return list(b[["rank", "name", "cv", "held_out", "method"]].itertuples(index=False, name=None))


@pytest.mark.e2e(minutes=0.6)
def test_auto_stops_the_weak_recipe_trains_the_best_folds_and_ships_their_blend(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strength = {"t-patch": 0.8, "t-mlp": 0.6, "t-pooled": 0.3}  # held-out accuracy, scripted by recipe
    scripted_accuracy(monkeypatch, lambda cfg, step: strength[cfg.experiment] * min(1.0, 0.5 + step / 20))
    work = tmp_path / "w"
    sets = auto_sets(demo_root, work, "ensemble.drop_subtracting=false")  # both recipes stay, each with what it adds
    res = run_auto(Path("configs/demo.yaml"), sets, minutes=10)
    cfg = res["search_cfg"]
    search = {unit_of(t)["recipe"]: t for t in queue(cfg, SEARCH).get_trials()}
    assert [search[r].state for r in ("t-patch", "t-mlp", "t-pooled")] == [State.COMPLETE, State.COMPLETE, State.PRUNED]
    assert max(search["t-pooled"].intermediate_values) <= 50  # stopped at its first rung
    assert not (tmp_path / "w/experiments/t-pooled/fold0/model").exists()  # a stopped recipe keeps no model
    assert res["chosen"] == ["t-patch", "t-mlp"]
    for name in res["chosen"]:
        for k in range(3):
            assert (work / f"experiments/{name}/fold{k}/train_metrics.json").is_file()
            assert (work / f"experiments/{name}/fold{k}/predictions/test.jsonl").is_file()
    assert res["blend"]["blended"] == ["t-patch", "t-mlp"]
    assert {"short_answer/greedy", "t-mlp:short_answer/greedy"} <= set(res["blend"]["members"])
    top = leaderboard(work / "submissions").iloc[0]
    assert top["cv"] == pytest.approx(max(res["blend"]["cv"], *res["blend"]["members"].values()))
    before = board(work)
    again = run_auto(Path("configs/demo.yaml"), sets, minutes=10)  # a rerun: all done already
    assert again["blend"] is None and board(work) == before
    assert again["blend_lines"] == res["blend_lines"] and any("t-mlp adds" in line for line in res["blend_lines"])
    added = res["blend"]["added"]  # each experiment: blend's nested CV minus the blend's without it
    assert set(added) == {"t-patch", "t-mlp"} and (work / "experiments/t-patch/blend.png").is_file()
    assert [t.state for t in queue(cfg, FOLDS).get_trials()] == [State.COMPLETE] * 6
    assert [t.state for t in queue(cfg, BLEND).get_trials()] == [State.COMPLETE]


def run_cli(sets: list[str], *more: str) -> subprocess.Popen:
    """`python -m competition auto` on the demo config with `sets`, one thread, in its own process."""
    cmd = [sys.executable, "-m", "competition", "auto", "-c", "configs/demo.yaml", "--minutes", "10", *more,
           *(f"--set={s}" for s in sets)]  # fmt: skip
    return subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finished(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def trained_once(work: Path, names: list[str], k: int = 3) -> None:
    """Every fold of `names` trained in one uninterrupted run (no line of its training log says it resumed) and once."""
    for name in names:
        for fold in range(k):
            log = pd.read_json(work / f"experiments/{name}/fold{fold}/train_log.jsonl", lines=True)
            assert log["step"].is_monotonic_increasing, (name, fold)


@pytest.mark.e2e(minutes=1.2)
def test_auto_killed_midway_resumes_to_the_same_leaderboard(demo_root: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    finished(run_cli(auto_sets(demo_root, whole)))
    killed = tmp_path / "killed"
    sets = auto_sets(demo_root, killed, "tune.grace_seconds=6")
    proc = run_cli(sets)
    trainer = killed / "experiments/t-mlp/fold0/trainer"
    deadline = time.monotonic() + 300
    while not list(trainer.glob("checkpoint-*/trainer_state.json")):  # mid-way through the second recipe's trial
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished(run_cli(sets))
    assert board(killed) == board(whole)
    metrics = json.loads((killed / "experiments/t-mlp/fold0/train_metrics.json").read_text())
    assert metrics["resumed_from"], "the kill came after the trial: nothing was resumed"


@pytest.mark.e2e(minutes=1.0)
def test_two_workers_on_one_postgres_train_each_fold_once_to_the_same_leaderboard(demo_root: Path, tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    finished(run_cli(auto_sets(demo_root, alone)))
    with postgres_server() as url:
        shared = tmp_path / "shared"
        sets = auto_sets(demo_root, shared, f"tune.storage={url}")
        workers = [run_cli(sets), run_cli(sets, "--worker")]
        for w in workers:
            finished(w)
        cfg = load_config("configs/demo.yaml", sets)
        folds = queue(cfg, FOLDS).get_trials()
        search = queue(cfg, SEARCH).get_trials()
    assert len({t.user_attrs["worker"] for t in folds + search if "worker" in t.user_attrs}) == 2  # both worked
    units = [tuple(sorted(unit_of(t).items())) for t in folds if t.state == State.COMPLETE]
    assert len(units) == len(set(units)) == 6  # two recipes x three folds, each done once
    assert board(shared) == board(alone)


SAMPLED = ("auto.portfolio=[{name: a, samples: 4, ranges: {train.learning_rate: [1.0e-4, 1.0e-2]}}, "
           "{name: b, set: [train.epochs=2]}]")  # fmt: skip


def test_sampled_variants_follow_the_portfolio_at_sobol_points_of_their_ranges() -> None:
    cfg = load_config("configs/demo.yaml", [SAMPLED])
    recipes = portfolio(cfg, Path("configs/demo.yaml"), [])
    assert [r.experiment for r in recipes] == ["demo-a", "demo-b", *(f"demo-a_v{i}" for i in range(4))]
    rates = [r.train.learning_rate for r in recipes[2:]]
    assert all(1e-4 <= x <= 1e-2 for x in rates) and len(set(rates)) == 4
    assert min(rates) < 1e-3 < max(rates)  # log scale: spread across both decades
    again = portfolio(load_config("configs/demo.yaml", [SAMPLED]), Path("configs/demo.yaml"), [])
    assert [r.train.learning_rate for r in again[2:]] == rates  # every worker and rerun draws the same
    other_seed = portfolio(load_config("configs/demo.yaml", [SAMPLED, "seed=7"]), Path("configs/demo.yaml"), [])
    assert [r.train.learning_rate for r in other_seed[2:]] != rates


@pytest.mark.parametrize(("recipe", "message"), [
    ("{name: a, samples: 2, ranges: {train.learning_rate: [0, 1.0e-2]}}", "need 0 < low <= high"),
    ("{name: a, samples: 2}", "needs ranges to sample"),
    ("{name: a_v0}, {name: a, samples: 1, ranges: {train.learning_rate: [1.0e-4, 1.0e-3]}}", "share a name"),
])  # fmt: skip
def test_bad_sampled_recipes_are_refused(recipe: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        cfg = load_config("configs/demo.yaml", [f"auto.portfolio=[{recipe}]"])
        portfolio(cfg, Path("configs/demo.yaml"), [])
