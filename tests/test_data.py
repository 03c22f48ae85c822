"""load_competition's rules on small hand-written tables: every refusal names the physical file line and column."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from competition.config import DataConfig
from competition.data import load_competition, scan_images
from competition.errors import DataError

TRAIN = """ID,image_id,question,answer
T0,a,What is it?,yes
T1,b,What is it?,no
T2,a,Where is it?,left
T3,c,How many?,2
"""
TEST = """ID,image_id,question
Q0,x,What is it?
Q1,y,Where is it?
"""
SAMPLE = """ID,answer
Q0,yes
Q1,yes
"""


def make(root: Path, train: str = TRAIN, test: str = TEST, sample: str = SAMPLE, **cfg) -> DataConfig:
    """A competition folder of the given tables and an empty .png for every image id they use."""
    for name, text in (("train.csv", train), ("test.csv", test), ("sample_submission.csv", sample)):
        (root / name).write_text(text)
    for split, text in (("train", train), ("test", test)):
        (root / "image" / split).mkdir(parents=True, exist_ok=True)
        for line in text.splitlines()[1:]:
            cells = line.split(",")
            if len(cells) > 2 and re.fullmatch(r"\w+", cells[1]):
                (root / "image" / split / f"{cells[1]}.png").touch()
    return DataConfig(root=root, **cfg)


def refused(cfg: DataConfig) -> str:
    """The message load_competition refuses `cfg` with."""
    with pytest.raises(DataError) as e:
        load_competition(cfg)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_the_base_tables_load(tmp_path: Path) -> None:
    comp = load_competition(make(tmp_path))
    assert (len(comp.train), len(comp.test), len(comp.sample)) == (4, 2, 2)
    assert comp.image_path("train", "b") == tmp_path / "image" / "train" / "b.png"
    assert comp.image_path("test", "y") == tmp_path / "image" / "test" / "y.png"


def test_the_users_columns_load_under_the_internal_names(tmp_path: Path) -> None:
    names = {"ID": "qid", "image_id": "img", "question": "text", "answer": "label"}

    def renamed(table: str) -> str:
        header, rest = table.split("\n", 1)
        return ",".join(names[h] for h in header.split(",")) + "\n" + rest

    cfg = make(tmp_path, renamed(TRAIN), renamed(TEST), renamed(SAMPLE),
               id_col="qid", image_col="img", question_col="text", answer_col="label")  # fmt: skip
    comp = load_competition(cfg)
    assert comp.train.columns.tolist() == ["id", "image_id", "question", "answer"]
    assert comp.test.columns.tolist() == ["id", "image_id", "question"]
    assert comp.sample.columns.tolist() == ["qid", "label"]  # the submission's template keeps the user's names
    assert comp.train["answer"].tolist() == ["yes", "no", "left", "2"]


# 1. header-only tables


@pytest.mark.parametrize("name", ["train.csv", "test.csv", "sample_submission.csv"])
def test_header_only_table_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    tables = {"train.csv": TRAIN, "test.csv": TEST, "sample_submission.csv": SAMPLE}
    tables[name] = tables[name].splitlines()[0] + "\n\n"
    cfg = make(tmp_path, tables["train.csv"], tables["test.csv"], tables["sample_submission.csv"])
    assert refused(cfg) == f"{tmp_path / name}: no rows (only a header)"


# 3. the image placeholder


@pytest.mark.parametrize(
    ("name", "line", "col", "old", "new"),
    [
        ("train.csv", 4, "question", "T2,a,Where is it?", "T2,a,Where is the <image>?"),
        ("train.csv", 3, "answer", "T1,b,What is it?,no", "T1,b,What is it?,<image>"),
        ("test.csv", 3, "question", "Q1,y,Where is it?", "Q1,y,<image> where?"),
    ],
)
def test_image_placeholder_in_text_is_refused(
    tmp_path: Path, name: str, line: int, col: str, old: str, new: str
) -> None:
    tables = {"train.csv": TRAIN, "test.csv": TEST}
    tables[name] = tables[name].replace(old, new)
    msg = refused(make(tmp_path, tables["train.csv"], tables["test.csv"]))
    assert msg.startswith(f"{tmp_path / name}: line {line}, column '{col}': ")
    assert "'<image>'" in msg


def test_placeholder_lookalikes_are_text(tmp_path: Path) -> None:
    train = TRAIN.replace("Where is it?", "Where is the <IMAGE> or <img> or image?")
    assert len(load_competition(make(tmp_path, train)).train) == 4


# 4. physical line numbers

QUOTED = TRAIN.replace("T0,a,What is it?,yes", 'T0,a,"What is it,\nreally?\n",yes')  # record 1 spans lines 2-4


def test_line_numbers_count_physical_lines_after_an_embedded_newline(tmp_path: Path) -> None:
    train = QUOTED.replace("T3,c,How many?,2", "T3,c,How many?, ")
    assert refused(make(tmp_path, train)).startswith(f"{tmp_path / 'train.csv'}: line 7, column 'answer': ")


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    train = "\n" + TRAIN.replace("T1,b,What is it?,no\n", "T1,b,What is it?,no\n\n  \n").replace("T3", "T1")
    assert refused(make(tmp_path, train)).startswith(f"{tmp_path / 'train.csv'}: line 8, column 'ID': ")


def test_duplicate_names_both_physical_lines(tmp_path: Path) -> None:
    msg = refused(make(tmp_path, QUOTED.replace("T3,", "T0,")))
    assert msg == f"{tmp_path / 'train.csv'}: line 7, column 'ID': duplicate ID 'T0' (first on line 2)"


def test_missing_image_names_physical_line(tmp_path: Path) -> None:
    cfg = make(tmp_path, QUOTED)
    (tmp_path / "image" / "train" / "c.png").unlink()
    assert refused(cfg).startswith(f"{tmp_path / 'train.csv'}: line 7, column 'image_id': image 'c' not found")


def test_bad_image_names_physical_line_of_first_use(tmp_path: Path) -> None:
    comp = load_competition(make(tmp_path, QUOTED.replace("T2,a", "T2,b")))
    with pytest.raises(DataError, match=r"\[.*train\.csv: line 5, column 'image_id'\]$"):
        comp.load_image("train", "b")


# 5. an image whose extension is not tried


def test_image_with_an_untried_extension_gets_a_hint(tmp_path: Path) -> None:
    cfg = make(tmp_path)
    folder = tmp_path / "image" / "train"
    (folder / "b.png").rename(folder / "b.tif")
    (folder / "b.zz").touch()  # the hint names the first file in name order
    (folder / "bb.jpg").touch()
    assert refused(cfg) == (
        f"{tmp_path / 'train.csv'}: line 3, column 'image_id': image 'b' not found in {folder} "
        "(found b.tif: add '.tif' to data.image_extensions)"
    )


def test_missing_image_without_a_lookalike_gets_no_hint(tmp_path: Path) -> None:
    cfg = make(tmp_path)
    folder = tmp_path / "image" / "test"
    (folder / "y.png").unlink()
    (folder / "y.tif").mkdir()  # a folder, not an image file
    (folder / "y").touch()  # no extension to suggest
    (folder / "yy.tif").touch()  # another stem
    assert refused(cfg) == f"{tmp_path / 'test.csv'}: line 3, column 'image_id': image 'y' not found in {folder}"


# 6. which cells are missing values


@pytest.mark.parametrize("cell", ["", "   ", "nan", "NaN", "null", "NULL", "<NA>", " <na> "])
def test_missing_value_spellings_are_refused(tmp_path: Path, cell: str) -> None:
    msg = refused(make(tmp_path, TRAIN.replace("T2,a,Where is it?,left", f"T2,a,Where is it?,{cell}")))
    assert msg == f"{tmp_path / 'train.csv'}: line 4, column 'answer': empty or NaN value"


@pytest.mark.parametrize("cell", ["NA", "N/A", "none", "None", "0", "nil", "<unk>"])
def test_answers_that_look_missing_are_answers(tmp_path: Path, cell: str) -> None:
    comp = load_competition(make(tmp_path, TRAIN.replace("T2,a,Where is it?,left", f"T2,a,Where is it?,{cell}")))
    assert comp.train["answer"].tolist()[2] == cell


# 7. rules a mutant could otherwise break unnoticed


def test_duplicate_reports_the_first_repeated_value_and_its_first_two_lines(tmp_path: Path) -> None:
    # IDs A, B, A, A, B: the first duplicated value is A; its first two lines are 2 and 4 (not B's, not A's last)
    train = TRAIN.replace("T0,", "A,").replace("T1,", "B,").replace("T2,", "A,").replace("T3,", "A,") + "B,c,Why?,no\n"
    assert refused(make(tmp_path, train)) == (
        f"{tmp_path / 'train.csv'}: line 4, column 'ID': duplicate ID 'A' (first on line 2)"
    )


def test_empty_cell_reports_the_first_bad_row_of_the_first_bad_column(tmp_path: Path) -> None:
    train = TRAIN.replace("T1,b,What is it?,no", "T1,b,,no").replace("T0,a,What is it?,yes", "T0,a,What is it?,")
    assert refused(make(tmp_path, train)).startswith(f"{tmp_path / 'train.csv'}: line 3, column 'question': ")


def test_missing_image_reports_the_first_row_that_uses_it(tmp_path: Path) -> None:
    cfg = make(tmp_path)
    (tmp_path / "image" / "train" / "a.png").unlink()
    (tmp_path / "image" / "train" / "c.png").unlink()
    assert refused(cfg).startswith(f"{tmp_path / 'train.csv'}: line 2, column 'image_id': image 'a' not found")


@pytest.mark.parametrize(
    ("extensions", "want"), [([".png", ".jpg"], "a.png"), ([".jpg", ".png"], "a.jpg"), ([".JPG", ".gif"], "a.jpg")]
)
def test_extension_order_decides_between_files_of_one_stem(tmp_path: Path, extensions: list[str], want: str) -> None:
    cfg = make(tmp_path, image_extensions=extensions)
    folder = tmp_path / "image" / "train"
    for path in [*folder.iterdir(), *(tmp_path / "image" / "test").iterdir()]:
        path.with_suffix(".gif").touch()
    (folder / "a.jpg").touch()
    assert load_competition(cfg).image_path("train", "a") == folder / want


def test_only_the_images_the_tables_use_are_resolved(tmp_path: Path) -> None:
    cfg = make(tmp_path)
    (tmp_path / "image" / "train" / "unused.png").touch()
    assert set(load_competition(cfg).train_image_paths) == {"a", "b", "c"}


def test_a_cell_too_long_for_the_csv_module_still_gets_a_line(tmp_path: Path) -> None:
    long = "word " * 40_000  # 200k characters: over the csv module's default field size limit
    train = TRAIN.replace("T0,a,What is it?", f"T0,a,{long}").replace("T2,a,Where is it?,left", "T2,a,Where is it?,")
    assert refused(make(tmp_path, train)).startswith(f"{tmp_path / 'train.csv'}: line 4, column 'answer': ")


def test_extension_case_is_ignored(tmp_path: Path) -> None:
    cfg = make(tmp_path)
    folder = tmp_path / "image" / "train"
    (folder / "b.png").rename(folder / "b.PNG")
    assert load_competition(cfg).image_path("train", "b") == folder / "b.PNG"


def test_sample_id_missing_from_test_is_refused(tmp_path: Path) -> None:
    msg = refused(make(tmp_path, sample=SAMPLE.replace("Q1,", "Q9,")))
    assert msg == (
        f"{tmp_path / 'sample_submission.csv'}: line 3, column 'ID': ID 'Q9' is not in {tmp_path / 'test.csv'}"
    )


def test_test_id_missing_from_sample_is_refused(tmp_path: Path) -> None:
    msg = refused(make(tmp_path, test=TEST + "Q2,x,Why?\n", sample="ID,answer\nQ1,yes\n"))
    assert msg == f"{tmp_path / 'sample_submission.csv'}: column 'ID': test ID 'Q0' has no row"


def test_duplicate_sample_id_is_refused(tmp_path: Path) -> None:
    msg = refused(make(tmp_path, sample=SAMPLE + "Q0,no\n"))
    assert msg == f"{tmp_path / 'sample_submission.csv'}: line 4, column 'ID': duplicate ID 'Q0' (first on line 2)"


def test_sample_in_another_order_loads(tmp_path: Path) -> None:
    assert len(load_competition(make(tmp_path, sample="ID,answer\nQ1,yes\nQ0,yes\n")).sample) == 2


def test_missing_column_names_it_and_the_columns_found(tmp_path: Path) -> None:
    msg = refused(make(tmp_path, test=TEST.replace("question", "q")))
    assert msg == f"{tmp_path / 'test.csv'}: missing column 'question' (columns found: ID, image_id, q)"


def test_missing_folders_are_named(tmp_path: Path) -> None:
    assert (
        refused(DataConfig(root=tmp_path / "nope"))
        == f"{tmp_path / 'nope'}: competition folder not found (set data.root)"
    )
    cfg = make(tmp_path, test_images="image/tst")
    assert refused(cfg) == f"{tmp_path / 'image' / 'tst'}: image folder not found"


def test_test_image_error_names_the_test_table(tmp_path: Path) -> None:
    comp = load_competition(make(tmp_path))
    (tmp_path / "image" / "test" / "y.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"y\.png: unreadable .*\[.*test\.csv: line 3, column 'image_id'\]$"):
        comp.load_image("test", "y")


def test_load_image_decodes_a_good_file(tmp_path: Path) -> None:
    comp = load_competition(make(tmp_path))
    Image.new("RGB", (3, 2), (1, 2, 3)).save(tmp_path / "image" / "train" / "c.png")
    assert comp.load_image("train", "c").size == (3, 2)


def test_scan_images_decodes_both_splits_and_reports_progress(tmp_path: Path) -> None:
    comp = load_competition(make(tmp_path))
    for path in [*comp.train_image_paths.values(), *comp.test_image_paths.values()]:
        Image.new("RGB", (2, 2)).save(path)
    seen: list[tuple[int, int]] = []

    def progress(items: list, total: int):
        seen.append((len(items), total))
        return items

    assert scan_images(comp, progress) == 5 and seen == [(5, 5)]
    assert scan_images(comp) == 5
