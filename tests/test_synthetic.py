"""Demo data generator: the competition layout, deterministic by seed, answerable questions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from competition import synthetic
from competition.cli import app
from competition.errors import ConfigError
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


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_images": 0}, "--train-images must be at least 1 (got 0)"),
        ({"test_images": -5}, "--test-images must be at least 1 (got -5)"),
        ({"q_per_image": 0}, "--questions-per-image must be at least 1 (got 0)"),
    ],
)
def test_bad_counts_are_refused_before_writing(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        generate(tmp_path / "out", **{"train_images": 2, "test_images": 1, **kwargs})
    assert str(e.value) == message
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("keep me")
    with pytest.raises(ConfigError) as e:
        generate(tmp_path / "out", 2, 1)
    assert str(e.value) == f"{tmp_path / 'out'}: exists and is not a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (tmp_path / "out").read_text() == "keep me"


def test_a_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def failing(img):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return b"png"

    monkeypatch.setattr(synthetic, "_png_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        generate(tmp_path / "out", 4, 1)
    assert list(tmp_path.iterdir()) == []


def test_regenerating_into_an_existing_folder_replaces_the_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    generate(out, 6, 2, seed=1)
    (out / "notes.txt").write_text("mine")
    generate(out, 3, 2, seed=2)
    assert (out / "notes.txt").read_text() == "mine"
    assert pd.read_csv(out / "train.csv")["image_id"].nunique() == 3
    fresh = tmp_path / "fresh"
    generate(fresh, 3, 2, seed=2)
    for name in ["train.csv", "test.csv", "sample_submission.csv", "solution.csv", "image/test/test_00001.png"]:
        assert (out / name).read_bytes() == (fresh / name).read_bytes(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--train-images", "0"], "--train-images must be at least 1 (got 0)"),
        (["--test-images", "-5"], "--test-images must be at least 1 (got -5)"),
        (["--questions-per-image", "0"], "--questions-per-image must be at least 1 (got 0)"),
    ],
)
def test_data_command_refuses_bad_counts_in_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    res = CliRunner().invoke(app, ["data", "--out", str(tmp_path / "out"), *args])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: {needle}"
    assert list(tmp_path.iterdir()) == []


def test_data_command_refuses_a_file_as_out(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    res = CliRunner().invoke(app, ["data", "--out", str(tmp_path / "f"), "--train-images", "2"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: {tmp_path / 'f'}: exists and is not a folder"


def test_out_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError) as e:
        generate(tmp_path / "f" / "sub" / "out", 2, 1)
    assert str(e.value) == f"{tmp_path / 'f'}: exists and is not a folder"


def test_out_in_a_read_only_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(synthetic.tempfile, "mkdtemp", denied)
    with pytest.raises(ConfigError) as e:
        generate(tmp_path / "out", 2, 1)
    assert str(e.value) == f"{tmp_path / 'out'}: cannot write there (Permission denied)"
