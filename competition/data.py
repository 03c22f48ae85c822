"""Load and validate the competition tables and resolve image files by id.

python -m competition validate -c configs/demo.yaml    # full scan, images included
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from competition.config import DataConfig
from competition.errors import DataError
from competition.prompts import IMAGE_TOKEN

# The internal names of the competition's columns: load_competition renames the user's columns
# (data.id_col & co.) to these once; a submission gets the sample's own names back in submit.py.
ID, IMAGE, QUESTION, ANSWER = "id", "image_id", "question", "answer"
QTYPE = "qtype"  # optional: each question's type from the table (data.type_col); else derived from its words
ANSWERS, CHOICES = "answers", "choices"  # optional: every annotator's answer (train), the choices; tuples of text

# Cells read as missing (after strip and lower): empty, and what float NaN, pd.NA and SQL NULL print as.
MISSING_TEXT = {"", "nan", "<na>", "null"}
CHOICES_LINE = "\nChoices: {}."  # appended to a multiple-choice question: every family's prompt lists its choices


@dataclass
class Competition:
    """The validated tables and the image file of every image id."""

    train: pd.DataFrame  # columns ID, IMAGE, QUESTION, ANSWER (and ANSWERS, CHOICES where configured)
    test: pd.DataFrame  # columns ID, IMAGE, QUESTION (and CHOICES)
    sample: pd.DataFrame  # the sample submission as the user wrote it: the template of every submission
    train_image_paths: dict[str, Path]
    test_image_paths: dict[str, Path]
    cfg: DataConfig

    def image_path(self, split: str, image_id: str) -> Path:
        """The file of one image id of 'train' or 'test'."""
        return (self.train_image_paths if split == "train" else self.test_image_paths)[image_id]

    def load_image(self, split: str, image_id: str) -> Image.Image:
        """Decode one image; a bad file's error also names the first table line that uses it."""
        try:
            return open_image(self.image_path(split, image_id))
        except DataError as e:
            df = self.train if split == "train" else self.test
            table = Path(self.cfg.root) / (self.cfg.train_csv if split == "train" else self.cfg.test_csv)
            i = int((df[IMAGE] == image_id).to_numpy().argmax())
            raise DataError(f"{e} [{table}: line {_line(table, i)}, column '{self.cfg.image_col}']") from None


def _line(path: Path, i: int) -> int:
    """Physical line of `path` where 0-based data row i starts; read again only for an error message."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader, start, row = csv.reader(f), 1, -1  # row -1 is the header
            for cells in reader:
                if cells and (len(cells) > 1 or cells[0].strip()):  # pandas skips blank lines
                    if row == i:
                        return start
                    row += 1
                start = reader.line_num + 1
    except (OSError, csv.Error):
        pass
    return i + 2  # the line when no record spans lines


def read_table(path: Path, required: list[str]) -> pd.DataFrame:
    """Read a CSV as strings (no NA guessing: 'none' is an answer); check required columns."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: cannot parse CSV: {str(e).splitlines()[0]}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column '{missing[0]}' (columns found: {', '.join(df.columns)})")
    if df.empty:
        raise DataError(f"{path}: no rows (only a header)")
    return df


def check_not_empty(df: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    """Refuse an empty or NaN cell, naming file, line and column."""
    for col in columns:
        bad = df[col].str.strip().str.lower().isin(MISSING_TEXT)
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise DataError(f"{path}: line {_line(path, i)}, column '{col}': empty or NaN value")


def check_no_placeholder(df: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    """Refuse text holding the image placeholder: the model would take it for the image's slot."""
    for col in columns:
        # one search of the joined column (3x faster than per cell; the token holds no newline to span cells)
        if IMAGE_TOKEN in "\n".join(df[col].tolist()):
            i = int(df[col].str.contains(IMAGE_TOKEN, regex=False).to_numpy().argmax())
            raise DataError(
                f"{path}: line {_line(path, i)}, column '{col}': contains the image placeholder '{IMAGE_TOKEN}' (remove or reword it)"
            )


def check_unique(df: pd.DataFrame, path: Path, col: str) -> None:
    """Refuse a repeated value in `col`, naming both lines."""
    dup = df[col].duplicated(keep=False)
    if dup.any():
        rows = dup.to_numpy().nonzero()[0]
        value = df[col].iloc[rows[0]]
        same = rows[(df[col].iloc[rows] == value).to_numpy()]
        raise DataError(
            f"{path}: line {_line(path, same[1])}, column '{col}': duplicate ID '{value}' "
            f"(first on line {_line(path, same[0])})"
        )


def check_disjoint(df: pd.DataFrame, path: Path, other: pd.DataFrame, other_path: Path, col: str) -> None:
    """Refuse an ID of `df` that `other` has too (a test question that is also a training one), naming both lines."""
    shared = df[col].isin(other[col])
    if shared.any():
        i = int(shared.to_numpy().argmax())
        value = df[col].iloc[i]
        j = int((other[col] == value).to_numpy().argmax())
        raise DataError(f"{path}: line {_line(path, i)}, column '{col}': ID '{value}' is also a training ID "
                        f"({other_path}: line {_line(other_path, j)})")  # fmt: skip


def parse_lists(df: pd.DataFrame, path: Path, col: str, sep: str | None) -> list[tuple[str, ...]]:
    """Each cell of `col` as the tuple of its texts, stripped (a JSON list, or split at `sep`); a DataError names the
    line of the first cell that is no list or an empty one."""
    out = []
    for i, cell in enumerate(df[col].tolist()):
        try:
            items = cell.split(sep) if sep else json.loads(cell)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {_line(path, i)}, column '{col}': not a JSON list ({e.msg}); "
                            f"set data.list_sep for separated text") from None  # fmt: skip
        texts = tuple(str(x).strip() for x in items) if isinstance(items, list) else ()
        if not texts or not all(texts) or any(isinstance(x, (dict, list)) for x in items):
            raise DataError(f"{path}: line {_line(path, i)}, column '{col}': expected a list of answers, got {cell!r}")
        out.append(texts)
    return out


def most_frequent(answers: tuple[str, ...]) -> str:
    """The answer given most often (ties: the first listed)."""
    return max(answers, key=lambda a: (answers.count(a), -answers.index(a)))


def _list_columns(df: pd.DataFrame, path: Path, cfg: DataConfig, split: str) -> dict[str, list]:
    """The optional list columns of one table under their internal names (answers: train only)."""
    cols = {CHOICES: cfg.choices_col} | ({ANSWERS: cfg.answers_col} if split == "train" else {})
    return {name: parse_lists(df, path, col, cfg.list_sep) for name, col in cols.items() if col}


def with_choices_listed(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows whose questions end with their choices (CHOICES_LINE) where the table has them; else as they are."""
    if CHOICES not in rows:
        return rows
    listed = [CHOICES_LINE.format(", ".join(c)) for c in rows[CHOICES]]
    return rows.assign(**{QUESTION: rows[QUESTION].str.cat(listed)})


def _types(df: pd.DataFrame, cfg: DataConfig) -> dict[str, list]:
    """The question type column under its internal name where the config names one and the table has it."""
    return {QTYPE: df[cfg.type_col].tolist()} if cfg.type_col and cfg.type_col in df else {}


def read_answers(path: Path, id_col: str, answer_col: str) -> pd.DataFrame:
    """A table in the submission's format (the user's id and answer columns), checked, as columns ID, ANSWER."""
    df = read_table(path, [id_col, answer_col])
    check_not_empty(df, path, [id_col, answer_col])
    check_unique(df, path, id_col)
    return df[[id_col, answer_col]].set_axis([ID, ANSWER], axis=1)


def index_images(folder: Path, extensions: list[str]) -> dict[str, Path]:
    """Map image id (file stem) -> file for every file in `folder` with a known extension."""
    if not folder.is_dir():
        raise DataError(f"{folder}: image folder not found")
    rank = {e.lower(): i for i, e in enumerate(extensions)}
    found: dict[str, tuple[int, Path]] = {}
    with os.scandir(folder) as it:
        for entry in it:
            stem, ext = os.path.splitext(entry.name)
            r = rank.get(ext.lower())
            if r is not None and (stem not in found or r < found[stem][0]):
                found[stem] = (r, Path(entry.path))
    return {k: p for k, (_, p) in found.items()}


def resolve_images(df: pd.DataFrame, path: Path, col: str, folder: Path, extensions: list[str]) -> dict[str, Path]:
    """Index the folder and check that every image id of the table has a file."""
    index = index_images(folder, extensions)
    ids = df[col].unique()
    present = pd.Series(ids).isin(index.keys()).to_numpy()
    if not present.all():
        missing = ids[~present][0]
        i = int((df[col] == missing).to_numpy().argmax())
        hint = _extension_hint(folder, missing)
        raise DataError(f"{path}: line {_line(path, i)}, column '{col}': image '{missing}' not found in {folder}{hint}")
    return {i: index[i] for i in ids}


def _extension_hint(folder: Path, image_id: str) -> str:
    """' (found x.tif: add ...)' when a file of that stem has an extension not tried, else ''."""
    with os.scandir(folder) as it:  # x.tif has stem x; a file named just x has no extension to suggest
        names = sorted(
            e.name for e in it if e.name != image_id and os.path.splitext(e.name)[0] == image_id and e.is_file()
        )
    if not names:
        return ""
    return f" (found {names[0]}: add '{os.path.splitext(names[0])[1]}' to data.image_extensions)"


# Modes Pillow gives 16-bit grey in (PNG, TIFF, PGM); I and F hold the 0..65535 range too.
WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


def open_image(path: Path) -> Image.Image:
    """Decode an image fully as RGB (16-bit scaled to 8); a corrupt or truncated file is a DataError naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in WIDE_MODES:  # convert() would clip every value above 255 to white
                wide = np.clip(np.nan_to_num(np.asarray(im)), 0, 65535).astype(np.uint16)
                # >> 8 keeps the top byte, as Pillow itself reduces 48-bit RGB PNG/PPM to RGB
                return Image.fromarray((wide >> 8).astype(np.uint8)).convert("RGB")
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable or truncated image ({e})") from None


def load_competition(cfg: DataConfig) -> Competition:
    """Read and validate train/test/sample tables and resolve every image id to a file."""
    c = cfg
    root = Path(c.root)
    if not root.is_dir():
        raise DataError(f"{root}: competition folder not found (set data.root)")
    train_path, test_path, sample_path = root / c.train_csv, root / c.test_csv, root / c.sample_submission_csv
    listed = [col for col in (c.choices_col,) if col]
    given = [c.answers_col] if c.answers_col else [c.answer_col]
    train = read_table(train_path, [c.id_col, c.image_col, c.question_col, *given, *listed])
    test = read_table(test_path, [c.id_col, c.image_col, c.question_col, *listed])
    sample = read_table(sample_path, [c.id_col, c.answer_col])
    given += [c.answer_col] if c.answers_col and c.answer_col in train else []
    for df, path, cols in (
        (train, train_path, [c.id_col, c.image_col, c.question_col, *given, *listed]),
        (test, test_path, [c.id_col, c.image_col, c.question_col, *listed]),
        (sample, sample_path, [c.id_col]),
    ):
        check_not_empty(df, path, cols)
        check_unique(df, path, c.id_col)
    check_disjoint(test, test_path, train, train_path, c.id_col)
    check_no_placeholder(train, train_path, [c.question_col, *given])
    check_no_placeholder(test, test_path, [c.question_col])
    extra = ~sample[c.id_col].isin(test[c.id_col])
    if extra.any():
        i = int(extra.to_numpy().argmax())
        raise DataError(
            f"{sample_path}: line {_line(sample_path, i)}, column '{c.id_col}': "
            f"ID '{sample[c.id_col].iloc[i]}' is not in {test_path}"
        )
    absent = ~test[c.id_col].isin(sample[c.id_col])
    if absent.any():
        missing = test[c.id_col][absent].iloc[0]
        raise DataError(f"{sample_path}: column '{c.id_col}': test ID '{missing}' has no row")
    train_paths = resolve_images(train, train_path, c.image_col, root / c.train_images, c.image_extensions)
    test_paths = resolve_images(test, test_path, c.image_col, root / c.test_images, c.image_extensions)
    train_lists, test_lists = _list_columns(train, train_path, c, "train"), _list_columns(test, test_path, c, "test")
    if c.answer_col not in train or c.answers_col == c.answer_col:  # one column of lists: answer is their most frequent
        train[c.answer_col] = [most_frequent(a) for a in train_lists[ANSWERS]]
    train_raw, test_raw = train, test
    train = train[[c.id_col, c.image_col, c.question_col, c.answer_col]].set_axis([ID, IMAGE, QUESTION, ANSWER], axis=1)
    test = test[[c.id_col, c.image_col, c.question_col]].set_axis([ID, IMAGE, QUESTION], axis=1)
    train, test = train.assign(**train_lists, **_types(train_raw, c)), test.assign(**test_lists, **_types(test_raw, c))
    train, test = with_choices_listed(train), with_choices_listed(test)
    return Competition(train, test, sample, train_paths, test_paths, cfg)


def scan_images(comp: Competition, progress: Callable[[list, int], Iterable] | None = None) -> int:
    """Decode every image of both splits; raise on the first unreadable one. Returns the count."""
    items = [("train", i) for i in comp.train_image_paths] + [("test", i) for i in comp.test_image_paths]
    for split, image_id in progress(items, len(items)) if progress else items:
        comp.load_image(split, image_id)
    return len(items)
