"""Question-aware augmentation: a mirrored picture swaps left and right in its question and answer, nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from competition.augment import MIRROR_MARK, mirrored_rows, swap_sides
from competition.config import load_config
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


def test_mirrored_rows_add_marked_copies_with_swapped_questions_and_answers() -> None:
    rows = pd.DataFrame({IMAGE: ["a", "a", "b", "c"], QUESTION: ["Where is the cat?", "How many dogs?", "Which is leftmost?",
                         "Is it left?"], ANSWER: ["top left", "2", "circle", "yes"]})  # fmt: skip
    assert mirrored_rows(rows, 0.0, seed=0) is rows
    out = mirrored_rows(rows, 1.0, seed=0)
    copies = out.iloc[len(rows):]
    assert len(out) == 2 * len(rows) and out.iloc[: len(rows)].equals(rows)
    assert copies[IMAGE].tolist() == [f"{i}{MIRROR_MARK}" for i in rows[IMAGE]]
    assert copies[QUESTION].tolist() == ["Where is the cat?", "How many dogs?", "Which is rightmost?", "Is it right?"]
    assert copies[ANSWER].tolist() == ["top right", "2", "circle", "yes"]
    half = mirrored_rows(rows, 0.5, seed=3)
    marked = {i.removesuffix(MIRROR_MARK) for i in half[IMAGE] if i.endswith(MIRROR_MARK)}
    assert len(marked) == 2 and half.equals(mirrored_rows(rows, 0.5, seed=3))  # whole images, seeded
    assert all(len(half[half[IMAGE] == i + MIRROR_MARK]) == (rows[IMAGE] == i).sum() for i in marked)


def test_a_marked_image_id_loads_the_mirrored_picture(demo_root: Path) -> None:
    comp = load_competition(load_config("configs/demo.yaml", [f"data.root={demo_root}"]).data)
    image_id = comp.train[IMAGE].iloc[0]
    plain = np.asarray(load_marked(comp, "train", image_id))
    mirrored = np.asarray(load_marked(comp, "train", image_id + MIRROR_MARK))
    assert np.array_equal(mirrored, plain[:, ::-1]) and not np.array_equal(mirrored, plain)
    assert isinstance(load_marked(comp, "train", image_id), Image.Image)


@pytest.mark.train
def test_a_run_with_mirrored_images_trains_on_them(demo_root: Path, tmp_path: Path) -> None:
    from competition.train import train_fold
    from tests.test_train import setup

    counts = {}
    for share in (0.0, 0.5):
        cfg, comp, folds = setup(demo_root, tmp_path / str(share), f"train.mirror={share}", "train.max_steps=2")
        counts[share] = train_fold(cfg, comp, folds, 0, log=lambda s: None)[0]["examples"]
    assert counts[0.5] > counts[0.0] * 1.3
