"""Studies: a refusal writes nothing; a killed worker's trial is failed on resume, a live worker's is not."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from typer.testing import CliRunner

from competition.cli import app
from competition.config import load_config
from competition.data import load_competition
from competition.folds import write_folds
from competition.tune import open_study, run_study, storage_url
from tests.postgres import postgres_server
from tests.test_ensemble import predicted
from tests.test_train import scripted_accuracy

State = optuna.trial.TrialState
LONG_AGO = datetime(2000, 1, 1)


def files_under(root: Path) -> list[str]:
    """Every file below `root`, relative."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_vote_study_without_predictions_refuses_and_writes_nothing(data_copy: Path, tmp_path: Path) -> None:
    sets = [f"data.root={data_copy}", f"workdir={tmp_path / 'w'}"]
    cfg = load_config("configs/demo.yaml", sets)
    write_folds(cfg, load_competition(cfg.data).train)
    before = files_under(tmp_path / "w")
    args = ["tune", "--study", "vote", "--trials", "2", "-c", "configs/demo.yaml"]
    res = CliRunner().invoke(app, args + [x for s in sets for x in ("--set", s)])
    assert res.exit_code == 2
    assert res.stderr == f"error: {cfg.exp_dir}: no oof predictions yet; run `predict` first\n"
    assert files_under(tmp_path / "w") == before == ["experiments/demo/folds.csv"]


# A worker that dies by SIGKILL in the middle of its trial, after the trial's first heartbeat.
KILLED_WORKER = """
import sys, time
from competition.config import load_config
from competition.tune import open_study
open_study(load_config("configs/demo.yaml", sys.argv[1:]), "vote").optimize(lambda t: time.sleep(600), n_trials=1)
"""


def count(url: str, query: str) -> int:
    """The number a count query gives on the storage (0 before Optuna made its tables)."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as con:
            return con.execute(sqlalchemy.text(query)).scalar_one() if engine.dialect.has_table(con, "trials") else 0
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    """Poll `condition` until it holds or `seconds` pass."""
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.2)


def kill_a_worker_mid_trial(url: str, sets: list[str]) -> None:
    """Run KILLED_WORKER into its trial, SIGKILL it, then age its heartbeat past any grace period."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, *sets])
    wait_for(lambda: proc.poll() is not None or count(url, "select count(*) from trials") > 0, 120)
    wait_for(lambda: count(url, "select count(*) from trial_heartbeats") > 0, 5)  # beats right after it starts
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert count(url, "select count(*) from trials where state = 'RUNNING'") == 1
    engine = sqlalchemy.create_engine(url)
    aged = sqlalchemy.text("update trial_heartbeats set heartbeat = :t")
    with engine.begin() as con:  # as if the resume came long after the kill
        con.execute(aged.bindparams(sqlalchemy.bindparam("t", type_=sqlalchemy.DateTime())), {"t": LONG_AGO})
    engine.dispose()


def resume_beside_a_live_worker(data: Path, work: Path, storage: list[str]) -> None:
    """A killed worker's trial, a live worker's trial, then a resumed study: killed FAIL, live RUNNING."""
    sets = [f"data.root={data}", f"workdir={work}", *storage]
    cfg, comp, folds = predicted(data, work, storage)
    url = storage_url(cfg)
    kill_a_worker_mid_trial(url, sets)
    release = threading.Event()
    live = threading.Thread(
        target=lambda: open_study(cfg, "vote").optimize(lambda t: float(release.wait(60)), n_trials=1)
    )
    live.start()
    try:
        wait_for(lambda: count(url, "select count(*) from trials") == 2, 60)
        study, _ = run_study(cfg, comp, folds, "vote", 2)
        assert [t.state for t in study.trials] == [State.FAIL, State.RUNNING, State.COMPLETE, State.COMPLETE]
    finally:
        release.set()
        live.join()
    assert optuna.load_study(study_name="demo-vote", storage=url).trials[1].state == State.COMPLETE


@pytest.mark.e2e(minutes=0.15)
def test_resume_fails_a_killed_trial_but_not_a_live_workers(data_copy: Path, tmp_path: Path) -> None:
    resume_beside_a_live_worker(data_copy, tmp_path / "w", [])


@pytest.mark.e2e(minutes=0.2)
def test_resume_fails_a_killed_trial_but_not_a_live_workers_on_postgres(data_copy: Path, tmp_path: Path) -> None:
    with postgres_server() as url:
        resume_beside_a_live_worker(data_copy, tmp_path / "w", [f"tune.storage={url}"])


TRAIN_STUDY = ["folds.k=3", "train.per_device_batch_size=8", "train.max_steps=8", "train.eval_steps=2",
               "train.patience=4", "model.tiny.vision_layers=1", "model.tiny.text_layers=1", "tune.min_gain=0"]  # fmt: skip


def peaked_at_twice_the_learning_rate(base: float) -> Callable:
    """Held-out accuracy that grows with the step, best at learning rate 2 x base and falling off either side."""
    return lambda cfg, step: step / 8 * math.exp(-abs(math.log(cfg.train.learning_rate / (2 * base))))


@pytest.mark.train(minutes=0.3)
def test_the_training_study_prunes_and_train_takes_its_best_parameters(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from competition.pipeline import stage_inputs
    from competition.train import train_fold
    from competition.tune import default_train
    from competition.tuned import load_tuned

    cfg = load_config("configs/demo.yaml", [f"data.root={demo_root}", f"workdir={tmp_path}", *TRAIN_STUDY])
    comp, folds = stage_inputs(cfg)
    lr = cfg.train.learning_rate
    scripted_accuracy(monkeypatch, peaked_at_twice_the_learning_rate(lr))
    own = default_train(cfg)
    study = open_study(cfg, "train")
    for x in (1, 2, 0.5, 0.2):  # the config's own, two neighbours, then one far worse than the median
        study.enqueue_trial({**own, "learning_rate": lr * x})
    study, path = run_study(cfg, comp, folds, "train", 5)
    states = [t.state for t in study.trials]
    assert states[:4] == [State.COMPLETE] * 3 + [State.PRUNED] and states.count(State.PRUNED) >= 1
    assert list(study.trials[3].intermediate_values) == [2]  # pruned at its first evaluation, step 2 of 8
    assert study.best_trial.number == 1
    tuned = load_tuned(cfg)["train"]
    assert tuned["learning_rate"] == pytest.approx(2 * lr) and tuned["pack_questions"] == cfg.train.pack_questions
    assert not list((cfg.exp_dir / "train-study").rglob("*.safetensors"))  # trials keep logs, not weights

    lines: list[str] = []
    metrics, _ = train_fold(cfg, comp, folds, 0, log=lines.append)
    assert metrics["tuned"] == tuned and metrics["best_accuracy"] == pytest.approx(study.best_value)
    assert any(line.startswith(f"tuned (tuned.yaml): learning_rate={2 * lr:.4g}") for line in lines), lines
    trained_with = yaml.safe_load((cfg.fold_dir(0) / "config.yaml").read_text())["train"]
    assert trained_with["learning_rate"] == pytest.approx(2 * lr)  # the fold's config.yaml is the one that trained
    from competition.pipeline import train_one

    train_one(cfg, 0)  # the stage saves the experiment's config resolved the same way (the fold is done already)
    assert yaml.safe_load((cfg.exp_dir / "config.yaml").read_text())["train"] == trained_with


def test_a_tuned_decoding_that_decodes_as_a_configured_one_adds_no_member(tmp_path: Path) -> None:
    from competition.config import DecodingConfig
    from competition.tuned import save_tuned, tuned_job

    cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}"])
    cfg.exp_dir.mkdir(parents=True)
    greedy = {"prompt": "short_answer", **DecodingConfig(name="tuned").model_dump()}
    save_tuned(cfg, {"decoding": greedy})
    assert tuned_job(cfg) is None
    save_tuned(cfg, {"decoding": {**greedy, "num_beams": 3}})
    prompt, decoding = tuned_job(cfg)
    assert (prompt, decoding.name, decoding.num_beams) == ("short_answer", "tuned", 3)
    save_tuned(cfg, {"decoding": {**greedy, "prompt": "plain"}})  # greedy, on a prompt the config does not predict
    assert tuned_job(cfg)[0] == "plain"
