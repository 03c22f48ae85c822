"""Synthetic competitions: the layout, deterministic by seed, answers true to the scene drawn, every kind."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from competition import kinds, synthetic
from competition.cli import app
from competition.config import load_config
from competition.data import load_competition
from competition.errors import ConfigError
from competition.metrics import question_types
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


KINDS = list(synthetic.KINDS)


def content_hash(root: Path) -> str:
    """Hash of the tables' bytes and the images' decoded pixels (independent of the PNG encoder's version)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix == ".csv":
            h.update(p.name.encode())
            h.update(p.read_bytes())
        elif p.suffix == ".png":
            h.update(p.name.encode())
            h.update(np.asarray(Image.open(p).convert("RGB")).tobytes())
    return h.hexdigest()


def test_the_default_kind_is_the_demo_grid_unchanged(tmp_path: Path) -> None:
    generate(tmp_path / "default", 12, 4, seed=5)
    generate(tmp_path / "grid", 12, 4, seed=5, kind="grid")
    digest = "08a0b0f425eea946a09230b9509606381fdd7a76a078617e3181fffcf3956cc8"
    assert content_hash(tmp_path / "default") == content_hash(tmp_path / "grid") == digest


def test_an_unknown_kind_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        generate(tmp_path / "out", 2, 1, kind="maze")
    assert str(e.value) == f"--kind 'maze': expected one of {', '.join(KINDS)}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_a_loadable_competition(tmp_path: Path, kind: str) -> None:
    root = tmp_path / kind
    rows = generate(root, 40, 6, q_per_image=4, seed=2, kind=kind)
    comp = load_competition(load_config("configs/demo.yaml", [f"data.root={root}"]).data)
    assert len(comp.train) == rows["train"] and len(comp.test) == rows["test"]
    assert comp.test["image_id"].nunique() == 6
    solution = pd.read_csv(root / "solution.csv", dtype=str, keep_default_na=False)
    assert solution["ID"].tolist() == comp.test["id"].tolist() and (solution["answer"] != "").all()
    assert question_types(comp.train["question"]).nunique() >= 3
    sizes = {Image.open(p).size for p in comp.train_image_paths.values()}
    assert all(40 <= max(s) <= 200 for s in sizes)
    assert len(sizes) == 1 if kind in ("grid", "vqa") else len(sizes) > 5


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_deterministic_by_seed(tmp_path: Path, kind: str) -> None:
    for name, seed in [("a", 4), ("b", 4), ("c", 5)]:
        generate(tmp_path / name, 8, 3, seed=seed, kind=kind)
    assert content_hash(tmp_path / "a") == content_hash(tmp_path / "b") != content_hash(tmp_path / "c")


@pytest.mark.parametrize("kind", KINDS)
def test_the_tables_hold_the_samples_drawn(tmp_path: Path, kind: str) -> None:
    generate(tmp_path / "out", 10, 2, q_per_image=3, seed=8, kind=kind)
    train = pd.read_csv(tmp_path / "out" / "train.csv", dtype=str, keep_default_na=False)
    drawn = synthetic.samples(kind, "train", 10, 3, 96, random.Random(8))
    expected = [(i, q, a) for i, s in drawn for q, a in s.qa]
    if kind in synthetic.ANNOTATORS:  # the answer is the annotators' most frequent: mostly the truth (35 % slips on "other")
        assert (train["answer"] == [a for _, _, a in expected]).mean() >= 0.75
        expected = [(i, q, a) for (i, q, _), a in zip(expected, train["answer"], strict=True)]
    assert list(train[["image_id", "question", "answer"]].itertuples(index=False, name=None)) == expected


def drawn(kind: str, n: int = 150, seed: int = 0) -> list[kinds.Sample]:
    """n samples of a kind, four questions each."""
    return [s for _, s in synthetic.samples(kind, "train", n, 4, 96, random.Random(seed))]


def answers_to(samples: list[kinds.Sample], prefix: str) -> list[tuple[kinds.Sample, str, str]]:
    """(sample, question, answer) for every question that starts with `prefix`."""
    return [(s, q, a) for s in samples for q, a in s.qa if q.startswith(prefix)]


def centre_color(img: Image.Image, it: kinds.Item) -> tuple[int, int, int]:
    """The pixel at an item's centre."""
    return img.getpixel((int(it.x), int(it.y)))


def test_grid_counts_are_the_objects_drawn() -> None:
    for s, _, a in answers_to(drawn("grid"), "How many objects"):
        assert a == str(len(s.scene))


def test_object_answers_describe_the_one_object_drawn() -> None:
    samples = drawn("object")
    for s in samples:
        (it,) = s.scene
        assert centre_color(s.image, it) == kinds.PALETTE[it.color]
        assert 0.1 <= s.info["frac"] <= 0.6
        for q, a in s.qa:
            if q.startswith("What shape"):
                assert a == it.shape
            if q == "Is the object large?":
                assert a == ("yes" if s.info["frac"] >= 0.4 else "no")
    wheres = {a for _, _, a in answers_to(samples, "Where")}
    assert wheres == {"left", "right", "top", "bottom", "center"}


def test_wide_items_are_read_from_end_to_end() -> None:
    samples = drawn("wide")
    ratios = [s.image.width / s.image.height for s in samples]
    assert all(r >= 2.4 or r <= 1 / 2.4 for r in ratios) and min(ratios) < 1 < max(ratios)
    for s, q, a in answers_to(samples, "Which shape"):
        key = {"left": lambda it: it.x, "right": lambda it: -it.x, "top": lambda it: it.y, "bottom": lambda it: -it.y}
        side = q.rstrip("?").split()[-1]
        assert a == min(s.scene, key=key[side]).shape
    for s, _, a in answers_to(samples, "How many"):
        assert a == str(len(s.scene)) and 2 <= len(s.scene) <= 4


def test_exist_answers_yes_exactly_for_objects_drawn_about_a_quarter_of_the_time() -> None:
    found = answers_to(drawn("exist", 300), "Is there a")
    for s, q, a in found:
        color, shape = q.rstrip("?").split()[-2:]
        assert a == ("yes" if any((it.color, it.shape) == (color, shape) for it in s.scene) else "no")
    assert 0.18 <= sum(a == "yes" for _, _, a in found) / len(found) <= 0.32


def test_count_answers_are_the_objects_drawn() -> None:
    samples = drawn("count")
    for s in samples:
        for it in s.scene:
            assert centre_color(s.image, it) == kinds.PALETTE[it.color]
    found = answers_to(samples, "How many")
    for s, q, a in found:
        name = q.split()[2]
        assert a == str(sum(name in (it.color, kinds.PLURALS[it.shape]) for it in s.scene))
    assert {str(n) for n in range(7)} <= {a for *_, a in found} <= {str(n) for n in range(10)}


def test_glyphs_answers_are_the_text_drawn() -> None:
    for s in drawn("glyphs", 60):
        assert s.scene["text"].lower() == s.scene["word"]
        for q, a in s.qa:
            if q.startswith("What is the word"):
                assert a == s.scene["word"]
            if q.startswith("Which letter"):
                corner = q.removeprefix("Which letter is in the ").removesuffix(" corner?")
                assert a == s.scene["letters"][corner].lower()


def test_lighting_names_the_colours_drawn_though_the_pixels_change() -> None:
    changed = 0
    for s in drawn("lighting", 60):
        by_shape = {it.shape: it for it in s.scene}
        for q, a in s.qa:
            if q.startswith("What color is the"):
                assert a == by_shape[q.rstrip("?").split()[-1]].color
        changed += all(centre_color(s.image, it) != kinds.PALETTE[it.color] for it in s.scene)
    assert changed >= 50
