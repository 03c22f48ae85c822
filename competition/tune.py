"""Optuna studies on local validation only: training on a fold's inner split, decoding + prompt on a fold's
validation questions, vote on OOF.

    python -m competition tune -c configs/demo.yaml --study train --trials 12
    python -m competition tune -c configs/demo.yaml --study decoding --trials 20
    python -m competition tune -c configs/demo.yaml --study vote --trials 50

Studies live in an RDB (sqlite:///experiments/<exp>/optuna.db unless tune.storage names another),
so a rerun adds trials to the same study and several workers can share one. A running trial beats
a heartbeat into the storage; one whose heartbeat stopped (its process was killed) is failed when any
worker next opens the study or starts a trial. The best parameters are merged into
experiments/<exp>/tuned.yaml, which `train`, `predict` and `ensemble` pick up.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from competition.config import Config, DecodingConfig, TrainConfig
from competition.data import Competition
from competition.errors import ConfigError, WorkerError
from competition.folds import fold_rows
from competition.io import atomic_open, atomic_write_yaml
from competition.metrics import Gold
from competition.normalize import FUZZY_THRESHOLD, AnswerNormalizer
from competition.scoring import QuestionSet
from competition.tuned import save_tuned, with_train
from competition.vote import METHODS, score, vote, vote_rows

STUDIES = ("train", "decoding", "vote")


def storage_url(cfg: Config) -> str:
    """The study storage: tune.storage, else a SQLite file in the experiment folder."""
    if cfg.tune.storage:
        return cfg.tune.storage
    cfg.exp_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(cfg.exp_dir / 'optuna.db').resolve()}"


def heartbeat(cfg: Config) -> dict[str, int]:
    """RDBStorage's heartbeat keywords: a beat every sixth of tune.grace_seconds, failed after all of it."""
    return {"heartbeat_interval": max(1, cfg.tune.grace_seconds // 6), "grace_period": cfg.tune.grace_seconds}


def open_study(cfg: Config, kind: str) -> optuna.Study:
    """Create or load the experiment's study of `kind` (trial numbers continue), failing its stale trials."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
        storage = optuna.storages.RDBStorage(storage_url(cfg), **heartbeat(cfg))
        study = optuna.create_study(
            study_name=f"{cfg.experiment}-{kind}",
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=cfg.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        )
        optuna.storages.fail_stale_trials(study)
    return study


def decoding_space(trial: optuna.Trial, prompts: list[str]) -> tuple[str, DecodingConfig]:
    """The decoding study's search space: prompt; free, constrained or ranked; beams or sampling, length penalty.

    max_new_tokens is not searched: its default fits the longest training answer and its EOS."""
    prompt = trial.suggest_categorical("prompt", prompts)
    mode = trial.suggest_categorical("mode", ["free", "constrained", "rank"])
    if mode == "rank":
        return prompt, DecodingConfig(name="tuned", rank=trial.suggest_int("rank", 5, 200, log=True))
    beams = trial.suggest_int("num_beams", 1, 3)
    sample = trial.suggest_categorical("do_sample", [False, True]) if beams == 1 else False
    return prompt, DecodingConfig(
        name="tuned",
        num_beams=beams,
        do_sample=sample,
        temperature=trial.suggest_float("temperature", 0.1, 1.0, log=True) if sample else 1.0,
        length_penalty=trial.suggest_float("length_penalty", 0.5, 1.5) if beams > 1 else 1.0,
        constrained=mode == "constrained",
    )


def train_space(trial: optuna.Trial, t: TrainConfig) -> dict[str, Any]:
    """The training study's space around the config's own values: learning rate per model part, warmup, questions
    per conversation. Epochs stay the config's upper bound; early stopping picks the step."""
    lr = trial.suggest_float("learning_rate", t.learning_rate / 4, t.learning_rate * 4, log=True)
    params = {
        "learning_rate": lr,
        "projector_lr": lr * trial.suggest_float("projector_lr_ratio", 0.25, 4.0, log=True),
        "warmup_ratio": trial.suggest_float("warmup_ratio", 0.0, 0.1),
        "pack_questions": trial.suggest_categorical("pack_questions", sorted({1, 2, 4, 8, t.pack_questions})),
    }
    if t.mode == "full":
        params["vision_lr"] = lr * trial.suggest_float("vision_lr_ratio", 0.25, 4.0, log=True)
    return params


def default_train(cfg: Config) -> dict[str, Any]:
    """The training study's parameters of the config's own training."""
    t = cfg.train
    own = {"learning_rate": t.learning_rate, "projector_lr_ratio": (t.projector_lr or t.learning_rate) / t.learning_rate,
           "warmup_ratio": t.warmup_ratio, "pack_questions": t.pack_questions}  # fmt: skip
    return own | ({"vision_lr_ratio": (t.vision_lr or t.learning_rate) / t.learning_rate} if t.mode == "full" else {})


class TrainObjective:
    """The best held-out accuracy of one fold trained with a trial's parameters; each evaluation goes to the pruner.

    Trials train under experiments/<exp>/train-study/ and keep their logs and curves, not their weights."""

    def __init__(self, cfg: Config, comp: Competition, folds: pd.DataFrame, fold: int) -> None:
        if not cfg.train.evaluates:
            raise ConfigError("tune --study train: train.eval_steps=0 turns off the held-out accuracy it maximises")
        self.cfg, self.comp, self.folds, self.fold = cfg, comp, folds, fold

    def trial_config(self, trial: optuna.Trial) -> Config:
        """The config with the trial's training parameters, its folders under train-study/."""
        return with_train(self.cfg, train_space(trial, self.cfg.train),
                          workdir=str(self.cfg.exp_dir / "train-study"), experiment=f"trial{trial.number}")  # fmt: skip

    def __call__(self, trial: optuna.Trial) -> float:
        from competition.monitor import PruneOnEvaluate
        from competition.train import train_fold

        cfg, report = self.trial_config(trial), PruneOnEvaluate(trial)
        metrics, _ = train_fold(cfg, self.comp, self.folds, self.fold, log=lambda s: None, callbacks=[report])
        for weights in ("trainer", "model"):
            shutil.rmtree(cfg.fold_dir(self.fold) / weights, ignore_errors=True)
        if report.pruned:
            raise optuna.TrialPruned()
        return float(metrics["best_accuracy"])


def vote_space(trial: optuna.Trial, members: list[str]) -> tuple[str, dict[str, float], float]:
    """The vote study's search space: method, fuzzy threshold, one weight per member."""
    method = trial.suggest_categorical("method", list(METHODS))
    threshold = trial.suggest_float("threshold", 70.0, 100.0) if method == "fuzzy" else FUZZY_THRESHOLD
    weights = {m: trial.suggest_float(f"w:{m}", 0.0, 2.0) for m in members} if method != "majority" else {}
    return method, weights, threshold


class DecodingObjective:
    """Accuracy of a decoding on (a sample of) one fold's validation questions, reported in chunks."""

    def __init__(self, cfg: Config, comp: Competition, folds: pd.DataFrame, fold: int) -> None:
        from competition.families import fold_engine
        val = fold_rows(comp, folds, fold, "val")
        val = val.sample(min(len(val), cfg.tune.max_questions), random_state=cfg.seed).reset_index(drop=True)
        self.questions = QuestionSet(val, AnswerNormalizer.of(cfg, comp), cfg.metric)
        self.engine = fold_engine(cfg, comp, folds, fold, "train", cache=True)
        self.prompts, self.chunks = cfg.predict.prompts, cfg.tune.prune_chunks

    def __call__(self, trial: optuna.Trial) -> float:
        prompt, d = decoding_space(trial, self.prompts)
        n = len(self.questions)
        bounds = [round(n * (i + 1) / self.chunks) for i in range(self.chunks)]
        correct, done = 0.0, 0
        for step, end in enumerate(bounds):
            rows = list(range(done, end))
            correct += float(self.questions.right(self.engine, prompt, d, rows).sum())
            done = end
            trial.report(correct / done, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return correct / n


def vote_objective(oof: pd.DataFrame, gold: Gold) -> Any:
    """OOF accuracy of a vote configuration (members are prompt/decoding sets)."""
    members = sorted(oof["member"].unique())

    def objective(trial: optuna.Trial) -> float:
        method, weights, threshold = vote_space(trial, members)
        return score(vote(oof, method, weights or None, threshold, gold.metric), gold)

    return objective



def default_decoding(cfg: Config) -> dict[str, Any]:
    """The decoding study's parameters of plain greedy decoding with the training prompt."""
    return {"prompt": cfg.train.prompt, "mode": "free", "num_beams": 1, "do_sample": False}


def best_decoding(study: optuna.Study, cfg: Config) -> dict[str, Any]:
    """tuned.yaml section: the best decoding, unless it beats the default by less than tune.min_gain."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    default = next((t for t in done if t.params == default_decoding(cfg)), None)
    best = study.best_trial
    if default is not None and best.value < default.value + cfg.tune.min_gain:
        best = default
    prompt, d = decoding_space(optuna.trial.FixedTrial(best.params), cfg.predict.prompts)
    return {"decoding": {"prompt": prompt, **d.model_dump()}, "decoding_score": best.value}


def best_train(study: optuna.Study, cfg: Config) -> dict[str, Any]:
    """tuned.yaml section: the best training parameters, unless they beat the config's own by less than
    tune.min_gain (then the config's own, which `train` then uses unchanged)."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    default = next((t for t in done if t.params == default_train(cfg)), None)
    best = study.best_trial
    if default is not None and best.value < default.value + cfg.tune.min_gain:
        return {"train": {}, "train_score": default.value}
    return {"train": train_space(optuna.trial.FixedTrial(best.params), cfg.train), "train_score": best.value}


def best_vote(study: optuna.Study) -> dict[str, Any]:
    """tuned.yaml section: the best vote method, threshold and member weights."""
    p = dict(study.best_params)
    weights = {k[2:]: v for k, v in p.items() if k.startswith("w:")}
    return {"vote": {"method": p["method"], "threshold": p.get("threshold", FUZZY_THRESHOLD), "weights": weights or None},
            "vote_score": study.best_value}  # fmt: skip


def plot_study(study: optuna.Study, out: Path) -> list[Path]:
    """Optimisation history and parameter importance as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    written = []
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    plots = [("history", plot_optimization_history)]
    if len(done) >= 2 and len({str(t.params) for t in done}) > 1:
        plots.append(("importance", plot_param_importances))
    for name, fn in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
                fn(study)
        except (ValueError, RuntimeError):
            continue
        path = out.with_name(f"{out.stem}-{name}.png")
        with atomic_open(path, "wb") as f:
            plt.gcf().set_size_inches(8, 4)
            plt.tight_layout()
            plt.savefig(f, format="png", dpi=90)
        plt.close("all")
        written.append(path)
    return written


def objective_for(cfg: Config, comp: Competition, folds: pd.DataFrame, kind: str) -> Any:
    """The study's objective, built from its inputs (a CompetitionError when they are missing)."""
    if kind == "decoding":
        return DecodingObjective(cfg, comp, folds, cfg.tune.fold)
    if kind == "train":
        return TrainObjective(cfg, comp, folds, cfg.tune.fold)
    from competition.predictions import oof_frame

    oof = oof_frame(cfg, comp, folds)
    gold = Gold.of_frame(oof, cfg.metric)
    return vote_objective(vote_rows(oof), gold)


def run_study(
    cfg: Config, comp: Competition, folds: pd.DataFrame, kind: str, trials: int, objective: Any = None
) -> tuple[optuna.Study, Path]:
    """Add `trials` trials (0: reload), save best parameters and plots; the objective checks inputs before any write."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if trials and objective is None:
        objective = objective_for(cfg, comp, folds, kind)
    study = open_study(cfg, kind)
    if kind in ("train", "decoding") and trials and not study.trials:  # the config's own first: the bar to clear
        study.enqueue_trial(default_train(cfg) if kind == "train" else default_decoding(cfg))
    if trials:
        study.optimize(objective, n_trials=trials)
    best = {"train": best_train, "decoding": best_decoding}.get(kind, lambda s, c: best_vote(s))
    path = save_tuned(cfg, best(study, cfg))
    plot_study(study, cfg.exp_dir / f"optuna-{kind}.png")
    return study, path


def tune_with_workers(
    cfg: Config, comp: Competition, folds: pd.DataFrame, kind: str, trials: int, workers: int
) -> tuple[optuna.Study, Path]:
    """Add `trials` trials shared by `workers` processes (this one and workers-1 more on the same storage)."""
    import subprocess
    import sys

    objective = objective_for(cfg, comp, folds, kind)  # refuses bad input before any worker or storage exists
    shares = [trials // workers + (i < trials % workers) for i in range(workers)]
    worker_cfg = cfg.exp_dir / "tune_worker.yaml"  # the resolved config, so workers see every --set
    atomic_write_yaml(cfg.to_dict(), worker_cfg)
    cmd = [sys.executable, "-m", "competition", "tune", "-c", str(worker_cfg), "--study", kind, "--workers", "1"]
    helpers = [subprocess.Popen([*cmd, "--trials", str(n)]) for n in shares[1:] if n]
    study, path = run_study(cfg, comp, folds, kind, shares[0], objective)
    failed = [h.args for h in helpers if h.wait()]
    if failed:
        raise WorkerError(f"{len(failed)} of {len(helpers)} tuning workers failed; their errors are printed above")
    return run_study(cfg, comp, folds, kind, 0, objective) if helpers else (study, path)


def run_tune(cfg: Config, comp: Competition, folds: pd.DataFrame, study: str, trials: int, workers: int) -> list[str]:
    """The `tune` command: the study (`prompts` is the decoding study) with `workers` processes; lines to print."""
    kind = {"prompts": "decoding"}.get(study, study)
    if kind not in STUDIES:
        raise ConfigError(f"--study '{study}': expected train, decoding, prompts or vote")
    s, path = tune_with_workers(cfg, comp, folds, kind, trials, workers)
    done = [t for t in s.trials if t.state.name == "COMPLETE"]
    return [f"study {s.study_name}: {len(s.trials)} trials ({len(done)} complete); best {s.best_value:.4f} with "
            f"{s.best_params}", f"wrote {path}"]  # fmt: skip
