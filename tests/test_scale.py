"""Scaling out with existing engines, for real on CPU: torchrun training, tuning workers on PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from safetensors.torch import load_file

from competition.config import DecodingConfig, load_config
from competition.data import load_competition
from competition.engine import Engine
from competition.folds import fold_rows, read_folds, write_folds
from competition.images import Images, ImageTransform
from competition.modeling import load_trained
from competition.synthetic import generate
from tests.postgres import postgres_server

pytestmark = pytest.mark.e2e(minutes=1)

STEPS = ["train.max_steps=150", "train.save_steps=10000", "train.eval_steps=0", "train.logging_steps=50", "train.effective_batch_size=32"]


def val_accuracy(sets: list[str]) -> float:
    cfg = load_config("configs/demo.yaml", sets)
    comp = load_competition(cfg.data)
    folds = read_folds(cfg)
    model, processor = load_trained(cfg.fold_dir(0) / "model", cfg.model)
    val = fold_rows(comp, folds, 0, "val")
    engine = Engine(model, processor, Images(comp, "train", ImageTransform(processor, "pad"), cache=True), batch_size=64)
    got = {
        r: t
        for b in engine.answer("short_answer", DecodingConfig(), val["question"].tolist(), val["image_id"].tolist())
        for r, t, *_ in b
    }
    return sum(got[i] == a for i, a in enumerate(val["answer"])) / len(val)


@pytest.mark.e2e(minutes=2)
def test_two_process_training_predicts_like_one_process(tmp_path: Path) -> None:
    root = tmp_path / "data"
    generate(root, train_images=400, test_images=5, seed=11)
    runs = {}
    for procs, per_device in ((1, 32), (2, 16)):
        sets = [
            f"data.root={root}",
            f"workdir={tmp_path / str(procs)}",
            f"train.per_device_batch_size={per_device}",
            *STEPS,
        ]
        cfg = load_config("configs/demo.yaml", sets)
        write_folds(cfg, load_competition(cfg.data).train)
        launcher = (
            [sys.executable, "-m", "competition"]
            if procs == 1
            else [
                str(Path(sys.executable).parent / "torchrun"),
                "--standalone",
                f"--nproc_per_node={procs}",
                "-m",
                "competition",
            ]
        )
        cmd = [*launcher, "train", "-c", "configs/demo.yaml", "--fold", "0", *[x for s in sets for x in ("--set", s)]]
        res = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"x {procs} processes = effective 32" in res.stdout
        runs[procs] = val_accuracy(sets)
    print(runs)
    assert abs(runs[1] - runs[2]) <= 0.08, runs


@pytest.mark.e2e(minutes=1)
def test_tuning_workers_share_one_postgres_study(trained: tuple[list[str], Path], tmp_path: Path) -> None:
    sets, work = trained
    shutil.copytree(work, tmp_path / "w")
    sets = [s if not s.startswith("workdir=") else f"workdir={tmp_path / 'w'}" for s in sets]
    sets += ["predict.prompts=[short_answer, plain]", "predict.decodings=[{name: greedy}]"]
    try:
        server = postgres_server()
        url = server.__enter__()
    except RuntimeError as e:
        pytest.fail(f"PostgreSQL is needed for this test and could not be started: {e}")
    try:
        base = [sys.executable, "-m", "competition"]
        flags = ["-c", "configs/demo.yaml", *[x for s in [*sets, f"tune.storage={url}"] for x in ("--set", s)]]
        subprocess.run([*base, "predict", "--fold", "0", "--split", "oof", *flags], check=True, capture_output=True)
        res = subprocess.run(
            [*base, "tune", "--study", "vote", "--trials", "12", "--workers", "2", *flags],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert res.returncode == 0, res.stderr[-3000:]
        study = optuna.load_study(study_name="demo-vote", storage=url)
        numbers = sorted(t.number for t in study.trials)
        assert numbers == list(range(12))
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    finally:
        server.__exit__(None, None, None)


def trained_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights a fold's `model/` holds in its own files: the adapter of a LoRA run, the whole model of a full one."""
    files = sorted(folder.glob("*.safetensors"))
    return {k: v for f in files for k, v in load_file(str(f)).items()}


@pytest.mark.e2e(minutes=1)
def test_deepspeed_zero3_saves_the_weights_a_plain_run_saves(demo_root: Path, tmp_path: Path) -> None:
    """LoRA, where an ungathered save is silent (PEFT only warns); full and projector saves gather the same way."""
    pytest.importorskip("deepspeed")
    saved = {}
    for ds in (None, "configs/deepspeed/zero3.json"):
        sets = [f"data.root={demo_root}", f"workdir={tmp_path / str(bool(ds))}", "train.mode=lora",
                "train.max_steps=4", "train.eval_steps=0", "train.per_device_batch_size=8", "train.cache_images=true",
                "train.precision=fp32",  # the same arithmetic in both runs (auto is bf16 on some CPUs, not with DeepSpeed)
                *([f"train.deepspeed={ds}"] if ds else [])]  # fmt: skip
        cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=1", "-m", "competition",
               "train", "-c", "configs/demo.yaml", "--fold", "0", *[x for s in sets for x in ("--set", s)]]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        cfg = load_config("configs/demo.yaml", sets)
        load_trained(cfg.fold_dir(0) / "model", cfg.model)  # loads: every saved tensor has its shape
        saved[ds] = trained_weights(cfg.fold_dir(0) / "model")
    plain, zero3 = saved.values()
    assert plain.keys() == zero3.keys()
    for name, weight in plain.items():
        assert zero3[name].shape == weight.shape, name
        torch.testing.assert_close(zero3[name], weight, rtol=1e-3, atol=1e-4, msg=name)
