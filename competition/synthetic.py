"""Synthetic competitions in the Dacon VQA layout: shapes, words and scenes, and questions about them.

    python -m competition data --out data/demo --train-images 3000 --test-images 300
    generate(Path("data/count"), kind="count")    # kinds: grid (the demo), object, wide, exist, count, glyphs, lighting
    generate(Path("data/demo_vqa"), kind="vqa")   # the demo grid, each question answered by 10 simulated annotators

Writes train.csv, test.csv, sample_submission.csv, image/{train,test}/*.png and
solution.csv (the held-out test answers, for scoring end to end). The demo grid draws 1-3 objects
on a 3x3 grid; every object has its own colour, so colour names an object and questions ask what
it is, where, how big. The other kinds are described in competition/kinds.py.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from competition.errors import ConfigError
from competition.kinds import SAMPLERS, Sample

SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
}
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
SIZES = {"small": 0.26, "large": 0.40}
GRID = 3


@dataclass(frozen=True)
class Obj:
    """One drawn object: shape, colour, size and grid cell."""

    shape: str
    color: str
    size: str
    row: int
    col: int


def position_name(obj: Obj) -> str:
    """Name of the grid cell: 'top left', 'center', 'bottom right', ..."""
    row, col = ROWS[obj.row], COLS[obj.col]
    if row == "middle" and col == "center":
        return "center"
    if row == "middle":
        return col
    if col == "center":
        return row
    return f"{row} {col}"


def draw_scene(objects: list[Obj], width: int, height: int, rng: random.Random) -> Image.Image:
    """Render objects on a light, slightly tinted canvas."""
    shade = rng.randint(225, 250)
    img = Image.new("RGB", (width, height), (shade, shade, shade - rng.randint(0, 10)))
    d = ImageDraw.Draw(img)
    cw, ch = width / GRID, height / GRID
    for o in objects:
        r = SIZES[o.size] * min(cw, ch)
        cx = (o.col + 0.5) * cw + rng.uniform(-0.08, 0.08) * cw
        cy = (o.row + 0.5) * ch + rng.uniform(-0.08, 0.08) * ch
        fill = COLORS[o.color]
        if o.shape == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o.shape == "square":
            d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o.shape == "triangle":
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        else:
            t = r / 2.6
            d.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
            d.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    return img


def sample_scene(rng: random.Random) -> list[Obj]:
    """1-3 objects in distinct cells, each of its own colour."""
    n = rng.choice((1, 2, 2, 3, 3))
    cells = rng.sample(range(GRID * GRID), n)
    colors = rng.sample(list(COLORS), n)
    return [
        Obj(rng.choice(SHAPES), c, rng.choice(list(SIZES)), cell // GRID, cell % GRID)
        for cell, c in zip(cells, colors, strict=True)
    ]


def questions_for(objs: list[Obj], rng: random.Random, k: int) -> list[tuple[str, str]]:
    """Up to k (question, answer) pairs of different types about one scene."""
    o = rng.choice(objs)
    shape_counts = {s: sum(x.shape == s for x in objs) for s in SHAPES}
    s = rng.choice(SHAPES)
    qa: list[tuple[str, str]] = [
        ("How many objects are in the image?", str(len(objs))),
        (f"How many {PLURALS[s]} are there?", str(shape_counts[s])),
        (f"What shape is the {o.color} object?", o.shape),
        (f"Where is the {o.color} object?", position_name(o)),
        (f"Is the {o.color} object large or small?", o.size),
    ]
    if shape_counts[o.shape] == 1:
        qa.append((f"What color is the {o.shape}?", o.color))
    if rng.random() < 0.5:
        qa.append((f"Is there a {o.color} {o.shape}?", "yes"))
    else:
        present = {(x.shape, x.color) for x in objs}
        sh, c = rng.choice([(sh, c) for sh in SHAPES for c in COLORS if (sh, c) not in present])
        qa.append((f"Is there a {c} {sh}?", "no"))
    rng.shuffle(qa)
    return qa[:k]


def grid_sample(rng: random.Random, k: int, size: int) -> Sample:
    """The demo grid: 1-3 objects on a square `size` px canvas."""
    objs = sample_scene(rng)
    img = draw_scene(objs, size, size, rng)
    return Sample(img, questions_for(objs, rng, k), objs)


KINDS = {"grid": grid_sample, **SAMPLERS, "vqa": grid_sample}
ANNOTATORS = {"vqa": 10}  # kinds whose questions carry this many simulated annotators' answers (VQA v2's count)
# How often one annotator departs from the truth, by VQA answer type: near VQA v2's agreement (yes/no answers agree
# most, numbers less, other answers least, mostly as another wording of the same thing).
DISAGREE = {"yes/no": 0.05, "number": 0.25, "other": 0.35}
WORDINGS = {
    "circle": ("round", "oval"), "square": ("rectangle", "box"), "triangle": ("triangular", "pyramid"),
    "cross": ("plus", "x"), "large": ("big", "medium"), "small": ("tiny", "little"), "purple": ("violet", "pink"),
    "yellow": ("gold", "orange"), "green": ("lime", "dark green"), "blue": ("navy", "light blue"), "red": ("pink",),
    "top left": ("upper left", "left"), "top right": ("upper right", "right"), "bottom left": ("lower left", "left"),
    "bottom right": ("lower right", "right"), "center": ("middle",), "top": ("top center", "up"),
    "bottom": ("bottom center", "down"), "left": ("middle left",), "right": ("middle right",),
}  # fmt: skip


def annotate(answer: str, rng: random.Random, n: int) -> list[str]:
    """`n` simulated annotators' answers to a question whose true answer is `answer`: most give it; the others flip a
    yes/no, miscount by one, or use another wording (or a near miss) of the answer."""
    kind = "yes/no" if answer in ("yes", "no") else "number" if answer.isdigit() else "other"
    out = []
    for _ in range(n):
        if rng.random() >= DISAGREE[kind]:
            out.append(answer)
        elif kind == "yes/no":
            out.append("no" if answer == "yes" else "yes")
        elif kind == "number":
            out.append(str(max(0, int(answer) + rng.choice((-1, 1)))))
        else:
            out.append(rng.choice(WORDINGS.get(answer, (answer,))))
    return out


def samples(
    kind: str, split: str, n_images: int, q_per_image: int, size: int, rng: random.Random
) -> Iterator[tuple[str, Sample]]:
    """(image id, sample) for each of a split's images, drawn in order from `rng`."""
    make = KINDS[kind]
    width_digits = 6 if split == "train" else 5
    for i in range(n_images):
        yield f"{split}_{i:0{width_digits}d}", make(rng, q_per_image, size)


def _write_split(out: Path, split: str, n_images: int, q_per_image: int, size: int, rng: random.Random,
                 kind: str = "grid", annotators: random.Random | None = None) -> pd.DataFrame:  # fmt: skip
    """Render one split's images and return its question table (`annotators` draws the annotators' answers, apart
    from the scenes: a kind with annotators shows the pictures of the kind it extends)."""
    folder = out / "image" / split
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for image_id, sample in samples(kind, split, n_images, q_per_image, size, rng):
        (folder / f"{image_id}.png").write_bytes(_png_bytes(sample.image))
        for q, a in sample.qa:
            rows.append({"image_id": image_id, "question": q, "answer": a})
            if kind in ANNOTATORS:  # the answer a VQA data set lists first: its annotators' most frequent
                answers = annotate(a, annotators or random.Random(0), ANNOTATORS[kind])
                rows[-1] |= {"answer": max(answers, key=answers.count), "answers": json.dumps(answers)}
    df = pd.DataFrame(rows)
    width_digits = 6 if split == "train" else 5
    df.insert(0, "ID", [f"{split.upper()}_{j:0{width_digits}d}" for j in range(len(df))])
    return df


def _png_bytes(img: Image.Image) -> bytes:
    """Encode an image as PNG bytes."""
    b = io.BytesIO()
    img.save(b, format="PNG", compress_level=1)
    return b.getvalue()


def check_args(out: Path, counts: dict[str, int], kind: str = "grid") -> None:
    """Refuse an unknown kind, a count below 1 (named as the `data` command's option), or an --out that is or lies
    under a file."""
    if kind not in KINDS:
        raise ConfigError(f"--kind '{kind}': expected one of {', '.join(KINDS)}")
    for option, n in counts.items():
        if n < 1:
            raise ConfigError(f"{option} must be at least 1 (got {n})")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{existing}: exists and is not a folder")


def _write_all(
    out: Path, train_images: int, test_images: int, q_per_image: int, seed: int, size: int, kind: str = "grid"
) -> dict[str, int]:
    """Write every file of the data set into the folder `out`; returns row counts."""
    rng, annotators = random.Random(seed), random.Random(f"{seed}-annotators")
    train = _write_split(out, "train", train_images, q_per_image, size, rng, kind, annotators)
    test = _write_split(out, "test", test_images, q_per_image, size, rng, kind, annotators)
    answers = ["answers"] if kind in ANNOTATORS else []
    train[["ID", "image_id", "question", "answer", *answers]].to_csv(out / "train.csv", index=False)
    test[["ID", "image_id", "question"]].to_csv(out / "test.csv", index=False)
    test[["ID"]].assign(answer="yes").to_csv(out / "sample_submission.csv", index=False)
    test[["ID", "answer", *answers]].to_csv(out / "solution.csv", index=False)
    return {"train": len(train), "test": len(test), "train_images": train_images, "test_images": test_images}


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder `tmp` to `out`: one rename, or file by file (tables last) into an existing folder."""
    if not out.exists():
        tmp.rename(out)
        return
    files = sorted((p for p in tmp.rglob("*") if p.is_file()), key=lambda p: (p.suffix == ".csv", p))
    for src in files:
        dst = out / src.relative_to(tmp)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def generate(
    out: Path,
    train_images: int = 3000,
    test_images: int = 300,
    q_per_image: int = 4,
    seed: int = 0,
    size: int = 96,
    kind: str = "grid",
) -> dict[str, int]:
    """Write a competition folder of one kind via a hidden sibling folder; returns row counts. `size` is the grid's
    side in px and the other kinds' nominal side, around which their sizes and aspect ratios vary."""
    counts = {"--train-images": train_images, "--test-images": test_images, "--questions-per-image": q_per_image}
    check_args(out, counts, kind)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise ConfigError(f"{out}: cannot write there ({e.strerror})") from None
    try:  # a failure midway leaves `out` as it was
        rows = _write_all(tmp, train_images, test_images, q_per_image, seed, size, kind)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
