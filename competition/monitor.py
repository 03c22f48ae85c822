"""What a training run measures and shows while it trains: the competition metric on held-out questions,
the time budget, the progress bar and the accuracy curve.

    python -m competition train -c configs/demo.yaml --fold 0 --set train.patience=3

Held-out questions are, by default, an inner split of the fold's training images (train.eval_split=inner),
so the step the run keeps is never chosen on the questions its out-of-fold predictions are scored on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.model_selection import GroupShuffleSplit
from transformers import TrainerCallback

from competition.config import Config
from competition.data import IMAGE
from competition.io import atomic_open
from competition.normalize import AnswerNormalizer
from competition.scoring import GREEDY, QuestionSet

METRIC = "accuracy"  # what early stopping and the best checkpoint follow; Trainer logs it as eval_accuracy


def held_out_rows(cfg: Config, train_rows: pd.DataFrame, val_rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows the model trains on, the fixed sample of questions it is evaluated on while training).

    inner: a share of the training images (grouped, deterministic) leaves training; val: the fold's validation
    questions, training rows untouched; evaluation off (eval_steps=0): every row trains, nothing is evaluated."""
    t = cfg.train
    if not t.evaluates:
        return train_rows, train_rows.iloc[:0]
    if t.eval_split == "val":
        pool = val_rows
    else:
        split = GroupShuffleSplit(n_splits=1, test_size=t.eval_fraction, random_state=cfg.seed)
        keep, held = next(split.split(train_rows, groups=train_rows[IMAGE]))
        train_rows, pool = train_rows.iloc[keep].reset_index(drop=True), train_rows.iloc[held]
    sample = pool.sample(min(len(pool), t.eval_questions), random_state=cfg.seed).reset_index(drop=True)
    return train_rows, sample


class AccuracyProbe:
    """Greedy answers of the engine (built on the model in training) on the held-out sample, scored like the
    competition (scoring.QuestionSet)."""

    def __init__(self, cfg: Config, rows: pd.DataFrame, engine: Any, normalizer: AnswerNormalizer) -> None:
        self.prompt, self.engine, self.questions = cfg.train.prompt, engine, QuestionSet(rows, normalizer, cfg.metric)

    def __call__(self, model: Any) -> dict[str, float]:
        """{'accuracy': overall, 'accuracy/<question type>': per type} of the model as it is now."""
        was_training = model.training
        model.eval()
        try:
            right = self.questions.right(self.engine, self.prompt, GREEDY)
        finally:
            model.train(was_training)
        per_type = self.questions.by_type(right)
        return {METRIC: float(right.mean()), **{f"{METRIC}/{t}": v for t, v in per_type.items()}}


class PruneOnEvaluate(TrainerCallback):
    """Report each held-out accuracy to an Optuna trial (at its optimizer step, or with `percent` at the percent of
    its training done, so runs of other lengths compare); stop training when the pruner says so."""

    def __init__(self, trial: Any, percent: bool = False) -> None:
        self.trial, self.pruned, self.percent = trial, False, percent

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kw: Any) -> None:
        step = round(100 * state.global_step / max(state.max_steps, 1)) if self.percent else state.global_step
        self.trial.report((metrics or {}).get(f"eval_{METRIC}", 0.0), step)
        if self.trial.should_prune():
            self.pruned = control.should_training_stop = True


class TimeBudget(TrainerCallback):
    """Stop after train.max_minutes of this run's training, evaluating and saving the step it stops at."""

    def __init__(self, minutes: float) -> None:
        self.seconds, self.start, self.stopped = minutes * 60, 0.0, False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if time.monotonic() - self.start > self.seconds and not control.should_training_stop:
            control.should_training_stop = self.stopped = True
            control.should_evaluate = args.eval_strategy != "no"
            control.should_save = True


class TrainProgress(TrainerCallback):
    """Feeds one progress bar: step of max_steps, the last loss, the last held-out accuracy and the best so far."""

    def __init__(self, name: str, progress: Callable[[str, int], Callable[..., None]]) -> None:
        self.name, self.progress = name, progress
        self.tick: Callable[..., None] | None = None
        self.loss: float | None = None
        self.accuracy: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            self.tick = self.progress(self.name, state.max_steps)
            self.tick(state.global_step, self.status(state))

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.tick:
            self.tick(1, self.status(state))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        logs = logs or {}
        self.loss = logs.get("loss", self.loss)
        self.accuracy = logs.get(f"eval_{METRIC}", self.accuracy)

    def status(self, state: Any) -> str:
        """'loss 0.4123 · acc 0.7100 (best 0.7300)' with what is known so far."""
        parts = [f"loss {self.loss:.4f}"] if self.loss is not None else []
        if self.accuracy is not None:
            parts.append(f"acc {self.accuracy:.4f}")
        if state.best_metric is not None:
            parts.append(f"(best {state.best_metric:.4f})")
        return " ".join(parts)


def read_log(path: Path) -> pd.DataFrame:
    """train_log.jsonl as a frame (one row per Trainer log line); empty when there is none."""
    if not path.is_file():
        return pd.DataFrame()
    return pd.DataFrame([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def plot_curve(log: pd.DataFrame, out: Path) -> Path | None:
    """train_curve.png: held-out accuracy (and training loss) against the optimizer step; None without a log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if log.empty or "step" not in log:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    if f"eval_{METRIC}" in log:
        acc = log.dropna(subset=[f"eval_{METRIC}"]).drop_duplicates("step", keep="last")
        ax.plot(acc["step"], acc[f"eval_{METRIC}"], marker="o", color="tab:blue", label="held-out accuracy")
        best = acc.loc[acc[f"eval_{METRIC}"].idxmax()]
        ax.axvline(best["step"], color="tab:blue", ls=":", label=f"best {best[f'eval_{METRIC}']:.4f} @ {best['step']:.0f}")
    ax.set(xlabel="optimizer step", ylabel="accuracy", ylim=(0, 1))
    if "loss" in log:
        loss = log.dropna(subset=["loss"]).drop_duplicates("step", keep="last")
        twin = ax.twinx()
        twin.plot(loss["step"], loss["loss"], color="tab:orange", alpha=0.6, label="training loss")
        twin.set_ylabel("training loss (cross-entropy)")
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
    if handles:
        ax.legend(handles=handles, loc="lower right")
    fig.tight_layout()
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out
