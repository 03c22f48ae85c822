"""What a training run will do, planned without weights or downloads: architecture, sizes, batches,
evaluation and checkpoints, tokenizer; printed by --dry-run and at the start of every run.

    python -m competition train -c configs/seed_llava_vicuna7b.yaml --fold 0 --dry-run
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from competition.config import Config
from competition.data import load_competition
from competition.errors import ConfigError, DataError
from competition.families import Family, family_for
from competition.modeling import count_parameters, resolve_precision, tf32_available, torch_dtype

DACON_TRAIN_QUESTIONS = 359_521  # the planned data size when the competition folder is not there
def world_size() -> int:
    """Processes in this run (torchrun / accelerate set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def grad_accum(cfg: Config) -> int:
    """Accumulation steps that keep train.effective_batch_size across process counts."""
    t = cfg.train
    if t.effective_batch_size is None:
        return t.grad_accum
    per_step = t.per_device_batch_size * world_size()
    if t.effective_batch_size % per_step:
        raise ConfigError(
            f"train.effective_batch_size={t.effective_batch_size} is not a multiple of "
            f"per_device_batch_size={t.per_device_batch_size} x {world_size()} processes"
        )
    return t.effective_batch_size // per_step


@dataclass
class Plan:
    """What a training run will do, printed by --dry-run and at the start of a run."""

    source: str
    parts: str
    mode: str
    trainable: int
    total: int
    examples: int
    per_device: int
    grad_accum: int
    processes: int
    steps_per_epoch: int
    epochs: float
    max_steps: int
    save_steps: int
    save_key: str  # the config key that sets save_steps
    precision: str
    frozen_dtype: str
    evaluation: str

    @property
    def effective_batch(self) -> int:
        return self.per_device * self.grad_accum * self.processes

    def lines(self) -> list[str]:
        return [
            f"model: {self.source} ({self.parts})",
            f"mode: {self.mode}; trainable parameters {self.trainable:,} of {self.total:,}",
            f"batch: {self.per_device} per device x {self.grad_accum} accumulation x {self.processes} processes"
            f" = effective {self.effective_batch}",
            f"data: {self.examples:,} examples; {self.steps_per_epoch:,} optimizer steps per epoch; {self.epochs:g} epochs",
            f"precision: {self.precision} compute, trainable weights float32, frozen weights {self.frozen_dtype}; "
            f"TF32 {'on' if tf32_available() else 'off (not on this machine)'}",
            self.evaluation,
            self.checkpoint_line(),
        ]

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps > 0 else int(self.steps_per_epoch * self.epochs)

    def checkpoint_line(self) -> str:
        """How often a checkpoint is written, or a warning that none will be."""
        if self.save_steps > self.total_steps:
            return (
                f"checkpoints: NONE ({self.save_key}={self.save_steps} > {self.total_steps:,} steps): "
                "a killed run restarts from step 0"
            )
        return f"checkpoints: every {self.save_steps:,} steps of {self.total_steps:,} (a killed run resumes from the last)"


def check_model(cfg: Config) -> None:
    """Refuse, before a run writes anything, what its family cannot build or run here (one line naming the key).
    Nothing is downloaded: a checkpoint that is not on disk is left to the run."""
    family_for(cfg).check()


def describe_evaluation(t: Any) -> str:
    """The plan's line on in-training evaluation, early stopping and the time budget."""
    if not t.evaluates:
        return "evaluation: none (train.eval_steps=0): the last step is the model"
    where = f"an inner split ({t.eval_fraction:.0%} of the training images)" if t.eval_split == "inner" else (
        "the fold's validation questions (optimistic)")  # fmt: skip
    every = "every epoch" if t.eval_steps is None else f"every {t.eval_steps:,} steps"
    stop = f"stops after {t.patience} without a gain over {t.min_delta:g}" if t.patience else "no early stop"
    budget = f"; at most {t.max_minutes:g} minutes" if t.max_minutes else ""
    return f"evaluation: {every}, {t.eval_questions:,} questions of {where}; keeps the best; {stop}{budget}"


def make_plan(cfg: Config, model: torch.nn.Module, examples: int, family: Family | None = None) -> Plan:
    """The run's plan from the config, the (possibly meta-device) model and the example count; `family`: the one
    that built the model (it knows what the data decided)."""
    trainable, total = count_parameters(model)
    ga = grad_accum(cfg)
    t = cfg.train
    per_step = t.per_device_batch_size * ga * world_size()
    steps_per_epoch = max(1, -(-examples // per_step))
    save_steps = t.eval_steps or steps_per_epoch if t.evaluates else t.save_steps
    save_key = "train.eval_steps" if t.evaluates else "train.save_steps"
    return Plan(
        *(family or family_for(cfg)).describe(),
        cfg.train.mode,
        trainable,
        total,
        examples,
        cfg.train.per_device_batch_size,
        ga,
        world_size(),
        steps_per_epoch,
        t.epochs,
        t.max_steps,
        save_steps,
        save_key,
        resolve_precision(t.precision, t.deepspeed),
        str(torch_dtype(cfg.model.dtype)).removeprefix("torch."),
        describe_evaluation(t),
    )


def dry_run_plan(cfg: Config, fold: int) -> list[str]:
    """The plan of a run without building weights or downloading: meta-device model, data size."""
    family = family_for(cfg)
    planned = family.blueprint()
    try:
        n_train = len(load_competition(cfg.data).train)
        source = f"{cfg.data.root}"
    except DataError:
        n_train, source = DACON_TRAIN_QUESTIONS, f"the Dacon size ({cfg.data.root} not found)"
    examples = n_train - n_train // cfg.folds.k
    if cfg.train.evaluates and cfg.train.eval_split == "inner":
        examples -= round(examples * cfg.train.eval_fraction)  # the images held out for in-training evaluation
    examples = -(-examples // family.questions_per_example)  # about: a family may pack an image's questions
    plan = make_plan(cfg, planned.model, examples)
    return [f"fold {fold} of {cfg.folds.k}; training questions from {source}", *plan.lines(), planned.tokenizer,
            *planned.notes]  # fmt: skip
