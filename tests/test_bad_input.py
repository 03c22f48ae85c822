"""Every bad input exits non-zero with one line naming file/line/column (or key) and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from competition.cli import app

runner = CliRunner()


def edit_csv(name: str, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / name
        fn(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)

    return apply


def set_cell(col: str, row: int, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row, col] = value
        return df

    return fn


def first_train_image(root: Path) -> Path:
    return root / "image" / "train" / f"{pd.read_csv(root / 'train.csv')['image_id'][0]}.png"


def header_only(name: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / name
        path.write_text(path.read_text().splitlines()[0] + "\n")

    return apply


CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "missing file": (lambda r: (r / "test.csv").unlink(), ["test.csv", "not found"]),
    "missing column": (edit_csv("train.csv", lambda d: d.drop(columns=["answer"])), ["train.csv", "'answer'"]),
    "duplicate ID": (
        edit_csv("train.csv", set_cell("ID", 5, "TRAIN_000002")),
        ["train.csv", "line 7", "'ID'", "TRAIN_000002"],
    ),
    "empty answer": (edit_csv("train.csv", set_cell("answer", 3, "")), ["train.csv", "line 5", "'answer'"]),
    "NaN question": (edit_csv("test.csv", set_cell("question", 8, "NaN")), ["test.csv", "line 10", "'question'"]),
    "missing image": (lambda r: first_train_image(r).unlink(), ["train.csv", "line 2", "'image_id'", "not found"]),
    "sample ID not in test": (
        edit_csv("sample_submission.csv", set_cell("ID", 2, "TEST_99999")),
        ["sample_submission.csv", "line 4", "TEST_99999"],
    ),
    "header-only train": (header_only("train.csv"), ["train.csv", "no rows (only a header)"]),
    "image placeholder in a question": (
        edit_csv("train.csv", set_cell("question", 4, "What is in the <image>?")),
        ["train.csv", "line 6", "'question'", "'<image>'"],
    ),
    "embedded newline": (
        edit_csv("train.csv", lambda d: set_cell("answer", 5, "")(set_cell("question", 1, "Two\nlines?")(d))),
        ["train.csv", "line 8", "'answer'", "empty"],
    ),
}


def invoke(command: str, root: Path, workdir: Path, *extra: str):
    return runner.invoke(
        app, [command, "-c", "configs/demo.yaml", "--set", f"data.root={root}", "--set", f"workdir={workdir}", *extra]
    )


def assert_one_line_error(res, needles: list[str]) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("case", list(CASES))
def test_bad_table_input_fails_cleanly(case: str, data_copy: Path, tmp_path: Path) -> None:
    breaker, needles = CASES[case]
    breaker(data_copy)
    workdir = tmp_path / "work"
    res = invoke("folds", data_copy, workdir)
    assert_one_line_error(res, needles)
    assert not workdir.exists() or not any(p.is_file() for p in workdir.rglob("*"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_image_found_by_validate(damage: str, data_copy: Path, tmp_path: Path) -> None:
    img = first_train_image(data_copy)
    data = img.read_bytes()
    img.write_bytes(b"not an image" if damage == "garbage" else data[: len(data) // 2])
    res = invoke("validate", data_copy, tmp_path / "work")
    assert_one_line_error(res, [img.name, "unreadable or truncated", "train.csv", "line 2", "'image_id'"])


@pytest.mark.parametrize("name", ["train.csv", "test.csv", "sample_submission.csv"])
def test_header_only_table_fails_validate(name: str, data_copy: Path, tmp_path: Path) -> None:
    header_only(name)(data_copy)
    res = invoke("validate", data_copy, tmp_path / "work")
    assert_one_line_error(res, [f"{data_copy / name}: no rows (only a header)"])


@pytest.mark.parametrize(("split", "which"), [("train", 1), ("train", -1), ("test", 2)])
def test_unreadable_later_image_names_its_first_line(split: str, which: int, data_copy: Path, tmp_path: Path) -> None:
    table = pd.read_csv(data_copy / f"{split}.csv", dtype=str)
    image_id = table["image_id"].unique()[which]
    line = int((table["image_id"] == image_id).to_numpy().argmax()) + 2  # no embedded newlines: row i is line i+2
    assert line > 2
    (data_copy / "image" / split / f"{image_id}.png").write_bytes(b"not an image")
    res = invoke("validate", data_copy, tmp_path / "work")
    assert_one_line_error(res, [f"{image_id}.png", "unreadable", f"{split}.csv: line {line}, column 'image_id'"])


def test_unknown_set_key_fails_cleanly(demo_root: Path, tmp_path: Path) -> None:
    res = invoke("folds", demo_root, tmp_path / "work", "--set", "folds.kk=3")
    assert_one_line_error(res, ["folds.kk", "valid keys", "folds.k"])
    assert not (tmp_path / "work").exists()


def test_images_resolve_whatever_the_extension(data_copy: Path, tmp_path: Path) -> None:
    img = first_train_image(data_copy)
    from PIL import Image

    Image.open(img).convert("RGB").save(img.with_suffix(".jpg"))
    img.unlink()
    res = invoke("validate", data_copy, tmp_path / "work")
    assert res.exit_code == 0, res.output
