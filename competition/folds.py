"""Grouped, answer-stratified K-fold: no image in two folds; deterministic for a seed.

python -m competition folds -c configs/demo.yaml --set folds.k=5
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from competition.config import Config
from competition.data import ANSWER, ID, IMAGE, Competition
from competition.errors import ConfigError, DataError
from competition.io import atomic_write_csv

RARE = "__rare__"


def strata(answers: pd.Series, max_strata: int, k: int) -> np.ndarray:
    """Stratum per row: the answer when it is among the `max_strata` most common and seen >= k times."""
    counts = answers.value_counts()
    keep = counts.index[(counts >= k)][: max_strata - 1]
    labels = answers.where(answers.isin(keep), RARE)
    if 0 < (labels == RARE).sum() < k and len(keep):
        labels = labels.replace(RARE, keep[0])
    return pd.factorize(labels, sort=True)[0]


def make_folds(train: pd.DataFrame, k: int, seed: int, max_strata: int) -> pd.DataFrame:
    """Assign each question a fold; all questions of one image share it. Rows keep the table's order."""
    n_images = train[IMAGE].nunique()
    if n_images < k:
        raise DataError(f"folds.k={k} but the training table has only {n_images} images")
    y = strata(train[ANSWER], max_strata, k)
    groups = pd.factorize(train[IMAGE])[0]
    fold = np.full(len(train), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, val_idx) in enumerate(splitter.split(np.zeros(len(train)), y, groups)):
        fold[val_idx] = f
    return pd.DataFrame({ID: train[ID].to_numpy(), IMAGE: train[IMAGE].to_numpy(), "fold": fold})


def fold_report(folds: pd.DataFrame, answers: pd.Series, top: int = 20) -> pd.DataFrame:
    """Per fold: questions, images, and the answer-distribution drift from the whole table.

    Drift is the total variation distance over the `top` most common answers (the rest pooled).
    """
    common = answers.value_counts().index[:top]
    pooled = answers.where(answers.isin(common), RARE).to_numpy()
    overall = pd.Series(pooled).value_counts(normalize=True)
    rows = []
    for f, idx in folds.groupby("fold").indices.items():
        dist = pd.Series(pooled[idx]).value_counts(normalize=True).reindex(overall.index, fill_value=0.0)
        rows.append(
            {
                "fold": int(f),
                "questions": len(idx),
                "images": folds[IMAGE].iloc[idx].nunique(),
                "drift_tv": float(0.5 * (dist - overall).abs().sum()),
            }
        )
    return pd.DataFrame(rows)


def write_folds(cfg: Config, train: pd.DataFrame) -> tuple[Path, pd.DataFrame]:
    """Compute the folds of the config and write experiments/<exp>/folds.csv atomically."""
    folds = make_folds(train, cfg.folds.k, cfg.folds.seed, cfg.folds.max_strata)
    path = cfg.exp_dir / "folds.csv"
    atomic_write_csv(folds, path)
    return path, fold_report(folds, train[ANSWER])


def read_folds(cfg: Config) -> pd.DataFrame:
    """Read experiments/<exp>/folds.csv written by `folds`."""
    path = cfg.exp_dir / "folds.csv"
    if not path.is_file():
        raise DataError(f"{path}: not found; run `python -m competition folds` first")
    try:
        folds = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse CSV: {str(e).splitlines()[0]}; rerun `folds`") from None
    if list(folds.columns) != [ID, IMAGE, "fold"]:
        raise DataError(f"{path}: columns are '{','.join(folds.columns)}', not '{ID},{IMAGE},fold'; rerun `folds`")
    for col, bad, what in ((ID, folds[ID].duplicated(), "repeats an ID"),
                           ("fold", ~folds["fold"].str.fullmatch(r"\d+"), "is not a fold number")):  # fmt: skip
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise DataError(f"{path}: line {i + 2}, column '{col}': '{folds[col].iloc[i]}' {what}; rerun `folds`")
    return folds.astype({"fold": int})


def fold_rows(comp: Competition, folds: pd.DataFrame, fold: int, split: str) -> pd.DataFrame:
    """Training rows of the fold's train ('train') or validation ('val') part."""
    existing = sorted(folds["fold"].unique())
    if fold not in existing:
        raise ConfigError(
            f"--fold {fold}: folds.csv has folds {', '.join(map(str, existing))}; "
            "pick one of them (or rerun `folds` after changing folds.k)"
        )
    in_fold = comp.train[ID].map(folds.set_index(ID)["fold"])
    if in_fold.isna().any():
        missing = comp.train[ID][in_fold.isna().to_numpy()].iloc[0]
        raise ConfigError(f"folds.csv does not cover train.csv (no fold for ID '{missing}'); rerun `python -m competition "
                          f"folds`")  # fmt: skip
    mask = in_fold == fold if split == "val" else in_fold != fold
    return comp.train[mask.to_numpy()].reset_index(drop=True)
