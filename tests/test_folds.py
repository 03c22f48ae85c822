"""Folds: grouped by image, balanced, deterministic."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from competition.cli import app
from competition.synthetic import generate

runner = CliRunner()


def run_folds(root: Path, workdir: Path, *extra: str) -> Path:
    args = ["folds", "-c", "configs/demo.yaml", "--set", f"data.root={root}", "--set", f"workdir={workdir}", *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return workdir / "experiments" / "demo" / "folds.csv"


def test_folds_grouped_balanced_and_deterministic(tmp_path: Path) -> None:
    demo_root = tmp_path / "data"
    generate(demo_root, train_images=300, test_images=5, seed=2)
    path = run_folds(demo_root, tmp_path / "a", "--set", "folds.k=3")
    folds = pd.read_csv(path, dtype=str)
    train = pd.read_csv(demo_root / "train.csv", dtype=str)
    assert list(folds.columns) == ["ID", "image_id", "fold"]
    assert sorted(folds["ID"]) == sorted(train["ID"]) and folds["ID"].is_unique
    assert (folds.groupby("image_id")["fold"].nunique() == 1).all()
    sizes = folds["fold"].value_counts()
    assert len(sizes) == 3 and sizes.max() <= 1.1 * sizes.min()
    again = run_folds(demo_root, tmp_path / "b", "--set", "folds.k=3")
    assert path.read_bytes() == again.read_bytes()
    other = run_folds(demo_root, tmp_path / "c", "--set", "folds.k=3", "--set", "seed=5")
    assert path.read_bytes() != other.read_bytes()
    assert (tmp_path / "a" / "experiments" / "demo" / "config.yaml").is_file()
