"""The stages after training, for real on a trained tiny model, one test each: cv, the vote and decoding studies,
ensemble, submit (on fold 0's predictions, made once)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from competition.cli import app
from competition.config import load_config
from competition.tuned import tuned_job

runner = CliRunner()
FLOW = ["predict.prompts=[short_answer, plain]", "predict.decodings=[{name: greedy}, {name: vocab, constrained: true}]",
        "tune.max_questions=30", "tune.prune_chunks=2"]  # fmt: skip


def cli(*args: str, sets: list[str]) -> str:
    res = runner.invoke(app, [*args, "-c", "configs/demo.yaml", *[x for s in sets for x in ("--set", s)]])
    assert res.exit_code == 0, res.output + res.stderr
    return res.stdout


def trial_numbers(db: Path, study: str) -> list[int]:
    """Trial numbers of a study; none while Optuna has not created its tables yet."""
    try:
        with sqlite3.connect(db) as con:
            q = "select number from trials join studies using (study_id) where study_name = ? order by number"
            return [n for (n,) in con.execute(q, (study,))]
    except sqlite3.OperationalError:
        return []


@pytest.fixture(scope="module")
def predicted(trained: tuple[list[str], Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """The trained workdir with fold 0's OOF and test answers: (config overrides, workdir)."""
    sets, work = trained
    copy = tmp_path_factory.mktemp("predicted") / "w"
    shutil.copytree(work, copy)
    sets = [s if not s.startswith("workdir=") else f"workdir={copy}" for s in sets] + FLOW
    cli("predict", "--fold", "0", sets=sets)
    return sets, copy


def own_copy(predicted: tuple[list[str], Path], tmp_path: Path) -> tuple[list[str], Path]:
    """A private copy of the predicted workdir (later stages write into it): (config overrides, experiment folder)."""
    sets, work = predicted
    shutil.copytree(work, tmp_path / "w")
    sets = [s if not s.startswith("workdir=") else f"workdir={tmp_path / 'w'}" for s in sets]
    return sets, tmp_path / "w" / "experiments" / "demo"


@pytest.mark.e2e(minutes=0.1)
def test_cv_scores_every_prompt_and_decoding(predicted: tuple[list[str], Path], tmp_path: Path) -> None:
    sets, exp = own_copy(predicted, tmp_path)
    cli("cv", sets=sets)
    cv = json.loads((exp / "cv.json").read_text())
    assert {m["member"] for m in cv["members"]} == {f"{p}/{d}" for p in ("short_answer", "plain") for d in ("greedy", "vocab")}
    assert (exp / "cv.png").stat().st_size > 1000 and "Per question type" in (exp / "cv.md").read_text()


@pytest.mark.e2e(minutes=0.2)
def test_a_killed_vote_study_continues_with_the_next_trial_numbers(predicted: tuple[list[str], Path], tmp_path: Path) -> None:
    sets, exp = own_copy(predicted, tmp_path)
    cmd = [sys.executable, "-m", "competition", "tune", "--study", "vote", "--trials", "500", "-c", "configs/demo.yaml"]
    cmd += [x for s in sets for x in ("--set", s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and (not (exp / "optuna.db").exists() or len(trial_numbers(exp / "optuna.db", "demo-vote")) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = trial_numbers(exp / "optuna.db", "demo-vote")
    assert 4 <= len(before) < 500
    cli("tune", "--study", "vote", "--trials", "3", sets=sets)
    assert trial_numbers(exp / "optuna.db", "demo-vote") == list(range(len(before) + 3))
    assert "vote:" in (exp / "tuned.yaml").read_text()


@pytest.mark.e2e(minutes=0.1)
def test_the_decoding_study_adds_only_its_tuned_rows(predicted: tuple[list[str], Path], tmp_path: Path) -> None:
    sets, exp = own_copy(predicted, tmp_path)
    cli("tune", "--study", "decoding", "--trials", "3", sets=sets)
    assert "decoding:" in (exp / "tuned.yaml").read_text()
    cli("predict", "--fold", "0", sets=sets)  # adds the tuned decoding's rows only, unless it decodes as greedy or vocab
    rows = pd.read_json(exp / "fold0" / "predictions" / "oof.jsonl", lines=True)
    tuned_rows = {"tuned"} if tuned_job(load_config("configs/demo.yaml", sets)) else set()
    assert set(rows["decoding"]) == {"greedy", "vocab", *tuned_rows}
    assert not rows.duplicated(["id", "prompt", "decoding"]).any()


@pytest.mark.e2e(minutes=0.1)
def test_ensemble_ships_a_vote_only_when_it_beats_its_best_member(predicted: tuple[list[str], Path], tmp_path: Path) -> None:
    sets, exp = own_copy(predicted, tmp_path)
    cli("cv", sets=sets)
    assert "held-out accuracy" in cli("ensemble", sets=sets)
    board = pd.read_csv(exp.parents[1] / "submissions" / "leaderboard.csv")
    ens = json.loads(next((exp.parents[1] / "submissions").glob("*-demo-ensemble.json")).read_text())
    best = max(m["accuracy"] for m in json.loads((exp / "cv.json").read_text())["members"])
    assert ens["cv"] >= best - 1e-9
    assert (board.loc[0, "name"] == "demo-ensemble") == (ens["cv"] > best + 1e-9)  # a tie ships the member


@pytest.mark.e2e(minutes=0.1)
def test_submit_validates_and_records_a_public_score(predicted: tuple[list[str], Path], tmp_path: Path) -> None:
    sets, exp = own_copy(predicted, tmp_path)
    cli("ensemble", sets=sets)
    submissions = exp.parents[1] / "submissions"
    ens = json.loads(next(submissions.glob("*-demo-ensemble.json")).read_text())
    sub = submissions / ens["file"]
    cli("submit", "validate", str(sub), sets=sets)
    cli("submit", "record", str(sub), "--public", "0.5", sets=sets)
    row = pd.read_csv(submissions / "leaderboard.csv").set_index("name").loc["demo-ensemble"]
    assert row["public"] == 0.5 and abs(row["gap"] - (0.5 - ens["cv"])) < 1e-9
