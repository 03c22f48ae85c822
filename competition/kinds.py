"""The synthetic competitions beside the demo grid, each with its own difficulty.

    object    one object of any size, place and rotation: what shape, what colour, how big, where
    wide      2-4 items on a 3:1 wide or 1:3 tall canvas: which is at one end, colours, how many, is there a
    exist     4-9 objects: is there a (named object; 25% yes), colour of a shape, shape of a colour, are there any
    count     3-20 small objects: how many of a shape or colour (0-9), are there more, the most common
    glyphs    a printed word and corner letters: what word, its colour, which letter in a corner, is there one
    lighting  2-4 objects under brightness, contrast, tint and a light gradient: colour of a shape, shape of a colour

Each sampler takes (rng, questions per image, nominal size in px) and returns a `Sample`: the picture, its
(question, answer) pairs and the scene drawn, whose fields the answers are read from.
"""

from __future__ import annotations

import math
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = {
    "red": (215, 45, 40), "orange": (240, 135, 25), "yellow": (240, 205, 35), "green": (45, 155, 65),
    "blue": (40, 85, 215), "purple": (135, 60, 185), "brown": (125, 80, 45), "black": (35, 35, 35),
}  # fmt: skip
COLOR_WEIGHTS = {"red": 22, "orange": 8, "yellow": 10, "green": 13, "blue": 18, "purple": 8, "brown": 6, "black": 15}
SHAPE_WEIGHTS = {"circle": 25, "square": 20, "triangle": 17, "star": 14, "cross": 12, "hexagon": 12}
SHAPES = tuple(SHAPE_WEIGHTS)
PLURALS = {s: "crosses" if s == "cross" else f"{s}s" for s in SHAPES}
HUES = ("red", "orange", "yellow", "green", "blue", "purple")  # neighbours on the colour wheel sit side by side
COUNT_SHAPES = ("circle", "square", "triangle", "star")
COUNT_COLORS = ("red", "yellow", "green", "blue", "black")
WORDS = (
    "stop", "open", "exit", "sale", "cafe", "taxi", "bus", "park", "bank", "shop", "food", "hotel", "book", "milk",
    "fish", "star", "rain", "road", "cat", "dog", "sun", "tree", "home", "car",
)  # fmt: skip
CORNERS = ("top left", "top right", "bottom left", "bottom right")
TEXT_COLORS = {"black": 40, "red": 16, "blue": 14, "green": 10, "brown": 8, "purple": 6, "orange": 6}


@dataclass(frozen=True)
class Item:
    """One drawn object: shape, colour name, centre, radius (px) and rotation (degrees)."""

    shape: str
    color: str
    x: float
    y: float
    r: float
    angle: float = 0.0


@dataclass
class Sample:
    """One picture, its (question, answer) pairs, and the scene it was drawn from."""

    image: Image.Image
    qa: list[tuple[str, str]]
    scene: Any
    info: dict = field(default_factory=dict)


def weighted(rng: random.Random, weights: dict[str, float], n: int = 1) -> list[str]:
    """n distinct names drawn by weight."""
    pool, out = dict(weights), []
    for _ in range(min(n, len(pool))):
        name = rng.choices(list(pool), list(pool.values()))[0]
        out.append(name)
        del pool[name]
    return out


def span(rng: random.Random, size: int, lo: float, hi: float) -> int:
    """A side length between lo and hi times the nominal size."""
    return rng.randint(round(size * lo), round(size * hi))


def yes(flag: bool) -> str:
    """'yes' or 'no'."""
    return "yes" if flag else "no"


@cache
def unit_outline(shape: str) -> tuple[tuple[float, float], ...]:
    """The shape's polygon inside the unit circle, unrotated."""
    if shape == "cross":
        t = 0.36
        pts = [(t, 1), (t, t), (1, t), (1, -t), (t, -t), (t, -1), (-t, -1), (-t, -t), (-1, -t), (-1, t), (-t, t)]
        return (*pts, (-t, 1))
    n, start, inner = {"circle": (32, 0, 1), "square": (4, 45, 1), "triangle": (3, -90, 1), "hexagon": (6, 0, 1),
                       "star": (10, -90, 0.45)}[shape]  # fmt: skip
    radii = [1 if i % 2 == 0 else inner for i in range(n)]
    angles = [math.radians(start + 360 * i / n) for i in range(n)]
    return tuple((r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles, strict=True))


def draw_item(d: ImageDraw.ImageDraw, it: Item, fill: tuple[int, int, int] | None = None) -> None:
    """Fill one item's polygon (its palette colour unless `fill`)."""
    c, s = math.cos(math.radians(it.angle)), math.sin(math.radians(it.angle))
    pts = [(it.x + it.r * (u * c - v * s), it.y + it.r * (u * s + v * c)) for u, v in unit_outline(it.shape)]
    d.polygon(pts, fill=fill or PALETTE[it.color])


def background(rng: random.Random, w: int, h: int, textured: float = 0.5) -> Image.Image:
    """A light, slightly tinted canvas; with probability `textured` grain, stripes or a soft gradient on it."""
    base = rng.randint(212, 248)
    arr = np.empty((h, w, 3), np.float32)
    arr[:] = [base + rng.randint(-6, 6) for _ in range(3)]
    if rng.random() < textured:
        style = rng.choice(("grain", "stripes", "gradient"))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, math.pi)
        if style == "grain":
            arr += np.random.default_rng(rng.getrandbits(32)).normal(0, 6, (h, w, 1)).astype(np.float32)
        elif style == "stripes":
            arr += (7 * np.sin(2 * math.pi * (xx * math.cos(a) + yy * math.sin(a)) / rng.randint(5, 14)))[..., None]
        else:
            arr += (24 * ((xx * math.cos(a) + yy * math.sin(a)) / max(w, h) - 0.5))[..., None]
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def place(rng: random.Random, radii: list[float], w: int, h: int, gap: float = 2.0) -> list[tuple[float, float, float]]:
    """(x, y, r) for as many of the radii as fit inside the canvas without touching; a crowded canvas takes fewer."""
    placed: list[tuple[float, float, float]] = []
    for r in radii:
        for _ in range(60):
            x, y = rng.uniform(r + 1, w - r - 1), rng.uniform(r + 1, h - r - 1)
            if all(math.hypot(x - px, y - py) >= r + pr + gap for px, py, pr in placed):
                placed.append((x, y, r))
                break
    return placed


def render(rng: random.Random, items: list[Item], w: int, h: int, textured: float = 0.5) -> Image.Image:
    """The items drawn on a fresh background."""
    img = background(rng, w, h, textured)
    d = ImageDraw.Draw(img)
    for it in items:
        draw_item(d, it)
    return img


def finish(rng: random.Random, qa: list[tuple[str, str]], k: int) -> list[tuple[str, str]]:
    """The first k of the pairs in random order."""
    rng.shuffle(qa)
    return qa[:k]


def is_there(rng: random.Random, items: list[Item], p_yes: float = 0.25) -> tuple[str, str]:
    """'Is there a <colour> <shape>?': yes with probability p_yes; a no names a near miss (a present shape or
    colour in another pairing) three times in four."""
    present = {(it.shape, it.color) for it in items}
    if rng.random() < p_yes:
        s, c = rng.choice(sorted(present))
        return f"Is there a {c} {s}?", "yes"
    absent = [(s, c) for s in SHAPES for c in PALETTE if (s, c) not in present]
    near = [(s, c) for s, c in absent if any(s == ps or c == pc for ps, pc in present)]
    far = [p for p in absent if p not in near]
    s, c = rng.choice(near if near and (not far or rng.random() < 0.75) else far)
    return f"Is there a {c} {s}?", "no"


def unique_by(items: list[Item], key: str) -> list[Item]:
    """The items whose shape (or colour) no other item shares."""
    counts = Counter(getattr(it, key) for it in items)
    return [it for it in items if counts[getattr(it, key)] == 1]


def where(it: Item, w: int, h: int) -> str:
    """Coarse position: center, or the side (left, right, top, bottom) the item leans to most."""
    dx, dy = (it.x - w / 2) / (w / 2), (it.y - h / 2) / (h / 2)
    if max(abs(dx), abs(dy)) < 0.3:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def object_sample(rng: random.Random, k: int, size: int) -> Sample:
    """One object, 10-60% of the short side, anywhere, rotated, on a plain or textured background."""
    w = span(rng, size, 0.7, 1.3)
    h = rng.choice((w, w, round(w * 0.75)))
    frac = rng.uniform(0.1, 0.6)
    r = frac * min(w, h) / 2
    it = Item(weighted(rng, SHAPE_WEIGHTS)[0], weighted(rng, COLOR_WEIGHTS)[0],
              rng.uniform(r, w - r), rng.uniform(r, h - r), r, rng.uniform(0, 360))  # fmt: skip
    img = render(rng, [it], w, h)
    big = rng.random() < 0.5
    named = it.shape if rng.random() < 0.25 else rng.choice([s for s in SHAPES if s != it.shape])
    qa = [
        ("What shape is in the picture?", it.shape),
        ("What color is the object?", it.color),
        (f"Is the object {'large' if big else 'small'}?", yes(frac >= 0.4 if big else frac <= 0.2)),
        ("Where is the object?", where(it, w, h)),
        (f"Is there a {named} in the picture?", yes(named == it.shape)),
    ]
    return Sample(img, finish(rng, qa, k), [it], {"frac": frac})


def wide_sample(rng: random.Random, k: int, size: int) -> Sample:
    """2-4 items in a row on a wide (3:1) or tall (1:3) canvas."""
    tall = rng.random() < 0.4
    long = span(rng, size, 1.3, 1.7)
    short = round(long / rng.choice((3.0, 3.0, 2.5)))
    w, h = (short, long) if tall else (long, short)
    n = rng.choice((2, 3, 3, 4))
    r = min(short * rng.uniform(0.2, 0.3), (long - 2 - 3 * (n - 1)) / (2 * n))
    free = long - 2 * (r + 1) - (n - 1) * (2 * r + 3)  # the slack left once the items stand side by side
    along = [r + 1 + u + i * (2 * r + 3) for i, u in enumerate(sorted(rng.uniform(0, free) for _ in range(n)))]
    colors = weighted(rng, COLOR_WEIGHTS, len(along))
    items = []
    for a, c in zip(along, colors, strict=True):
        across = short / 2 + rng.uniform(-0.4, 0.4) * (short / 2 - r)
        x, y = (across, a) if tall else (a, across)
        items.append(Item(weighted(rng, SHAPE_WEIGHTS)[0], c, x, y, r, rng.uniform(0, 360)))
    img = render(rng, items, w, h)
    first = rng.random() < 0.5
    end = items[0] if first else items[-1]
    ends = ("at the very top", "at the very bottom") if tall else ("furthest to the left", "furthest to the right")
    side = ends[0] if first else ends[1]
    uniq = unique_by(items, "shape")
    color_q = (f"What color is the {uniq[0].shape}?", uniq[0].color) if uniq and rng.random() < 0.6 else (
        f"What color is the object {side}?", end.color)  # fmt: skip
    qa = [(f"Which shape is {side}?", end.shape), color_q, ("How many objects are there?", str(len(items))),
          is_there(rng, items)]  # fmt: skip
    return Sample(img, finish(rng, qa, k), items, {"tall": tall})


def exist_sample(rng: random.Random, k: int, size: int) -> Sample:
    """4-9 objects, every shape-colour pairing once at most; questions about named objects and their absence."""
    w, h = span(rng, size, 0.9, 1.3), span(rng, size, 0.75, 1.1)
    n, pairs = rng.randint(4, 9), []
    while len(pairs) < n:
        p = (weighted(rng, SHAPE_WEIGHTS)[0], weighted(rng, COLOR_WEIGHTS)[0])
        if p not in pairs:
            pairs.append(p)
    spots = place(rng, [min(w, h) * rng.uniform(0.07, 0.11) for _ in pairs], w, h)
    items = [Item(s, c, x, y, r, rng.uniform(0, 360)) for (s, c), (x, y, r) in zip(pairs, spots, strict=False)]
    img = render(rng, items, w, h)
    shapes = {it.shape for it in items}
    asked = rng.choice(sorted(shapes) if rng.random() < 0.4 or shapes == set(SHAPES) else sorted(set(SHAPES) - shapes))
    qa = [is_there(rng, items), (f"Are there any {PLURALS[asked]}?", yes(asked in shapes))]
    if one := unique_by(items, "shape"):
        it = rng.choice(one)
        qa.append((f"What color is the {it.shape}?", it.color))
    if one := unique_by(items, "color"):
        it = rng.choice(one)
        qa.append((f"What shape is the {it.color} object?", it.shape))
    return Sample(img, finish(rng, qa, k), items)


def most_common(counts: Counter) -> str | None:
    """The name with the highest count when no other ties it."""
    top = counts.most_common(2)
    return top[0][0] if len(top) == 1 or top[0][1] > top[1][1] else None


def count_sample(rng: random.Random, k: int, size: int) -> Sample:
    """3-20 small objects of 4 shapes and 5 colours, at most 9 of any shape or colour."""
    w = span(rng, size, 1.0, 1.5)
    h = rng.choice((w, round(w * 0.8)))
    attrs: list[tuple[str, str]] = []
    for _ in range(rng.randint(3, 20)):
        s, c = rng.choice(COUNT_SHAPES), rng.choice(COUNT_COLORS)
        if sum(a == s for a, _ in attrs) < 9 and sum(b == c for _, b in attrs) < 9:
            attrs.append((s, c))
    spots = place(rng, [min(w, h) * rng.uniform(0.03, 0.045) for _ in attrs], w, h, gap=3)
    items = [Item(s, c, x, y, r, rng.uniform(0, 360)) for (s, c), (x, y, r) in zip(attrs, spots, strict=False)]
    img = render(rng, items, w, h, textured=0.3)
    shapes, colors = Counter(it.shape for it in items), Counter(it.color for it in items)
    s, c = rng.choice(COUNT_SHAPES), rng.choice(COUNT_COLORS)
    a, b = rng.sample(COUNT_SHAPES, 2)
    qa = [
        (f"How many {PLURALS[s]} are there?", str(shapes[s])),
        (f"How many {c} objects are there?", str(colors[c])),
        (f"Are there more {PLURALS[a]} than {PLURALS[b]}?", yes(shapes[a] > shapes[b])),
    ]
    by_shape = rng.random() < 0.5
    if top := most_common(shapes if by_shape else colors):
        qa.append((f"What is the most common {'shape' if by_shape else 'color'}?", top))
    return Sample(img, finish(rng, qa, k), items)


@lru_cache(maxsize=64)
def font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's built-in font at `px` pixels."""
    return ImageFont.load_default(size=px)


def glyphs_sample(rng: random.Random, k: int, size: int) -> Sample:
    """A word in colour across the middle and capital letters in some corners."""
    w, h = span(rng, size, 1.0, 1.4), span(rng, size, 0.7, 1.0)
    img = background(rng, w, h, 0.4)
    d = ImageDraw.Draw(img)
    px, inset = rng.randint(10, 13), rng.randint(2, 5)
    letters = {c: rng.choice(string.ascii_uppercase) for c in CORNERS if rng.random() < 0.35}
    ink = (rng.randint(20, 80),) * 3
    for corner, letter in letters.items():
        x0, y0, x1, y1 = d.textbbox((0, 0), letter, font=font(px))
        x = inset - x0 if "left" in corner else w - inset - x1
        y = inset - y0 if "top" in corner else h - inset - y1
        d.text((x, y), letter, fill=ink, font=font(px))
    word = rng.choices(WORDS, [1 / (i + 1) ** 0.7 for i in range(len(WORDS))])[0]
    text = rng.choice((word, word.upper(), word.title()))
    color = weighted(rng, TEXT_COLORS)[0]
    band = px + inset + 2
    wpx = rng.randint(13, 24)
    while wpx > 8 and (d.textlength(text, font=font(wpx)) > w - 2 * inset or wpx > h - 2 * band):
        wpx -= 1
    x0, y0, x1, y1 = d.textbbox((0, 0), text, font=font(wpx))
    x = rng.uniform(inset, max(inset, w - inset - (x1 - x0))) - x0
    y = rng.uniform(band, max(band, h - band - (y1 - y0))) - y0
    d.text((x, y), text, fill=PALETTE[color], font=font(wpx))
    corner = rng.choice(CORNERS)
    qa = [("What is the word written in the picture?", word), ("What color is the word?", color),
          (f"Is there a letter in the {corner} corner?", yes(corner in letters))]  # fmt: skip
    if letters:
        corner = rng.choice(sorted(letters))
        qa.append((f"Which letter is in the {corner} corner?", letters[corner].lower()))
    scene = {"word": word, "text": text, "color": color, "letters": letters}
    return Sample(img, finish(rng, qa, k), scene)


def relight(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict]:
    """The whole picture under other light: contrast, brightness, a colour tint and a linear light gradient."""
    a = np.asarray(img, np.float32)
    h, w = a.shape[:2]
    p = {"contrast": rng.uniform(0.65, 1.25), "brightness": rng.uniform(0.6, 1.3),
         "tint": [rng.uniform(0.85, 1.15) for _ in range(3)], "gradient": rng.uniform(0, 0.35),
         "direction": rng.uniform(0, 2 * math.pi)}  # fmt: skip
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j].astype(np.float32)
    ramp = 1 + p["gradient"] * (xx * math.cos(p["direction"]) + yy * math.sin(p["direction"])) / math.sqrt(2)
    a = ((a - 128) * p["contrast"] + 128) * p["brightness"] * np.array(p["tint"], np.float32) * ramp[..., None]
    return Image.fromarray(a.clip(0, 255).astype(np.uint8)), p


def absent_hue(rng: random.Random, present: set[str]) -> str:
    """A colour not in the picture, next on the colour wheel to one that is, when there is such a colour."""
    near = {HUES[(HUES.index(c) + step) % len(HUES)] for c in present for step in (-1, 1)} - present
    return rng.choice(sorted(near or set(HUES) - present))


def lighting_sample(rng: random.Random, k: int, size: int) -> Sample:
    """2-4 objects of distinct shapes and hues, then the light changes over the whole picture."""
    w = span(rng, size, 0.8, 1.3)
    h = rng.choice((w, round(w * rng.uniform(0.7, 0.95))))
    n = rng.randint(2, 4)
    spots = place(rng, [min(w, h) * rng.uniform(0.1, 0.16) for _ in range(n)], w, h, gap=4)
    shapes, colors = rng.sample(SHAPES, len(spots)), rng.sample(HUES, len(spots))
    items = [Item(s, c, x, y, r, rng.uniform(0, 360)) for s, c, (x, y, r) in zip(shapes, colors, spots, strict=True)]
    img, light = relight(render(rng, items, w, h, 0.3), rng)
    asked = rng.sample(items, min(2, len(items)))
    qa = [(f"What color is the {it.shape}?", it.color) for it in asked]
    it = rng.choice(items)
    qa.append((f"What shape is the {it.color} object?", it.shape))
    c = rng.choice(colors) if rng.random() < 0.35 else absent_hue(rng, set(colors))
    qa.append((f"Is there a {c} object?", yes(c in colors)))
    return Sample(img, finish(rng, qa, k), items, light)


SAMPLERS = {
    "object": object_sample,
    "wide": wide_sample,
    "exist": exist_sample,
    "count": count_sample,
    "glyphs": glyphs_sample,
    "lighting": lighting_sample,
}
