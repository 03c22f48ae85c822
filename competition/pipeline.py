"""Stages in order: the inputs every stage shares, every fold's training and prediction, the demo flow.

    python -m competition demo -c configs/demo.yaml --with configs/demo_classifier.yaml   # ..., tune, ensemble
    python -m competition train-all -c configs/demo.yaml     # every fold not trained yet
    python -m competition predict-all -c configs/demo.yaml   # every fold's OOF and test answers

Each step skips what is already done, so a rerun after an interruption continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from competition.config import Config
from competition.console import beside_others, progress_bar, say, tracker, warn
from competition.data import Competition, load_competition
from competition.errors import ConfigError
from competition.folds import read_folds, write_folds


def stage_inputs(cfg: Config, make_folds: bool = True) -> tuple[Competition, pd.DataFrame]:
    """The competition and its folds; with `make_folds`, a missing folds.csv is written first (deterministic,
    never overwritten); stages that read earlier outputs (cv, tune, ensemble) refuse instead. A hand-edited
    tuned.yaml that does not fit is refused first."""
    from competition.tuned import load_tuned

    load_tuned(cfg)
    comp = load_competition(cfg.data)
    if make_folds and not (cfg.exp_dir / "folds.csv").is_file():
        path, _ = write_folds(cfg, comp.train)
        cfg.save()
        say(f"wrote {path} ({cfg.folds.k} folds, seed {cfg.folds.seed}): it was missing")
    return comp, read_folds(cfg)


def train_all(cfg: Config, comp: Competition, folds: pd.DataFrame, log: Callable[[str], None] = say,
              only: Sequence[int] | None = None) -> None:  # fmt: skip
    """Train every fold (or those in `only`) that has no finished model yet."""
    from competition.train import train_fold, trained_summary

    for k in range(cfg.folds.k) if only is None else only:
        if (cfg.fold_dir(k) / "train_metrics.json").is_file():
            log(f"[train] fold {k}: done")
            continue
        log(f"[train] fold {k}")
        with progress_bar() as bar:
            m, _ = train_fold(cfg, comp, folds, k, log=log, progress=tracker(bar))
        log(f"[train] fold {k}: {trained_summary(m)}")


def predict_all(cfg: Config, comp: Competition, folds: pd.DataFrame, only: Sequence[int] | None = None) -> None:
    """Every fold's (or those in `only`) OOF and test answers, every prompt x decoding (finished files are skipped
    row by row)."""
    from competition.predict import predict_fold

    with progress_bar(rate=True) as bar:
        for k in range(cfg.folds.k) if only is None else only:
            predict_fold(cfg, comp, folds, k, ("oof", "test"), progress=tracker(bar), warn=warn)


def write_demo_data(cfg: Config) -> None:
    """The demo data set at data.root, when its train.csv is missing."""
    from competition.synthetic import generate

    if not (cfg.data.root / cfg.data.train_csv).is_file():
        say(f"[data] writing the demo data set to {cfg.data.root}")
        generate(cfg.data.root, seed=cfg.seed)


def run_member(cfg: Config) -> None:
    """Folds, every fold's training and prediction, and CV of one experiment."""
    from competition.cv import run_cv
    from competition.plan import check_model

    check_model(cfg)
    comp, folds = stage_inputs(cfg)
    cfg.save()
    train_all(cfg, comp, folds)
    say("[predict] every fold, every prompt x decoding")
    predict_all(cfg, comp, folds)
    run_cv(cfg, comp, folds)


def run_fold_beside_others(cfg: Config, fold: int, threads: int) -> None:
    """One fold's training and prediction in a process of its own: `threads` torch threads, lines named after the
    experiment, no progress bars."""
    import torch

    torch.set_num_threads(threads)
    beside_others(cfg.experiment)
    comp, folds = stage_inputs(cfg, make_folds=False)
    train_all(cfg, comp, folds, only=[fold])
    predict_all(cfg, comp, folds, only=[fold])


def run_members(cfgs: Sequence[Config], jobs: int = 1) -> None:
    """run_member of each experiment in turn; with `jobs` > 1, the folds of all of them (training, then prediction)
    `jobs` at a time in processes of their own that share the CPU cores, the first experiment's first, then CV."""
    from competition.cv import run_cv

    for cfg in cfgs:
        write_demo_data(cfg)
    if jobs <= 1:
        for cfg in cfgs:
            say(f"[demo] experiment {cfg.experiment}")
            run_member(cfg)
        return
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    for cfg in cfgs:  # folds before any process starts
        stage_inputs(cfg)
        cfg.save()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    say(f"[demo] the folds of {', '.join(c.experiment for c in cfgs)}: {jobs} side by side, {threads} thread(s) each")
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        units = [pool.submit(run_fold_beside_others, cfg, k, threads) for cfg in cfgs for k in range(cfg.folds.k)]
        for unit in units:
            unit.result()  # the first failure is raised here, as it would be in turn
    for cfg in cfgs:
        run_cv(cfg, *stage_inputs(cfg, make_folds=False))


def run_demo(cfg: Config, others: Sequence[Config] = (), jobs: int = 1) -> None:
    """Every experiment's folds, training, prediction and CV (this one's folds first; `jobs` side by side), then
    this one's decoding study; its ensemble (the caller's) blends them all. No vote study: its blend, tuned on all
    the OOF, has no nested CV to be ranked by, so the ensemble does not ship it."""
    from competition.cv import run_cv
    from competition.tune import run_study
    from competition.tuned import load_tuned, tuned_job

    for other in others:
        check_same_folds(cfg, other)
    run_members([cfg, *others], jobs)
    comp, folds = stage_inputs(cfg)
    if "decoding" not in load_tuned(cfg):
        say(f"[tune] decoding study on fold {cfg.tune.fold}'s validation questions")
        run_study(cfg, comp, folds, "decoding", cfg.tune.trials)
        if tuned_job(cfg):
            say("[predict] the tuned decoding")
            predict_all(cfg, comp, folds)
            run_cv(cfg, comp, folds)
        else:
            say("[predict] the tuned decoding decodes as a configured one: nothing new to predict")


FOLD_KEYS = ("folds.k", "folds.seed", "folds.max_strata", "data.root", "data.train_csv", "data.id_col", "data.image_col",
             "data.answer_col")  # what decides folds.csv  # fmt: skip


def check_same_folds(cfg: Config, other: Config) -> None:
    """A ConfigError, before anything trains, unless `other` makes (or has) the folds.csv of `cfg`: the blend joins
    experiments of one folds.csv only."""
    for key in FOLD_KEYS:
        section, name = key.split(".")
        mine, theirs = getattr(getattr(cfg, section), name), getattr(getattr(other, section), name)
        if mine != theirs and not (isinstance(mine, Path) and mine.resolve() == theirs.resolve()):
            raise ConfigError(f"--with {other.experiment}: {key}={theirs} differs from {cfg.experiment}'s {key}={mine}; "
                              f"the blend needs one folds.csv: give both the same {key}")  # fmt: skip
    mine, theirs = cfg.exp_dir / "folds.csv", other.exp_dir / "folds.csv"
    if mine.is_file() and theirs.is_file() and mine.read_bytes() != theirs.read_bytes():
        raise ConfigError(f"--with {other.experiment}: {theirs} differs from {mine}; the blend needs one folds.csv")
