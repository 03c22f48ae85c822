"""The GPU configs as shipped, on tiny folders in the formats users have on disk: folds, train,
SIGKILL after a checkpoint, resume, predict. Only paths and sizes are overridden."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from competition.config import load_config
from competition.data import load_competition
from competition.folds import write_folds
from tests.user_formats import build_user_formats

pytestmark = pytest.mark.e2e(minutes=1)

SIZES = ["train.per_device_batch_size=4", "train.effective_batch_size=4", "train.max_steps=24", "train.eval_steps=4", "train.eval_questions=32",
         "train.logging_steps=1", "train.lora.r=8", "train.lora.alpha=16", "predict.batch_size=16"]  # fmt: skip
CASES = {
    "seed_clip_vision_llama": ("configs/seed_llava_vicuna7b.yaml", ["model.vision_tower={clip_vision}",
                                                                    "model.language_model={llama}"]),
    "seed_clip_model_sentencepiece": ("configs/seed_llava_vicuna7b.yaml", ["model.vision_tower={clip_model}",
                                                                           "model.language_model={llama_sentencepiece}"]),
    "llava15_lora": ("configs/llava15_7b_lora.yaml", ["model.name_or_path={llava_hf}"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def folders(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    train = pd.read_csv(demo_root / "train.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(demo_root / "test.csv", dtype=str, keep_default_na=False)
    texts = [*train["question"], *train["answer"], *test["question"]]
    return build_user_formats(tmp_path_factory.mktemp("user_formats"), texts)


def command(config: str, sets: list[str], *args: str) -> list[str]:
    cmd = [sys.executable, "-m", "competition", *args, "-c", config]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def kill_after_first_checkpoint(cmd: list[str], trainer_dir: Path) -> None:
    """Start a training run and SIGKILL it as soon as a complete checkpoint exists."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 600
    while not list(trainer_dir.glob("checkpoint-*/trainer_state.json")) and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def saved_weights(model_dir: Path) -> dict:
    """Every tensor the trained model's folder holds (the base model beside an adapter excluded)."""
    return {f"{f.name}:{k}": v for f in sorted(model_dir.glob("*.safetensors")) for k, v in load_file(f).items()}


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.e2e(minutes=1.5)
@pytest.mark.parametrize("case", list(CASES))
def test_shipped_gpu_config_trains_resumes_and_predicts(
    case: str, folders: dict[str, Path], demo_root: Path, tmp_path: Path
) -> None:
    config, paths = CASES[case]
    paths = [p.format(**{k: str(v) for k, v in folders.items()}) for p in paths]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    common = [f"data.root={demo_root}", *paths, *SIZES]
    run(command(config, [*common, f"workdir={straight}"], "train", "--fold", "0"))  # writes its missing folds.csv
    sets = [*common, f"workdir={killed}"]
    cfg = load_config(config, sets)  # the folds in-process: the killed run's folder must exist before it starts
    write_folds(cfg, load_competition(cfg.data).train)
    exp = cfg.exp_dir
    kill_after_first_checkpoint(command(config, sets, "train", "--fold", "0"), exp / "fold0" / "trainer")
    assert not (exp / "fold0" / "model").exists(), "the run finished before it was killed"
    resumed = run(command(config, sets, "train", "--fold", "0"))
    assert "resuming from" in resumed.stdout
    want, got = saved_weights(straight / "experiments" / exp.name / "fold0" / "model"), saved_weights(exp / "fold0" / "model")
    assert want.keys() == got.keys() and want
    far = [k for k in want if not (want[k] - got[k]).abs().max() <= 1e-5]
    assert not far, f"{len(far)} of {len(want)} saved tensors differ from the uninterrupted run's: {far[:3]}"
    run(command(config, sets, "predict", "--fold", "0"))
    for split in ("oof", "test"):
        rows = pd.read_json(exp / "fold0" / "predictions" / f"{split}.jsonl", lines=True, dtype=False)
        assert len(rows) and (rows["raw"].str.len() > 0).mean() > 0.5, rows["raw"].head()
