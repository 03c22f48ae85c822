"""Question-aware augmentation of training rows: a flipped picture keeps its answer true only if left and right
(a mirror) or top and bottom (upside down) swap in the question and the answer too; a question about text (a word
to read) keeps its picture as it is. Every family trains on the same views; the picture is flipped where images
load (a marked image id), so no family's collator knows of it, and `dataset.Views` draws one view of each example
per epoch.

    python -c "from competition.augment import swap_sides; print(swap_sides('Is the cat top left?', 'hv'))"
"""

from __future__ import annotations

import re

import pandas as pd
from PIL import Image, ImageOps

from competition.data import ANSWER, ANSWERS, IMAGE, QUESTION

FLIPS = {"none": (), "horizontal": ("h",), "both": ("h", "v", "hv")}  # train.flips: the views besides the picture
VIEW_MARK = "@flip-"  # an image id + VIEW_MARK + view: load the picture flipped
SWAPS = {
    "h": {"left": "right", "leftmost": "rightmost", "lefthand": "righthand"},
    "v": {"top": "bottom", "topmost": "bottommost", "above": "below", "upper": "lower"},
}  # fmt: skip


def _pattern(pairs: dict[str, str]) -> tuple[re.Pattern[str], dict[str, str]]:
    both = {**pairs, **{b: a for a, b in pairs.items()}}
    return re.compile(r"\b(" + "|".join(sorted(both, key=len, reverse=True)) + r")\b", re.IGNORECASE), both


_SWAPS = {axis: _pattern(pairs) for axis, pairs in SWAPS.items()}


def swap_sides(text: str, view: str = "h") -> str:
    """The text as it reads of the picture flipped by `view` ('h' mirrored: left <-> right; 'v' upside down: top <->
    bottom, above <-> below; 'hv' both), each word keeping its case ('Left' -> 'Right', 'LEFT' -> 'RIGHT')."""
    for axis in view:
        pattern, words = _SWAPS[axis]

        def swap(m: re.Match[str], words: dict[str, str] = words) -> str:
            word, other = m.group(0), words[m.group(0).lower()]
            return other.upper() if word.isupper() else other.capitalize() if word[0].isupper() else other

        text = pattern.sub(swap, text)
    return text


def flipped_rows(rows: pd.DataFrame, flips: str, keep: str) -> pd.DataFrame:
    """`rows` and, for each view of `flips`, a copy of the rows whose question does not match `keep` (a regex of
    questions whose picture must not flip: reading text): the image id marked, the question and answer swapped."""
    views = FLIPS[flips]
    kept = re.compile(keep, re.IGNORECASE) if keep else None  # compiled: a pattern with groups is not a pandas warning
    movable = rows[~rows[QUESTION].map(lambda q: bool(kept.search(q)))] if kept else rows
    if not views or movable.empty:
        return rows
    copies = [flipped_copy(movable, view) for view in views]
    return pd.concat([rows, *copies], ignore_index=True)


def flipped_copy(rows: pd.DataFrame, view: str) -> pd.DataFrame:
    """The rows as they read of their pictures flipped by `view`."""
    copy = rows.copy()
    copy[QUESTION], copy[IMAGE] = viewed(copy[QUESTION].tolist(), copy[IMAGE].tolist(), [view] * len(copy))
    copy[ANSWER] = copy[ANSWER].map(lambda t: swap_sides(t, view))
    if ANSWERS in copy:
        copy[ANSWERS] = [tuple(swap_sides(a, view) for a in answers) for answers in copy[ANSWERS]]
    return copy


def split_mark(image_id: str) -> tuple[str, str]:
    """(the image id without its view mark, the view: '' for the picture as it is)."""
    base, mark, view = image_id.rpartition(VIEW_MARK)
    return (base, view) if mark and view in FLIPS["both"] else (image_id, "")


def as_marked(image: Image.Image, view: str) -> Image.Image:
    """The picture flipped by its view ('' as it is)."""
    if "h" in view:
        image = ImageOps.mirror(image)
    return ImageOps.flip(image) if "v" in view else image


def row_views(questions: list[str], view: str, keep: str) -> list[str]:
    """Each question's view at test time: `view`, or '' (the picture as it is) where the question matches `keep`."""
    kept = re.compile(keep, re.IGNORECASE) if keep and view else None
    return ["" if kept and kept.search(q) else view for q in questions]


def viewed(questions: list[str], images: list[str], views: list[str]) -> tuple[list[str], list[str]]:
    """The questions as they read of their pictures flipped by each row's view, and the image ids marked to load so."""
    return ([swap_sides(q, v) for q, v in zip(questions, views, strict=True)],
            [i + VIEW_MARK + v if v else i for i, v in zip(images, views, strict=True)])  # fmt: skip
