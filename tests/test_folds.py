"""Folds: grouped by image, balanced, deterministic; strata, the fold report, reading and writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from competition.cli import app
from competition.config import load_config
from competition.errors import DataError
from competition.folds import fold_report, make_folds, read_folds, strata, write_folds
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
    assert list(folds.columns) == ["id", "image_id", "fold"]
    assert sorted(folds["id"]) == sorted(train["ID"]) and folds["id"].is_unique
    assert (folds.groupby("image_id")["fold"].nunique() == 1).all()
    sizes = folds["fold"].value_counts()
    assert len(sizes) == 3 and sizes.max() <= 1.1 * sizes.min()
    again = run_folds(demo_root, tmp_path / "b", "--set", "folds.k=3")
    assert path.read_bytes() == again.read_bytes()
    other = run_folds(demo_root, tmp_path / "c", "--set", "folds.k=3", "--set", "folds.seed=5")
    assert path.read_bytes() != other.read_bytes()
    assert (tmp_path / "a" / "experiments" / "demo" / "config.yaml").is_file()


@pytest.mark.parametrize(
    ("answers", "max_strata", "k", "expected"),
    [
        # a b kept (seen >= k); c c d pooled, k rows: they stay a stratum. Codes sorted: '__rare__' < 'a' < 'b'.
        ("aaaabbbccd", 3, 3, [1, 1, 1, 1, 2, 2, 2, 0, 0, 0]),
        ("aaaabbbccd", 2, 3, [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]),  # max_strata counts the pooled stratum
        ("aaaabbbccd", 3, 4, [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]),  # b seen 3 < k times
        ("aaaabbbc", 5, 2, [0, 0, 0, 0, 1, 1, 1, 0]),  # fewer than k pooled rows join the commonest answer
        ("xyx", 5, 3, [0, 0, 0]),  # nothing common: one pooled stratum
    ],
)
def test_strata(answers: str, max_strata: int, k: int, expected: list[int]) -> None:
    assert strata(pd.Series(list(answers)), max_strata, k).tolist() == expected


def training_table(n_images: int, per_image: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = n_images * per_image
    return pd.DataFrame(
        {
            "id": [f"{i:04d}" for i in range(n)][::-1],  # not sorted: order must be kept
            "image_id": np.repeat([f"im{i}" for i in range(n_images)], per_image),
            "answer": rng.choice(["yes", "no", "2", "red", "circle"], size=n, p=[0.4, 0.3, 0.15, 0.1, 0.05]),
        }
    )


def test_make_folds_groups_images_keeps_order_and_depends_on_the_seed() -> None:
    train = training_table(30)
    folds = make_folds(train, 3, 0, 8)
    assert list(folds.columns) == ["id", "image_id", "fold"]
    assert folds["id"].tolist() == train["id"].tolist() and folds["image_id"].tolist() == train["image_id"].tolist()
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    assert (folds.groupby("image_id")["fold"].nunique() == 1).all()
    assert folds.equals(make_folds(train, 3, 0, 8))
    assert not folds.equals(make_folds(train, 3, 1, 8))


def test_make_folds_needs_an_image_per_fold() -> None:
    train = training_table(3)
    assert sorted(make_folds(train, 3, 0, 8)["fold"].unique()) == [0, 1, 2]
    with pytest.raises(DataError, match="folds.k=4 but the training table has only 3 images"):
        make_folds(train, 4, 0, 8)


def test_fold_report_counts_and_drift() -> None:
    folds = pd.DataFrame({"id": list("01234567"), "image_id": list("aabccdee"), "fold": [0, 0, 0, 0, 0, 1, 1, 1]})
    answers = pd.Series(["yes", "yes", "no", "2", "yes", "no", "no", "3"], index=range(10, 18))
    # top 2 (yes, no) and the pooled rest: overall 3/8, 3/8, 2/8; fold 0 3/5, 1/5, 1/5; fold 1 0, 2/3, 1/3
    report = fold_report(folds, answers, top=2)
    assert list(report.columns) == ["fold", "questions", "images", "drift_tv"]
    assert report["fold"].tolist() == [0, 1]
    assert report["questions"].tolist() == [5, 3] and report["images"].tolist() == [3, 2]
    assert report["drift_tv"].tolist() == pytest.approx([0.225, 0.375])
    # every answer its own: overall yes 3/8, no 3/8, 2 1/8, 3 1/8
    assert fold_report(folds, answers, top=4)["drift_tv"].tolist() == pytest.approx([0.3, 0.5])


def test_fold_report_pools_beyond_the_20_commonest_answers() -> None:
    common = [f"a{i}" for i in range(20)]  # twice each, once per fold; the two rare ones pool into one
    answers = pd.Series(common + ["rare0"] + common + ["rare1"])
    folds = pd.DataFrame({"id": range(42), "image_id": range(42), "fold": [0] * 21 + [1] * 21})
    assert fold_report(folds, answers)["drift_tv"].tolist() == [0.0, 0.0]
    assert fold_report(folds, answers, top=21)["drift_tv"].max() > 0


def test_write_and_read_folds(tmp_path: Path) -> None:
    cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}", "folds.k=2", "folds.max_strata=3"])
    with pytest.raises(DataError, match="folds.csv: not found; run `python -m competition folds` first"):
        read_folds(cfg)
    train = training_table(6)
    train.loc[0, "id"] = "NA"  # an ID, not a missing value
    path, report = write_folds(cfg, train)
    assert path == cfg.exp_dir / "folds.csv"
    expected = make_folds(train, 2, cfg.folds.seed, 3)
    assert read_folds(cfg).equals(expected)
    assert report.equals(fold_report(expected, train["answer"]))


def test_another_run_seed_keeps_the_folds(tmp_path: Path) -> None:
    train = training_table(6)
    written = []
    for seed in (1, 2):
        cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}", f"seed={seed}", f"experiment=s{seed}"])
        written.append(write_folds(cfg, train)[0].read_bytes())
    assert written[0] == written[1]  # a second seed of a config blends with the first (same folds.csv)
    other = load_config("configs/demo.yaml", [f"workdir={tmp_path}", "folds.seed=7", "experiment=f7"])
    assert write_folds(other, train)[0].read_bytes() != written[0]
