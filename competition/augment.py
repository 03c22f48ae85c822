"""Question-aware augmentation of training rows: a mirrored picture keeps its answer true only if left and right
swap in the question and the answer too. Every family trains on the same augmented rows; the picture's mirroring
happens where images load (a marked image id), so no family's collator knows of it.

    python -c "from competition.augment import swap_sides; print(swap_sides('Is the cat left of the dog?'))"
"""

from __future__ import annotations

import re

import pandas as pd
from PIL import Image, ImageOps

from competition.data import ANSWER, ANSWERS, IMAGE, QUESTION

MIRROR_MARK = "@mirrored"  # appended to an image id: load the picture mirrored left to right
SIDES = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost",
         "lefthand": "righthand", "righthand": "lefthand"}  # fmt: skip
_SIDE_WORD = re.compile(r"\b(" + "|".join(sorted(SIDES, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def swap_sides(text: str) -> str:
    """Left and right swapped in a text, each word keeping its case ('Left' -> 'Right', 'LEFT' -> 'RIGHT')."""

    def swap(m: re.Match[str]) -> str:
        word, other = m.group(0), SIDES[m.group(0).lower()]
        return other.upper() if word.isupper() else other.capitalize() if word[0].isupper() else other

    return _SIDE_WORD.sub(swap, text)


def mirrored_rows(rows: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """`rows` and, for a seeded `share` of their images (every question of a chosen image), mirrored copies: the
    image id marked, left and right swapped in question and answer."""
    if share <= 0:
        return rows
    images = pd.Series(rows[IMAGE].unique())
    chosen = set(images.sample(frac=min(share, 1.0), random_state=seed))
    copies = rows[rows[IMAGE].isin(chosen)].copy()
    copies[IMAGE] = copies[IMAGE] + MIRROR_MARK
    copies[QUESTION] = copies[QUESTION].map(swap_sides)
    copies[ANSWER] = copies[ANSWER].map(swap_sides)
    if ANSWERS in copies:
        copies[ANSWERS] = [tuple(map(swap_sides, answers)) for answers in copies[ANSWERS]]
    return pd.concat([rows, copies], ignore_index=True)


def split_mark(image_id: str) -> tuple[str, bool]:
    """(the image id without the mirror mark, whether it was marked)."""
    if image_id.endswith(MIRROR_MARK):
        return image_id[: -len(MIRROR_MARK)], True
    return image_id, False


def as_marked(image: Image.Image, mirrored: bool) -> Image.Image:
    """The picture, mirrored left to right when its id was marked."""
    return ImageOps.mirror(image) if mirrored else image
