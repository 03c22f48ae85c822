"""The demo: every stage in order for one experiment and the experiments beside it, skipping what is done, ending
in a blended, ranked submission.

    python -m competition demo -c configs/demo.yaml --with configs/demo_classifier_patch.yaml@7 --jobs 2

Each step skips what is already done, so a rerun after an interruption continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from competition.config import Config, load_config
from competition.console import beside_others, say
from competition.errors import ConfigError
from competition.pipeline import predict_all, stage_inputs, train_all


def run(cfg: Config, with_: Sequence[str], overrides: list[str], jobs: int = 1) -> list[Config]:
    """The demo of `cfg` with the experiments `with_` names (PATH or PATH@SEED, each with `overrides`): every
    experiment's folds, training, prediction and CV, then this one's decoding study; the experiments it ran beside
    this one (the caller's ensemble blends them)."""
    others = [config_at_seed(spec, overrides) for spec in with_]
    names = [cfg.experiment, *(o.experiment for o in others)]
    if len(set(names)) < len(names):
        raise ConfigError(f"experiment: the demo's configs share an experiment name ({', '.join(names)}); give each its own")
    run_demo(cfg, others, jobs)
    return others


def config_at_seed(spec: str, overrides: list[str]) -> Config:
    """A --with entry: PATH, or PATH@SEED for the config at another run seed, as experiment <name>_seed<SEED>."""
    path, at, seed = spec.rpartition("@")
    if not (path if at else spec) or (at and not seed.isdigit()):
        raise ConfigError(f"--with {spec}: expected PATH or PATH@SEED with a whole-number seed")
    if not at:
        return load_config(Path(spec), overrides)
    name = load_config(Path(path), overrides).experiment
    return load_config(Path(path), [*overrides, f"seed={seed}", f"experiment={name}_seed{seed}"])


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
    from competition.tuned import tuned_train

    check_model(cfg)
    comp, folds = stage_inputs(cfg)
    cfg = tuned_train(cfg)[0]  # tuned.yaml's training parameters, resolved once: config.yaml is what trains
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
