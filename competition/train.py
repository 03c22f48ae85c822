"""The train stage: one fold's model trained on its training split (HF Trainer, or the family's own fit); resumes
from the last checkpoint.

    python -m competition train -c configs/demo.yaml --fold 0
    accelerate launch --num_processes 8 -m competition train -c configs/seed_llava_vicuna7b.yaml --fold 0

Writes experiments/<exp>/fold<k>/trainer/ (checkpoints), model/ (the final model),
train_log.jsonl (one line per logging step) and train_metrics.json.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_pt_utils import LengthGroupedSampler

from competition.augment import flipped_rows
from competition.config import Config
from competition.data import ANSWER, ANSWERS, Competition
from competition.dataset import Views
from competition.families import Family, family_for
from competition.folds import fold_rows
from competition.io import atomic_write_json, atomic_write_yaml
from competition.modeling import (
    part_of,
    resolve_precision,
    tf32_available,
)
from competition.monitor import METRIC, AccuracyProbe, TimeBudget, TrainProgress, held_out_rows, plot_curve, read_log
from competition.normalize import AnswerNormalizer
from competition.plan import grad_accum, make_plan, world_size
from competition.tuned import tuned_train
from competition.weights import TRAINABLE_FILE, load_trainable, save_trainable


class EpochSeededLengthSampler(LengthGroupedSampler):
    """Length-grouped batches in an order drawn from (seed, epoch) alone (the Trainer's draws from torch's global
    stream, which a mid-epoch resume cannot restore to the epoch's start)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Order the next pass as epoch `epoch` (the dataloader calls it at each epoch's start)."""
        self.generator = torch.Generator().manual_seed(self.seed + epoch)


class PartsTrainer(Trainer):
    """Trainer with one learning rate per model part (vision tower, projector, language model)."""

    def __init__(self, *args: Any, part_lrs: dict[str, float], probe: AccuracyProbe | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.part_lrs, self.probe = part_lrs, probe

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """The Trainer's sampler; length-grouped, ordered by (data seed, epoch) so that a resumed run reads the
        batches an uninterrupted one would."""
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            return EpochSeededLengthSampler(sampler.batch_size, sampler.lengths, self.args.data_seed)
        return sampler

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        """One epoch, its number told to the training set first (accelerate does not reach the set through the
        dataloader a mid-epoch resume builds), so its flipped views are the uninterrupted run's."""
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict:
        """Held-out accuracy of the model as it is now (the engine's greedy answers), logged and handed to callbacks."""
        found = self.probe(self.accelerator.unwrap_model(self.model)) if self.probe else {}
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in found.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _load_best_model(self) -> None:
        """The best checkpoint's trained tensors (parameters and buffers) back into the model, in our checkpoint format."""
        best = Path(self.state.best_model_checkpoint)
        if not (best / TRAINABLE_FILE).is_file():
            return super()._load_best_model()
        load_trainable(self.accelerator.unwrap_model(self.model), best)

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
        """A checkpoint's weights are its trained tensors under their own names (resume loads them strictly)."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._save(output_dir, state_dict)  # their own sharded checkpoint formats
        if self.args.should_save:
            save_trainable(self.accelerator.unwrap_model(self.model), Path(output_dir or self.args.output_dir))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """Restore the trained tensors a checkpoint holds; every one of them, or an error."""
        if not (Path(resume_from_checkpoint) / TRAINABLE_FILE).is_file():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_trainable(self.accelerator.unwrap_model(model or self.model), Path(resume_from_checkpoint))


class JsonlLog(TrainerCallback):
    """Append every Trainer log (loss, lr, step) to a JSONL file on the main process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if state.is_world_process_zero and logs:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def training_arguments(cfg: Config, out: Path) -> TrainingArguments:
    """TrainingArguments from the config's train section."""
    t = cfg.train
    precision = resolve_precision(t.precision, t.deepspeed)
    every = eval_strategy(t)
    return TrainingArguments(
        output_dir=str(out),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=grad_accum(cfg),
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.scheduler,
        logging_steps=t.logging_steps,
        eval_strategy=every,
        eval_steps=t.eval_steps or None,
        save_strategy="steps" if every == "no" else every,  # with evaluation on, every evaluation saves
        save_steps=t.eval_steps or t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=every != "no",
        metric_for_best_model=METRIC if every != "no" else None,
        greater_is_better=True,
        restore_callback_states_from_checkpoint=True,  # early stopping's patience count survives a resume
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=precision == "bf16" and not torch.cuda.is_available(),  # bf16 autocast on the CPU (Trainer asks for it)
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
        disable_tqdm=True,  # the stage's own progress bar shows the run
        save_only_model=False,
        **({"gradient_checkpointing": True} if t.gradient_checkpointing else {}),
    )


def eval_strategy(t: Any) -> str:
    """Trainer's eval_strategy for train.eval_steps: 'epoch' (None), 'no' (0) or 'steps'."""
    return "no" if not t.evaluates else "epoch" if t.eval_steps is None else "steps"


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


def make_trainer(cfg: Config, comp: Competition, family: Family, model: Any, processor: Any, dataset: Any, out: Path,
                 held_out: pd.DataFrame, vocabulary: list[str]) -> PartsTrainer:  # fmt: skip
    """The fold's Trainer: image collator, one learning rate per model part, the held-out accuracy probe,
    early stopping and the time budget, the JSONL log beside `out`."""
    images = family.images(comp, "train", processor, cfg.train.cache_images)
    tok = processor.tokenizer
    collator = family.collator(images, model, processor)
    t = cfg.train
    lrs = {"language": t.learning_rate, "vision": t.vision_lr or t.learning_rate,
           "projector": t.projector_lr or t.learning_rate}  # fmt: skip
    args = training_arguments(cfg, out)
    evaluates = args.eval_strategy != "no"
    engine = family.engine(model, processor, images, vocabulary)
    probe = AccuracyProbe(cfg, held_out, engine, AnswerNormalizer.of(cfg, comp)) if evaluates else None
    callbacks = [JsonlLog(out.parent / "train_log.jsonl")]
    if evaluates and t.patience:
        callbacks.append(EarlyStoppingCallback(t.patience, t.min_delta))
    if t.max_minutes:
        callbacks.append(TimeBudget(t.max_minutes))
    trainer = PartsTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=tok,
                           callbacks=callbacks, part_lrs=lrs, probe=probe, eval_dataset=held_out if evaluates else None)  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # no printed log dicts: train_log.jsonl and report_to have them
    return trainer


FOLD_OUTPUTS = ("trainer", "model", "predictions", "config.yaml", "train_log.jsonl", "train_metrics.json", "train_curve.png")


def finished_metrics(cfg: Config, fold: int) -> dict[str, Any] | None:
    """The metrics of a fold whose model is complete, else None."""
    return json.loads((cfg.fold_dir(fold) / "train_metrics.json").read_text()) if cfg.fold_trained(fold) else None


def clear_fold(cfg: Config, fold: int) -> list[str]:
    """Remove what a fold's training and prediction wrote (a retrain from scratch); the names removed."""
    removed = []
    for name in FOLD_OUTPUTS:
        path = cfg.fold_dir(fold) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


def reopen_fold(cfg: Config, fold: int) -> bool:
    """A fold that train.max_minutes stopped made unfinished again (its model, metrics and predictions removed, its
    checkpoints kept), so that the next `train_fold` continues it to the end; whether it was such a fold."""
    done = finished_metrics(cfg, fold)
    if not done or not done.get("stopped_by_time"):
        return False
    (cfg.fold_dir(fold) / "train_metrics.json").unlink()  # first: killed here, the fold is unfinished and resumes
    for name in ("model", "predictions"):
        shutil.rmtree(cfg.fold_dir(fold) / name, ignore_errors=True)
    return True


def already_trained(cfg: Config, fold: int, force: bool, log: Any) -> dict[str, Any] | None:
    """The metrics of a finished fold, said in one line (None: train it); with `force`, clear the fold instead."""
    if force:
        if removed := clear_fold(cfg, fold):
            log(f"fold {fold}: --force removed its {', '.join(removed)}")
        return None
    if done := finished_metrics(cfg, fold):
        log(f"fold {fold}: already trained ({cfg.fold_dir(fold) / 'model'}); nothing to do (--force retrains it)")
    return done


def train_fold(cfg: Config, comp: Competition, folds: pd.DataFrame, fold: int, log: Any = print,
               progress: Callable[[str, int], Callable[..., None]] | None = None,
               callbacks: list[TrainerCallback] | None = None, force: bool = False) -> tuple[dict[str, Any], Any]:  # fmt: skip
    """Train one fold (resuming if checkpoints exist) with the training study's parameters when tuned.yaml has them,
    and save its model (the best evaluated step when the run evaluates); returns (metrics, trained model).
    A fold whose model is complete is left as it is (model None) unless `force`, which retrains it from scratch.
    `progress(name, total)` gives a tick(n, status) to feed a bar."""
    if done := already_trained(cfg, fold, force, log):
        return done, None
    cfg, tuned = tuned_train(cfg)
    if tuned:
        log(f"tuned (tuned.yaml): {', '.join(f'{k}={v:.4g}' for k, v in tuned.items())}")
    fdir = cfg.fold_dir(fold)
    atomic_write_yaml(cfg.to_dict(), fdir / "config.yaml")  # exactly the config this fold trains with
    rows = fold_rows(comp, folds, fold, "train")
    vocabulary = rows[ANSWER].value_counts().index.tolist()
    set_seed(cfg.seed)  # every new layer (projector, LoRA) starts the same in every run of a config
    family = family_for(cfg)
    if not family.uses_trainer:
        return fit_fold(cfg, family, comp, rows, fold)
    rows, held_out = held_out_rows(cfg, rows, fold_rows(comp, folds, fold, "val"))
    rows = flipped_rows(rows, cfg.train.flips, cfg.train.flip_keep)
    if cfg.train.answers == "each" and not family.soft_answers:
        rows = each_answer(rows)
    model, processor = family.build(comp, rows)
    dataset = Views(family.train_set(model, processor, rows), cfg.seed)
    plan = make_plan(cfg, model, len(dataset), family)
    for line in plan.lines():
        log(line)
    trainer_dir = fdir / "trainer"
    trainer_dir.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(cfg, comp, family, model, processor, dataset, trainer_dir, held_out, vocabulary)
    for callback in [*(callbacks or []), *([TrainProgress(f"fold {fold}", progress)] if progress else [])]:
        trainer.add_callback(callback)
    last = last_complete_checkpoint(trainer_dir)
    if last:
        log(f"resuming from {last}")
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    metrics = {"fold": fold, **run_metrics(trainer, result, fdir), "resumed_from": last, "tuned": tuned,
               "examples": len(dataset), "train_seconds": time.perf_counter() - start,
               "trainable_parameters": plan.trainable, "effective_batch_size": plan.effective_batch}  # fmt: skip
    with whole_weights(trainer.model):
        if trainer.is_world_process_zero():
            family.save(trainer.model, processor, fdir / "model")
    if trainer.is_world_process_zero():
        atomic_write_json(metrics, fdir / "train_metrics.json")
        plot_curve(read_log(fdir / "train_log.jsonl"), fdir / "train_curve.png")
    return metrics, trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)  # no autocast left on it


def each_answer(rows: pd.DataFrame) -> pd.DataFrame:
    """One training example per annotator's answer (repeats kept: a frequent answer weighs more); rows as they are
    without an answers column."""
    if ANSWERS not in rows:
        return rows
    return rows.explode(ANSWERS).assign(**{ANSWER: lambda df: df[ANSWERS]}).drop(columns=ANSWERS).reset_index(drop=True)


def fit_fold(cfg: Config, family: Family, comp: Competition, rows: pd.DataFrame, fold: int) -> tuple[dict[str, Any], Any]:
    """A family that needs no Trainer: built, fitted on every training question of the fold, saved."""
    start = time.perf_counter()
    model, processor = family.build(comp, rows)
    model = family.fit(model, processor, rows)
    family.save(model, processor, cfg.fold_dir(fold) / "model")
    metrics = {"fold": fold, "loss": None, "steps": 0, "max_steps": 0, f"best_{METRIC}": None, "best_step": None,
               "resumed_from": None, "tuned": {}, "examples": len(rows), "train_seconds": time.perf_counter() - start}  # fmt: skip
    atomic_write_json(metrics, cfg.fold_dir(fold) / "train_metrics.json")
    return metrics, model


def run_metrics(trainer: Trainer, result: Any, fdir: Path) -> dict[str, Any]:
    """What a finished run measured: the whole run's loss, its steps, the best held-out accuracy and its step, speed
    and peak memory."""
    state = trainer.state
    timed_out = any(isinstance(c, TimeBudget) and c.stopped for c in trainer.callback_handler.callbacks)
    return {"loss": run_loss(read_log(fdir / "train_log.jsonl"), result.training_loss), "steps": state.global_step,
            "max_steps": state.max_steps, "stopped_by_time": timed_out,
            f"best_{METRIC}": state.best_metric, "best_step": state.best_global_step,
            "samples_per_second": result.metrics.get("train_samples_per_second"), "peak_memory_mb": peak_memory_mb()}  # fmt: skip


def run_loss(log: pd.DataFrame, fallback: float) -> float:
    """The training loss averaged over the whole run, resumes included: each logged interval's mean weighted by its
    steps (a step logged twice, before a kill and after the resume, counts once); `fallback` without a logged loss."""
    if log.empty or "loss" not in log:
        return fallback
    loss = log.dropna(subset=["loss"]).drop_duplicates("step", keep="last").sort_values("step")
    if loss.empty:
        return fallback
    steps = loss["step"].diff().fillna(loss["step"].iloc[0]).clip(lower=1)
    return float((loss["loss"] * steps).sum() / steps.sum())


@contextmanager
def whole_weights(model: torch.nn.Module) -> Iterator[None]:
    """Under DeepSpeed ZeRO-3 every process holds a shard of each weight: all of them gather the whole weights for
    the save (else it writes empty tensors); elsewhere nothing to do."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield


def trained_summary(m: dict[str, Any]) -> str:
    """One line on a finished fold: loss, steps, the best held-out accuracy and its step, time."""
    best = m.get(f"best_{METRIC}")
    kept = f"; held-out accuracy {best:.4f} at step {m['best_step']} (kept)" if best is not None else ""
    early = " (stopped early)" if 0 < m["steps"] < m.get("max_steps", 0) else ""
    if m["loss"] is None:  # a family fitted without a Trainer
        return f"fitted on {m['examples']:,} questions in {m['train_seconds']:.0f} s"
    return f"loss {m['loss']:.4f} after {m['steps']} steps{early}{kept} in {m['train_seconds']:.0f} s"
