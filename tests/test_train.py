"""Per-fold training: modes freeze the right weights, adapters reload, killed runs resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from competition.config import Config, load_config
from competition.data import load_competition
from competition.families import family_for, tokenizer_texts
from competition.folds import read_folds, write_folds
from competition.modeling import build_base, load_trained
from competition.train import train_fold
from tests.test_modeling import logits

pytestmark = pytest.mark.train(minutes=0.2)

FAST = ["train.per_device_batch_size=8", "train.logging_steps=1", "train.save_steps=2", "train.eval_steps=0", "train.learning_rate=5e-3",
        "train.warmup_ratio=0", "model.tiny.vision_layers=1", "model.tiny.text_layers=1"]  # fmt: skip


def setup(root: Path, workdir: Path, *sets: str, config: str = "configs/demo.yaml") -> tuple[Config, object, object]:
    cfg = load_config(config, [f"data.root={root}", f"workdir={workdir}", "folds.k=3", *FAST, *sets])
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


def every_tensor(cfg: Config, fold: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of the fold's model/ as the family loads it: parameters and buffers."""
    model, _ = family_for(cfg).load(cfg.fold_dir(fold) / "model")
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def running_statistics(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: t for n, t in tensors.items() if "running_mean" in n}


RESUMED = {  # (config, overrides, whether a BatchNorm trains: a frozen stem keeps its statistics)
    "llava full": ("configs/demo.yaml", ["train.mode=full"], True),
    "llava projector": ("configs/demo.yaml", ["train.mode=projector"], False),
    "llava lora": ("configs/demo.yaml", ["train.mode=lora", "train.lora.r=4"], False),
    "classifier": ("configs/demo_classifier.yaml", ["model.classifier.hidden=32", "train.pack_questions=2"], True),
    # two steps an epoch: checkpoint-3 falls inside the second epoch, whose batch order and flipped views the resumed
    # run must draw as the uninterrupted one did
    "classifier mid-epoch, flips": ("configs/demo_classifier_mlp.yaml", ["train.per_device_batch_size=32",
                                    "train.flips=horizontal", "model.classifier.image_size=32"], True),  # fmt: skip
}


@pytest.mark.parametrize("case", list(RESUMED))
def test_resumed_run_ends_with_every_tensor_of_an_uninterrupted_one(demo_root: Path, tmp_path: Path, case: str) -> None:
    config, sets, norm_trains = RESUMED[case]
    sets = [*sets, "train.max_steps=6", "train.eval_steps=3", "train.eval_questions=16"]
    cfg, comp, folds = setup(demo_root, tmp_path / "straight", *sets, config=config)
    straight_metrics, _ = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    want = every_tensor(cfg)
    cfg, comp, folds = setup(demo_root, tmp_path / "killed", *sets, config=config)
    train_fold(cfg, comp, folds, 0, log=lambda s: None)
    for name in ("model", "trainer/checkpoint-6"):  # what a kill just after checkpoint-3 leaves behind
        shutil.rmtree(cfg.fold_dir(0) / name)
    (cfg.fold_dir(0) / "train_metrics.json").unlink()
    metrics, _ = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    assert metrics["resumed_from"].endswith("checkpoint-3") and metrics["steps"] == 6
    got = every_tensor(cfg)
    assert want.keys() == got.keys()
    moved = [t.abs().sum() > 0 for t in running_statistics(want).values()]
    assert moved and all(moved) == norm_trains, "the case no longer has the BatchNorm statistics it is meant to test"
    differ = [n for n in want if not torch.equal(want[n], got[n])]
    assert not differ, f"{len(differ)} of {len(want)} tensors differ after resuming, e.g. {differ[:3]}"
    assert metrics["loss"] == pytest.approx(straight_metrics["loss"], rel=1e-6)  # the whole run's, not the resumed steps'


@pytest.mark.e2e(minutes=0.5)
def test_rerunning_a_finished_fold_changes_nothing_and_force_retrains_it(demo_root: Path, tmp_path: Path) -> None:
    cfg, _, _ = setup(demo_root, tmp_path, "train.max_steps=4")
    cmd = [sys.executable, "-m", "competition", "train", "-c", "configs/demo.yaml", "--fold", "0"]
    for s in [f"data.root={demo_root}", f"workdir={tmp_path}", "folds.k=3", *FAST, "train.max_steps=4"]:
        cmd += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    model_dir = cfg.fold_dir(0) / "model"
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in model_dir.rglob("*")}
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "fold 0: already trained" in again.stdout and "resuming" not in again.stdout
    assert {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in model_dir.rglob("*")} == stamps
    (cfg.fold_dir(0) / "trainer" / "checkpoint-99").mkdir()  # a newer checkpoint that --force must not resume from
    forced = subprocess.run([*cmd, "--force"], capture_output=True, text=True, env=env, timeout=600)
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert "--force removed its trainer, model" in forced.stdout and "resuming" not in forced.stdout
    assert not (cfg.fold_dir(0) / "trainer" / "checkpoint-99").exists()
    assert json.loads((cfg.fold_dir(0) / "train_metrics.json").read_text())["resumed_from"] is None


def test_bf16_trains_on_the_cpu(demo_root: Path, tmp_path: Path) -> None:
    cfg, comp, folds = setup(demo_root, tmp_path, "train.precision=bf16", "train.max_steps=2")
    metrics, _ = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    assert metrics["steps"] == 2 and metrics["loss"] > 0


def read_steps(log: Path) -> list[int]:
    return [json.loads(line)["step"] for line in log.read_text().splitlines() if "loss" in json.loads(line)]


@pytest.mark.e2e(minutes=0.7)
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_killed_training_resumes_from_its_last_checkpoint_to_every_tensor_of_an_uninterrupted_run(demo_root: Path, tmp_path: Path, mode: str) -> None:
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
    straight, comp, folds = setup(demo_root, tmp_path / "straight", f"train.mode={mode}", "train.max_steps=40")
    train_fold(straight, comp, folds, 0, log=lambda s: None)
    want, got = every_tensor(straight), every_tensor(cfg)
    differ = [n for n in want if not torch.equal(want[n], got[n])]
    assert want.keys() == got.keys() and not differ, f"{len(differ)} of {len(want)} tensors differ, e.g. {differ[:3]}"


# Held-out accuracy by optimizer step: peaks at step 4, then falls; steps not listed score 0.1.
SCRIPT = {2: 0.3, 4: 0.6, 6: 0.4, 8: 0.5, 10: 0.2}


def scripted_accuracy(monkeypatch: pytest.MonkeyPatch, accuracy: Callable[[Config, int], float] | None = None) -> list[int]:
    """Make every trainer's probe answer accuracy(config, step) (default SCRIPT[step]); returns the steps it was asked at."""
    import competition.train as train_mod

    asked: list[int] = []
    real = train_mod.make_trainer

    def make(cfg: Config, *args: object, **kwargs: object) -> object:
        trainer = real(cfg, *args, **kwargs)

        def probe(model: object) -> dict[str, float]:
            step = trainer.state.global_step
            asked.append(step)
            found = accuracy(cfg, step) if accuracy else SCRIPT.get(step, 0.1)
            return {"accuracy": found, "accuracy/how many": 0.0}

        trainer.probe = probe
        return trainer

    monkeypatch.setattr(train_mod, "make_trainer", make)
    return asked


EARLY = ["train.max_steps=30", "train.eval_steps=2", "train.patience=3", "train.save_total_limit=20",
         "train.eval_questions=8"]  # fmt: skip


def test_early_stopping_keeps_the_peak_and_a_resumed_run_keeps_its_best_and_patience(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = scripted_accuracy(monkeypatch)
    cfg, comp, folds = setup(demo_root, tmp_path, *EARLY)
    metrics, model = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    # evaluations at 6, 8 and 10 gain nothing over 0.6: patience 3 stops the run at step 10 of 30
    assert asked == [2, 4, 6, 8, 10] and metrics["steps"] == 10
    assert (metrics["best_accuracy"], metrics["best_step"]) == (0.6, 4)
    trainer_dir = cfg.fold_dir(0) / "trainer"
    peak, last = (load_file(str(trainer_dir / f"checkpoint-{s}" / "trainable.safetensors")) for s in (4, 10))
    kept = every_tensor(cfg)
    assert running_statistics(peak) and all(torch.equal(kept[n], peak[n]) for n in peak)  # the peak's statistics too
    assert any(not torch.equal(kept[n], last[n]) for n in running_statistics(last))
    assert (cfg.fold_dir(0) / "train_curve.png").stat().st_size > 0
    logged = [json.loads(x) for x in (cfg.fold_dir(0) / "train_log.jsonl").read_text().splitlines()]
    assert [x["eval_accuracy"] for x in logged if "eval_accuracy" in x] == [0.3, 0.6, 0.4, 0.5, 0.2]

    # killed just after the evaluation (and checkpoint) of step 8: best 0.6 at step 4, patience count 2
    shutil.rmtree(cfg.fold_dir(0) / "model")
    shutil.rmtree(trainer_dir / "checkpoint-10")
    asked.clear()
    metrics, _ = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    assert metrics["resumed_from"].endswith("checkpoint-8")
    assert asked == [10] and metrics["steps"] == 10, "the patience count restarted"
    assert (metrics["best_accuracy"], metrics["best_step"]) == (0.6, 4)
    kept = every_tensor(cfg)
    assert all(torch.equal(kept[n], peak[n]) for n in peak)


def test_a_time_budget_stops_after_the_step_it_runs_out_in_and_keeps_the_best(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = scripted_accuracy(monkeypatch)
    cfg, comp, folds = setup(demo_root, tmp_path, *EARLY, "train.max_minutes=0.0001")
    metrics, _ = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    assert metrics["steps"] == 1 and asked == [1]
    assert (cfg.fold_dir(0) / "trainer" / "checkpoint-1").is_dir() and (cfg.fold_dir(0) / "model").is_dir()


def test_a_fold_the_time_budget_stopped_reopens_and_goes_on_to_its_last_step(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from competition.train import reopen_fold
    from competition.tuned import with_train

    scripted_accuracy(monkeypatch)
    cfg, comp, folds = setup(demo_root, tmp_path, "train.max_steps=6", "train.eval_steps=2", "train.patience=null",
                             "train.eval_questions=8", "train.max_minutes=0.0001")  # fmt: skip
    cut, _ = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    assert cut["stopped_by_time"] and cut["steps"] == 1 and cut["max_steps"] == 6
    assert reopen_fold(cfg, 0) and not cfg.fold_trained(0)
    cfg = with_train(cfg, {"max_minutes": None})
    whole, _ = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    assert whole["resumed_from"] and whole["steps"] == 6 and not whole["stopped_by_time"]
    assert not reopen_fold(cfg, 0) and cfg.fold_trained(0)  # finished: nothing to reopen


def test_the_inner_split_holds_out_whole_training_images(demo_root: Path, tmp_path: Path) -> None:
    from competition.folds import fold_rows
    from competition.monitor import held_out_rows

    cfg, comp, folds = setup(demo_root, tmp_path, "train.eval_steps=5", "train.eval_fraction=0.1", "train.eval_questions=10")
    train, val = fold_rows(comp, folds, 0, "train"), fold_rows(comp, folds, 0, "val")
    kept, held = held_out_rows(cfg, train, val)
    assert len(held) == 10 and not set(held["image_id"]) & set(kept["image_id"])
    assert set(held["image_id"]) <= set(train["image_id"]) and len(kept) < len(train)
    assert held.equals(held_out_rows(cfg, train, val)[1])  # deterministic
    cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}", "train.eval_split=val", "train.eval_questions=50"])
    kept, held = held_out_rows(cfg, train, val)
    assert kept.equals(train) and set(held["id"]) <= set(val["id"])
    cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}", "train.eval_steps=0"])
    kept, held = held_out_rows(cfg, train, val)
    assert kept.equals(train) and held.empty
