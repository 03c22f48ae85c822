"""Demo data generator: the competition layout, deterministic by seed, answerable questions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from competition.synthetic import generate


def test_layout_and_determinism(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate(a, 20, 5, seed=3)
    generate(b, 20, 5, seed=3)
    for name in ["train.csv", "test.csv", "sample_submission.csv", "solution.csv", "image/train/train_000007.png"]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    train = pd.read_csv(a / "train.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(a / "test.csv", dtype=str, keep_default_na=False)
    sample = pd.read_csv(a / "sample_submission.csv", dtype=str, keep_default_na=False)
    assert list(train.columns) == ["ID", "image_id", "question", "answer"]
    assert list(test.columns) == ["ID", "image_id", "question"]
    assert list(sample.columns) == ["ID", "answer"] and sample["ID"].tolist() == test["ID"].tolist()
    assert len(list((a / "image" / "test").glob("*.png"))) == 5
    starts = train["question"].str.split().str[:2].str.join(" ").str.lower().unique()
    assert {"how many", "what color", "what shape", "where is", "is there", "is the"} <= set(starts)
