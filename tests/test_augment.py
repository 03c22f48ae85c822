"""Question-aware augmentation: a flipped picture swaps left/right (mirrored) or top/bottom (upside down) in its question
and answer, nothing else; questions about text keep their picture."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from competition.augment import VIEW_MARK, flipped_rows, swap_sides
from competition.config import FLIP_KEEP, load_config
from competition.data import ANSWER, IMAGE, QUESTION, load_competition
from competition.images import load_marked


@pytest.mark.parametrize(
    ("text", "swapped"),
    [
        ("Is the red circle left of the square?", "Is the red circle right of the square?"),
        ("Which shape is leftmost?", "Which shape is rightmost?"),
        ("Where is the cross? Left or Right?", "Where is the cross? Right or Left?"),
        ("top LEFT", "top RIGHT"),
        ("bottom right", "bottom left"),
        ("What is in the left-hand corner?", "What is in the right-hand corner?"),
    ],
)
def test_a_flip_swaps_left_and_right_words(text: str, swapped: str) -> None:
    assert swap_sides(text) == swapped and swap_sides(swapped) == text


@pytest.mark.parametrize("text", ["How many circles are there?", "What color is the leftover cake?", "cleft", "top",
                                  "Is there a lefty?", "What word is written?"])  # fmt: skip
def test_a_flip_leaves_other_questions_alone(text: str) -> None:
    assert swap_sides(text) == text


@pytest.mark.parametrize(
    ("text", "view", "flipped"),
    [
        ("Which letter is in the top left corner?", "v", "Which letter is in the bottom left corner?"),
        ("Is the cross above the star?", "v", "Is the cross below the star?"),
        ("upper left", "hv", "lower right"),
        ("What color is the object at the very bottom?", "hv", "What color is the object at the very top?"),
        ("Which shape is furthest to the left?", "v", "Which shape is furthest to the left?"),
        ("How many objects are there?", "hv", "How many objects are there?"),
    ],
)
def test_upside_down_swaps_top_and_bottom(text: str, view: str, flipped: str) -> None:
    assert swap_sides(text, view) == flipped and swap_sides(flipped, view) == text


def test_flipped_rows_add_a_marked_copy_per_view_except_questions_about_text() -> None:
    rows = pd.DataFrame({IMAGE: ["a", "a", "b", "c"], QUESTION: ["Where is the cat?", "How many dogs?", "Which is leftmost?",
                         "What word is written on the left?"], ANSWER: ["top left", "2", "circle", "stop"]})  # fmt: skip
    assert flipped_rows(rows, "none", FLIP_KEEP) is rows
    out = flipped_rows(rows, "both", FLIP_KEEP)
    assert len(out) == len(rows) + 3 * 3 and out.iloc[: len(rows)].equals(rows)
    mirrored = out[out[IMAGE].str.endswith(VIEW_MARK + "h")]
    assert mirrored[IMAGE].tolist() == [f"{i}{VIEW_MARK}h" for i in "aab"]
    assert mirrored[QUESTION].tolist() == ["Where is the cat?", "How many dogs?", "Which is rightmost?"]
    assert mirrored[ANSWER].tolist() == ["top right", "2", "circle"]
    assert out[out[IMAGE] == "a" + VIEW_MARK + "hv"][ANSWER].tolist() == ["bottom right", "2"]
    assert len(flipped_rows(rows, "horizontal", "")) == 2 * len(rows)  # nothing kept: every question flips
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a user's pattern with a group is not a pandas warning
        assert len(flipped_rows(rows, "horizontal", r"(WORD|dogs)")) == len(rows) + 2


def test_a_marked_image_id_loads_the_mirrored_picture(demo_root: Path) -> None:
    comp = load_competition(load_config("configs/demo.yaml", [f"data.root={demo_root}"]).data)
    image_id = comp.train[IMAGE].iloc[0]
    plain = np.asarray(load_marked(comp, "train", image_id))
    mirrored = np.asarray(load_marked(comp, "train", image_id + VIEW_MARK + "h"))
    assert np.array_equal(mirrored, plain[:, ::-1]) and not np.array_equal(mirrored, plain)
    assert np.array_equal(np.asarray(load_marked(comp, "train", image_id + VIEW_MARK + "hv")), plain[::-1, ::-1])
    assert isinstance(load_marked(comp, "train", image_id), Image.Image)


def test_views_draw_one_view_per_example_and_keep_the_epoch_length() -> None:
    from competition.dataset import Examples, Views

    base = Examples()
    base.items = [{"image_id": i} for i in ["a", "a", "b", f"a{VIEW_MARK}h", f"a{VIEW_MARK}h", f"b{VIEW_MARK}h", f"b{VIEW_MARK}v"]]
    views = Views(base)
    assert len(views) == 3 and views.groups == [[0, 3], [1, 4], [2, 5, 6]]
    drawn = Counter()
    for epoch in range(300):
        views.set_epoch(epoch)
        drawn[views[2]["image_id"]] += 1
    assert set(drawn) == {"b", f"b{VIEW_MARK}h", f"b{VIEW_MARK}v"} and min(drawn.values()) > 60
    again = Views(base)
    again.set_epoch(7)
    views.set_epoch(7)
    assert [again[g] for g in range(3)] == [views[g] for g in range(3)]  # a resumed run reads the same views


@pytest.mark.train
def test_a_run_with_flips_trains_on_flipped_pictures_in_epochs_as_long(demo_root: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import competition.images
    from competition.train import train_fold
    from tests.test_train import setup

    seen: dict[str, list[str]] = {}
    for flips in ("none", "both"):
        views = seen.setdefault(flips, [])
        monkeypatch.setattr(competition.images, "as_marked", lambda im, view, views=views: views.append(view) or im)
        cfg, comp, folds = setup(demo_root, tmp_path / flips, f"train.flips={flips}", "train.max_steps=4")
        seen[flips + " examples"] = train_fold(cfg, comp, folds, 0, log=lambda s: None)[0]["examples"]
    assert seen["none examples"] == seen["both examples"]
    assert set(seen["none"]) == {""} and {"h", "v", "hv"} <= set(seen["both"])
