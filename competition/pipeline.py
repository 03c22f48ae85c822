"""Stages over every fold: the inputs every stage shares, every fold's training and prediction.

    python -m competition train-all -c configs/demo.yaml     # every fold not trained yet
    python -m competition predict-all -c configs/demo.yaml   # every fold's OOF and test answers

Each step skips what is already done, so a rerun after an interruption continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from competition.config import Config
from competition.console import progress_bar, say, tracker, warn
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
        if cfg.fold_trained(k):
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


def train_one(cfg: Config, fold: int, force: bool = False) -> list[str]:
    """The train stage of one fold: a model that cannot be built is refused before folds.csv or config.yaml is
    written; folds made when missing, the config saved, the fold trained (or left alone when finished, unless
    `force`); the summary line."""
    from competition.plan import check_model
    from competition.train import train_fold, trained_summary
    from competition.tuned import tuned_train

    check_model(cfg)
    comp, folds = stage_inputs(cfg)
    cfg = tuned_train(cfg)[0]  # tuned.yaml's training parameters, resolved once: config.yaml is what trains
    cfg.save()
    with progress_bar() as bar:
        metrics, model = train_fold(cfg, comp, folds, fold, log=say, progress=tracker(bar), force=force)
    return [] if model is None else [f"fold {fold}: {trained_summary(metrics)}; model in {cfg.fold_dir(fold) / 'model'}"]


def predict_one(cfg: Config, fold: int, split: str = "both", shard: str = "0/1") -> list[Path]:
    """The predict stage of one fold: `split` oof, test or both, shard i/n of the image groups; the files written."""
    from competition.predict import parse_shard, predict_fold

    if split not in ("oof", "test", "both"):
        raise ConfigError(f"--split '{split}': expected oof, test or both")
    comp, folds = stage_inputs(cfg)
    with progress_bar(rate=True) as bar:
        return predict_fold(cfg, comp, folds, fold, ("oof", "test") if split == "both" else (split,), parse_shard(shard),
                            tracker(bar), warn)  # fmt: skip
