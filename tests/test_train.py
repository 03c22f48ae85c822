"""Per-fold training: modes freeze the right weights, adapters reload, killed runs resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from competition.config import Config, load_config
from competition.data import load_competition
from competition.folds import read_folds, write_folds
from competition.modeling import build_base, load_trained
from competition.train import tokenizer_texts, train_fold
from tests.test_modeling import logits

FAST = ["train.per_device_batch_size=8", "train.logging_steps=1", "train.save_steps=2", "train.learning_rate=5e-3",
        "train.warmup_ratio=0", "model.tiny.vision_layers=1", "model.tiny.text_layers=1"]  # fmt: skip


def setup(root: Path, workdir: Path, *sets: str) -> tuple[Config, object, object]:
    cfg = load_config("configs/demo.yaml", [f"data.root={root}", f"workdir={workdir}", "folds.k=3", *FAST, *sets])
    comp = load_competition(cfg.data)
    write_folds(cfg, comp.train)
    return cfg, comp, read_folds(cfg)


def test_projector_mode_trains_only_the_projector(demo_root: Path, tmp_path: Path) -> None:
    cfg, comp, folds = setup(demo_root, tmp_path, "train.mode=projector", "train.max_steps=3")
    metrics, _ = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    assert metrics["steps"] == 3
    base, _ = build_base(cfg.model, tokenizer_texts(comp), cfg.seed)
    trained, _ = load_trained(cfg.fold_dir(0) / "model", cfg.model)
    after = dict(trained.named_parameters())
    changed = {n for n, p in base.named_parameters() if not torch.equal(p, after[n])}
    assert changed and all("multi_modal_projector" in n for n in changed), changed
    assert metrics["trainable_parameters"] == sum(p.numel() for p in base.model.multi_modal_projector.parameters())


def test_bf16_weights_that_train_take_small_updates(demo_root: Path, tmp_path: Path) -> None:
    sets = ["model.dtype=bfloat16", "train.mode=projector", "train.projector_lr=2e-5", "train.max_steps=10"]
    cfg, comp, folds = setup(demo_root, tmp_path, *sets)
    _, model = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    base, _ = build_base(cfg.model, tokenizer_texts(comp), cfg.seed)
    before = dict(base.model.multi_modal_projector.named_parameters())
    after = dict(model.model.multi_modal_projector.named_parameters())
    assert all(p.dtype == torch.float32 for p in after.values())
    assert next(model.model.language_model.parameters()).dtype == torch.bfloat16  # frozen weights stay bf16
    same = sum(int((after[n].float() == before[n].float()).sum()) for n in after)
    assert same / sum(p.numel() for p in after.values()) < 0.01


def test_lora_saves_an_adapter_that_reloads_to_the_same_predictions(demo_root: Path, tmp_path: Path) -> None:
    cfg, comp, folds = setup(demo_root, tmp_path, "train.mode=lora", "train.max_steps=3", "train.lora.r=4")
    _, model = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    saved = sorted(p.name for p in (cfg.fold_dir(0) / "model").iterdir())
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved
    model.eval()
    trained, processor = load_trained(cfg.fold_dir(0) / "model", cfg.model)
    base, _ = build_base(cfg.model, tokenizer_texts(comp), cfg.seed)
    assert torch.allclose(logits(model, processor), logits(trained, processor), atol=1e-5)
    assert not torch.allclose(logits(base, processor), logits(trained, processor), atol=1e-3)


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("mode", ["full", "projector", "lora"])
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(demo_root: Path, tmp_path: Path, mode: str) -> None:
    sets = [f"train.mode={mode}", "train.max_steps=6", "train.save_steps=3", "train.lora.r=4"]
    cfg, comp, folds = setup(demo_root, tmp_path / "straight", *sets)
    _, straight = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    cfg, comp, folds = setup(demo_root, tmp_path / "killed", *sets)
    train_fold(cfg, comp, folds, 0, log=lambda s: None)
    shutil.rmtree(cfg.fold_dir(0) / "model")  # what a kill just after checkpoint-3 leaves behind
    shutil.rmtree(cfg.fold_dir(0) / "trainer" / "checkpoint-6")
    metrics, resumed = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    assert metrics["resumed_from"].endswith("checkpoint-3") and metrics["steps"] == 6
    want, got = trainable(straight), trainable(resumed)
    assert want.keys() == got.keys() and len(want) > 0
    far = [n for n in want if not torch.allclose(want[n], got[n], atol=1e-5)]
    assert not far, f"{len(far)} of {len(want)} trainable tensors differ after resuming, e.g. {far[:3]}"


def read_steps(log: Path) -> list[int]:
    return [json.loads(line)["step"] for line in log.read_text().splitlines() if "loss" in json.loads(line)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_killed_training_resumes_from_its_last_checkpoint(demo_root: Path, tmp_path: Path, mode: str) -> None:
    cfg, _, _ = setup(demo_root, tmp_path, f"train.mode={mode}")
    sets = [
        f"data.root={demo_root}",
        f"workdir={tmp_path}",
        "folds.k=3",
        *FAST,
        f"train.mode={mode}",
        "train.max_steps=40",
    ]
    cmd = [sys.executable, "-m", "competition", "train", "-c", "configs/demo.yaml", "--fold", "0"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    trainer_dir = cfg.fold_dir(0) / "trainer"
    deadline = time.time() + 300
    while not list(trainer_dir.glob("checkpoint-*/trainer_state.json")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cfg.fold_dir(0) / "model").exists(), "the run finished before it was killed"
    killed_at = max(int(p.parent.name.split("-")[1]) for p in trainer_dir.glob("checkpoint-*/trainer_state.json"))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming from {trainer_dir}/checkpoint-" in res.stdout
    metrics = json.loads((cfg.fold_dir(0) / "train_metrics.json").read_text())
    assert metrics["steps"] == 40 and metrics["resumed_from"].endswith(f"checkpoint-{killed_at}")
    steps = read_steps(cfg.fold_dir(0) / "train_log.jsonl")
    resumed = steps[steps.index(killed_at) + 1 :] if killed_at in steps else steps
    assert killed_at + 1 in steps and resumed[-1] == 40
