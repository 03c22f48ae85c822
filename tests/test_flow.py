"""The stages after training, for real on a trained tiny model: predict, cv, tune, ensemble, submit."""

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


@pytest.mark.e2e(minutes=0.5)
def test_predict_cv_tune_ensemble_submit(trained: tuple[list[str], Path], tmp_path: Path) -> None:
    sets, work = trained
    shutil.copytree(work, tmp_path / "w")
    sets = [s if not s.startswith("workdir=") else f"workdir={tmp_path / 'w'}" for s in sets] + FLOW
    exp = tmp_path / "w" / "experiments" / "demo"
    cli("predict", "--fold", "0", sets=sets)
    cli("cv", sets=sets)
    cv = json.loads((exp / "cv.json").read_text())
    assert {m["member"] for m in cv["members"]} == {
        f"{p}/{d}" for p in ("short_answer", "plain") for d in ("greedy", "vocab")
    }
    assert (exp / "cv.png").stat().st_size > 1000 and "Per question type" in (exp / "cv.md").read_text()

    # a killed vote study continues with the next trial numbers
    cmd = [sys.executable, "-m", "competition", "tune", "--study", "vote", "--trials", "500", "-c", "configs/demo.yaml"]
    cmd += [x for s in sets for x in ("--set", s)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.time() + 120
    while time.time() < deadline and (
        not (exp / "optuna.db").exists() or len(trial_numbers(exp / "optuna.db", "demo-vote")) < 4
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = trial_numbers(exp / "optuna.db", "demo-vote")
    assert 4 <= len(before) < 500
    cli("tune", "--study", "vote", "--trials", "3", sets=sets)
    after = trial_numbers(exp / "optuna.db", "demo-vote")
    assert after == list(range(len(before) + 3))
    cli("tune", "--study", "decoding", "--trials", "3", sets=sets)
    tuned = (exp / "tuned.yaml").read_text()
    assert "vote:" in tuned and "decoding:" in tuned

    cli("predict", "--fold", "0", sets=sets)  # adds the tuned decoding's rows only, unless it decodes as greedy or vocab
    rows = pd.read_json(exp / "fold0" / "predictions" / "oof.jsonl", lines=True)
    tuned_rows = {"tuned"} if tuned_job(load_config("configs/demo.yaml", sets)) else set()
    assert (
        set(rows["decoding"]) == {"greedy", "vocab", *tuned_rows}
        and not rows.duplicated(["id", "prompt", "decoding"]).any()
    )

    out = cli("ensemble", sets=sets)
    assert "held-out accuracy" in out
    board = pd.read_csv(tmp_path / "w" / "submissions" / "leaderboard.csv")
    ens = json.loads(next((tmp_path / "w" / "submissions").glob("*-demo-ensemble.json")).read_text())
    best = max(m["accuracy"] for m in json.loads((exp / "cv.json").read_text())["members"])
    assert ens["cv"] >= best - 1e-9
    # a vote that only ties its best member ranks below it: the member ships
    assert (board.loc[0, "name"] == "demo-ensemble") == (ens["cv"] > best + 1e-9)
    sub = tmp_path / "w" / "submissions" / ens["file"]
    cli("submit", "validate", str(sub), sets=sets)
    cli("submit", "record", str(sub), "--public", "0.5", sets=sets)
    row = pd.read_csv(tmp_path / "w" / "submissions" / "leaderboard.csv").set_index("name").loc["demo-ensemble"]
    assert row["public"] == 0.5 and abs(row["gap"] - (0.5 - ens["cv"])) < 1e-9
