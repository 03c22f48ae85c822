"""Pictures as model inputs: the same resize / pad / crop in training and inference, decoded lazily.

    python -c "from competition.images import expand_to_square; from PIL import Image; print(expand_to_square(Image.new('RGB', (4, 2)), (0, 0, 0)).size)"
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from competition.augment import as_marked, split_mark
from competition.data import Competition
from competition.errors import ConfigError, DataError

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]  # OpenAI CLIP's normalisation, also the random-init towers'
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
DATA_SIDE_CAP = 128  # image_size: data goes no higher: a from-scratch stem's step grows with the side's square
DATA_SIDE_SAMPLE = 256  # pictures whose sizes decide image_size: data (headers only, evenly spread over the ids)


def data_side(comp: Competition, reduction: int) -> int:
    """The training pictures' median longer side (a sample of their headers), rounded up to a multiple of
    `reduction`, at most DATA_SIDE_CAP (rounded down to that multiple)."""
    paths = [comp.train_image_paths[i] for i in sorted(comp.train_image_paths)]
    sample = paths[:: max(1, len(paths) // DATA_SIDE_SAMPLE)]
    sides = sorted(max(picture_size(path)) for path in sample)
    side = -(-sides[len(sides) // 2] // reduction) * reduction
    return max(reduction, min(side, DATA_SIDE_CAP // reduction * reduction))


def picture_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding; an unreadable file is a DataError naming it."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({e})") from None


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad an image to a square canvas of colour `fill`, centred (LLaVA-1.5's 'pad')."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def _field(size: Any, key: str) -> int | None:
    """One entry of an image processor's size: a dict, transformers' SizeDict, or None."""
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def output_size(image_processor: Any) -> tuple[int, int]:
    """(width, height) of the pixels an image processor yields: its crop when it crops (CLIP), else its size's
    height and width (SigLIP, ViT, BEiT), else a square of its shortest edge (ConvNeXt)."""
    crop = getattr(image_processor, "crop_size", None)
    if crop is not None and getattr(image_processor, "do_center_crop", False) and _field(crop, "height"):
        return _field(crop, "width") or _field(crop, "height"), _field(crop, "height")
    size = getattr(image_processor, "size", None)
    if _field(size, "height") and _field(size, "width"):
        return _field(size, "width"), _field(size, "height")
    if edge := _field(size, "shortest_edge"):
        return edge, edge
    raise ConfigError(f"{type(image_processor).__name__}: no output size in crop_size {crop} or size {size}; "
                      "expected height/width or shortest_edge")  # fmt: skip


def centre_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize keeping the aspect ratio until the image covers `size`, then cut out its centre."""
    w, h = image.size
    scale = max(size[0] / w, size[1] / h)
    image = image.resize((max(size[0], round(w * scale)), max(size[1], round(h * scale))), Image.BICUBIC)
    left, top = (image.width - size[0]) // 2, (image.height - size[1]) // 2
    return image.crop((left, top, left + size[0], top + size[1]))


class ImageTransform:
    """PIL image -> pixel tensor, the same way in training and inference (model.image_aspect_ratio)."""

    def __init__(self, processor: Any, aspect: str) -> None:
        self.image_processor = processor.image_processor
        self.size = output_size(self.image_processor)
        self.aspect = aspect
        self.fill = tuple(int(m * 255) for m in getattr(self.image_processor, "image_mean", None) or (0.5, 0.5, 0.5))
        crops = getattr(self.image_processor, "do_center_crop", False) and getattr(self.image_processor, "crop_size", None)
        self.own_crop = aspect == "crop" and not crops  # a processor that only resizes would stretch

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """A (N, 3, H, W) float tensor."""
        if self.aspect == "pad":
            images = [expand_to_square(im, self.fill) for im in images]
        if self.own_crop:
            images = [centre_crop(im, self.size) for im in images]
        elif self.aspect != "crop":
            images = [im.resize(self.size, Image.BICUBIC) for im in images]
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


def load_marked(comp: Competition, split: str, image_id: str) -> Image.Image:
    """The RGB picture of an image id, flipped when the id carries augment's view mark."""
    base, view = split_mark(image_id)
    return as_marked(comp.load_image(split, base), view)


class Images:
    """Preprocessed pixel tensors by image id, decoded lazily, optionally kept in memory."""

    def __init__(self, comp: Competition, split: str, transform: ImageTransform, cache: bool) -> None:
        self.comp, self.split, self.transform = comp, split, transform
        self.cache: dict[str, torch.Tensor] | None = {} if cache else None

    def __call__(self, image_ids: Sequence[str]) -> torch.Tensor:
        """(N, 3, H, W) pixels for the ids, in order."""
        if self.cache is None:
            return self.transform([load_marked(self.comp, self.split, i) for i in image_ids])
        todo = sorted({i for i in image_ids if i not in self.cache})
        if todo:
            for i, px in zip(todo, self.transform([load_marked(self.comp, self.split, i) for i in todo]), strict=True):
                self.cache[i] = px
        return torch.stack([self.cache[i] for i in image_ids])


class RawImages:
    """PIL images by id, for processors that shape images themselves (the vlm family); optionally kept in memory."""

    def __init__(self, comp: Competition, split: str, cache: bool) -> None:
        self.comp, self.split = comp, split
        self.cache: dict[str, Image.Image] | None = {} if cache else None

    def __call__(self, image_ids: Sequence[str]) -> list[Image.Image]:
        """The RGB images of the ids, in order."""
        if self.cache is None:
            return [load_marked(self.comp, self.split, i) for i in image_ids]
        for i in image_ids:
            if i not in self.cache:
                self.cache[i] = load_marked(self.comp, self.split, i)
        return [self.cache[i] for i in image_ids]
