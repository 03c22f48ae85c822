"""Fine-tune LLaVA on one fold's training split with HF Trainer; resumes from the last checkpoint.

    python -m competition train -c configs/demo.yaml --fold 0
    accelerate launch --num_processes 8 -m competition train -c configs/seed_llava_vicuna7b.yaml --fold 0

Writes experiments/<exp>/fold<k>/trainer/ (checkpoints), model/ (the final model),
train_log.jsonl (one line per logging step) and train_metrics.json.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from competition.config import Config
from competition.data import ANSWER, QUESTION, Competition
from competition.dataset import TrainCollator, TrainSet
from competition.errors import ConfigError
from competition.folds import fold_rows
from competition.images import Images, ImageTransform
from competition.io import atomic_write_json
from competition.modeling import (
    apply_mode,
    build_base,
    count_parameters,
    image_token_count,
    part_of,
    resolve_precision,
    save_trained,
    tf32_available,
    torch_dtype,
)

DACON_TRAIN_QUESTIONS = 359_521
TRAINABLE_FILE = "trainable.safetensors"


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


def tokenizer_texts(comp: Competition) -> list[str]:
    """Text a tiny model's tokenizer is trained on: questions of both splits and training answers."""
    return [*comp.train[QUESTION], *comp.train[ANSWER], *comp.test[QUESTION]]



class PartsTrainer(Trainer):
    """Trainer with one learning rate per model part (vision tower, projector, language model)."""

    def __init__(self, *args: Any, part_lrs: dict[str, float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.part_lrs = part_lrs

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """AdamW over (part x decay) parameter groups."""
        if self.optimizer is None:
            m = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(m))
            groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
            for n, p in m.named_parameters():
                if p.requires_grad:
                    groups.setdefault((part_of(n), n in decay), []).append(p)
            self.optimizer = torch.optim.AdamW(
                [
                    {"params": ps, "lr": self.part_lrs[part], "weight_decay": self.args.weight_decay if d else 0.0}
                    for (part, d), ps in sorted(groups.items())
                ],
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
            )
        return self.optimizer


    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """A checkpoint's weights are the trainable parameters under their own names (resume loads them strictly)."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._save(output_dir, state_dict)  # their own sharded checkpoint formats
        if self.args.should_save:
            save_trainable(self.accelerator.unwrap_model(self.model), Path(output_dir or self.args.output_dir))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Restore the trainable parameters a checkpoint holds; every one of them, or an error."""
        if not (Path(resume_from_checkpoint) / TRAINABLE_FILE).is_file():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_trainable(self.accelerator.unwrap_model(model or self.model), Path(resume_from_checkpoint))


def save_trainable(model: torch.nn.Module, folder: Path) -> None:
    """Write the model's trainable parameters to folder/TRAINABLE_FILE."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(weights, str(folder / TRAINABLE_FILE))


def load_trainable(model: torch.nn.Module, folder: Path) -> None:
    """Load folder/TRAINABLE_FILE into the model's trainable parameters; names and shapes must match exactly."""
    saved = load_file(str(folder / TRAINABLE_FILE))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(params.keys() - saved.keys()), sorted(saved.keys() - params.keys())
    wrong = sorted(n for n in params.keys() & saved.keys() if params[n].shape != saved[n].shape)
    if missing or unexpected or wrong:
        raise ConfigError(
            f"{folder}: checkpoint does not fit this run's trainable parameters (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, other shape {wrong[:3]}); was it written under another config?"
        )
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(saved[n])


class JsonlLog(TrainerCallback):
    """Append every Trainer log (loss, lr, step) to a JSONL file on the main process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if state.is_world_process_zero and logs:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


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
    precision: str
    frozen_dtype: str

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
            self.checkpoint_line(),
        ]

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps > 0 else int(self.steps_per_epoch * self.epochs)

    def checkpoint_line(self) -> str:
        """How often a checkpoint is written, or a warning that none will be."""
        if self.save_steps > self.total_steps:
            return (
                f"checkpoints: NONE (train.save_steps={self.save_steps} > {self.total_steps:,} steps): "
                "a killed run restarts from step 0"
            )
        return f"checkpoints: every {self.save_steps:,} steps of {self.total_steps:,} (a killed run resumes from the last)"


def describe_parts(cfg: Config) -> str:
    """Human-readable model parts of the config."""
    m = cfg.model
    if m.source == "tiny":
        t = m.tiny
        return f"CLIP-vision {t.vision_layers}x{t.vision_hidden} @ {t.image_size}px/{t.patch_size} + Llama {t.text_layers}x{t.text_hidden}"
    if m.source == "pretrained":
        return str(m.name_or_path)
    proj = f" + projector {m.projector}" if m.projector else " + new projector"
    return f"{m.vision_tower} (layer {m.vision_feature_layer}) + {m.language_model}{proj} [{m.projector_type}]"


def make_plan(cfg: Config, model: torch.nn.Module, examples: int) -> Plan:
    """The run's plan from the config, the (possibly meta-device) model and the example count."""
    trainable, total = count_parameters(model)
    ga = grad_accum(cfg)
    per_step = cfg.train.per_device_batch_size * ga * world_size()
    return Plan(
        cfg.model.source,
        describe_parts(cfg),
        cfg.train.mode,
        trainable,
        total,
        examples,
        cfg.train.per_device_batch_size,
        ga,
        world_size(),
        max(1, -(-examples // per_step)),
        cfg.train.epochs,
        cfg.train.max_steps,
        cfg.train.save_steps,
        resolve_precision(cfg.train.precision),
        str(torch_dtype(cfg.model.dtype)).removeprefix("torch."),
    )


def training_arguments(cfg: Config, out: Path) -> TrainingArguments:
    """TrainingArguments from the config's train section."""
    t = cfg.train
    precision = resolve_precision(t.precision)
    return TrainingArguments(
        output_dir=str(out),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=grad_accum(cfg),
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.scheduler,
        logging_steps=t.logging_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        tf32=tf32_available() or None,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        remove_unused_columns=False,
        report_to=t.report_to or "none",
        deepspeed=t.deepspeed,
        dataloader_num_workers=t.dataloader_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_backend=None if torch.cuda.is_available() or world_size() == 1 else "gloo",  # CPU processes: gloo
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=False,
        save_only_model=False,
        **({"gradient_checkpointing": True} if t.gradient_checkpointing else {}),
    )


def last_complete_checkpoint(trainer_dir: Path) -> str | None:
    """The newest checkpoint whose trainer state was fully written; the main process removes newer, cut-short ones."""
    checkpoints = sorted(trainer_dir.glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]), reverse=True)
    for ckpt in checkpoints:
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
            return str(ckpt)
        except (OSError, ValueError):
            if int(os.environ.get("RANK", "0")) == 0:
                shutil.rmtree(ckpt, ignore_errors=True)
    return None


def peak_memory_mb() -> float:
    """Peak GPU memory if on CUDA, else the process's peak resident memory, in MB."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_trainer(cfg: Config, comp: Competition, model: Any, processor: Any, dataset: TrainSet, out: Path) -> PartsTrainer:
    """The fold's Trainer: image collator, one learning rate per model part, the JSONL log beside `out`."""
    images = Images(comp, "train", ImageTransform(processor, cfg.model.image_aspect_ratio), cfg.train.cache_images)
    tok = processor.tokenizer
    collator = TrainCollator(images, model.config.image_token_id, image_token_count(model.config), tok.pad_token_id)
    t = cfg.train
    lrs = {"language": t.learning_rate, "vision": t.vision_lr or t.learning_rate,
           "projector": t.projector_lr or t.learning_rate}  # fmt: skip
    return PartsTrainer(
        model=model,
        args=training_arguments(cfg, out),
        train_dataset=dataset,
        data_collator=collator,
        processing_class=tok,
        callbacks=[JsonlLog(out.parent / "train_log.jsonl")],
        part_lrs=lrs,
    )


def train_fold(
    cfg: Config, comp: Competition, folds: pd.DataFrame, fold: int, log: Any = print
) -> tuple[dict[str, Any], Any]:
    """Train one fold (resuming if checkpoints exist) and save its model; returns (metrics, trained model)."""
    fdir = cfg.fold_dir(fold)
    rows = fold_rows(comp, folds, fold, "train")
    set_seed(cfg.seed)  # every new layer (projector, LoRA) starts the same in every run of a config
    model, processor = build_base(cfg.model, tokenizer_texts(comp), cfg.seed)
    base_name = None if cfg.model.source == "tiny" else (cfg.model.name_or_path or "from_parts")
    pristine = copy.deepcopy(model) if base_name is None and cfg.train.mode != "full" else None
    model = apply_mode(model, cfg.train)
    if cfg.train.gradient_checkpointing:
        model.enable_input_require_grads()
    t = cfg.train
    dataset = TrainSet(processor, t.prompt, rows, t.max_length, t.pack_questions)
    plan = make_plan(cfg, model, len(dataset))
    for line in plan.lines():
        log(line)
    trainer_dir = fdir / "trainer"
    trainer_dir.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(cfg, comp, model, processor, dataset, trainer_dir)
    last = last_complete_checkpoint(trainer_dir)
    if last:
        log(f"resuming from {last}")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - start
    metrics = {
        "fold": fold,
        "loss": result.training_loss,
        "steps": trainer.state.global_step,
        "resumed_from": last,
        "examples": len(dataset),
        "train_seconds": seconds,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "peak_memory_mb": peak_memory_mb(),
        "trainable_parameters": plan.trainable,
        "effective_batch_size": plan.effective_batch,
    }
    if trainer.is_world_process_zero():
        save_trained(trainer.model, processor, fdir / "model", cfg.train.mode, base_name, pristine)
        atomic_write_json(metrics, fdir / "train_metrics.json")
    return metrics, trainer.model


def dry_run_plan(cfg: Config, fold: int) -> list[str]:
    """The plan of a run without building weights or downloading: meta-device model, data size."""
    from competition.data import load_competition
    from competition.errors import DataError
    from competition.plan import check_tokenizer, plan_model

    model = apply_mode(plan_model(cfg.model), cfg.train)
    tokenizer = check_tokenizer(cfg.model)
    try:
        n_train = len(load_competition(cfg.data).train)
        source = f"{cfg.data.root}"
    except DataError:
        n_train, source = DACON_TRAIN_QUESTIONS, f"the Dacon size ({cfg.data.root} not found)"
    examples = n_train - n_train // cfg.folds.k
    plan = make_plan(cfg, model, examples)
    return [f"fold {fold} of {cfg.folds.k}; training questions from {source}", *plan.lines(), tokenizer]
