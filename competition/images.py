"""Pictures as model inputs: the same resize / pad / crop in training and inference, decoded lazily.

    python -c "from competition.images import expand_to_square; from PIL import Image; print(expand_to_square(Image.new('RGB', (4, 2)), (0, 0, 0)).size)"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from competition.data import Competition


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad an image to a square canvas of colour `fill`, centred (LLaVA-1.5's 'pad')."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


class ImageTransform:
    """PIL image -> pixel tensor, the same way in training and inference (model.image_aspect_ratio)."""

    def __init__(self, processor: Any, aspect: str) -> None:
        self.image_processor = processor.image_processor
        crop = self.image_processor.crop_size
        self.size = (crop["width"], crop["height"])
        self.aspect = aspect
        self.fill = tuple(int(m * 255) for m in self.image_processor.image_mean)

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """A (N, 3, H, W) float tensor."""
        if self.aspect == "pad":
            images = [expand_to_square(im, self.fill) for im in images]
        if self.aspect != "crop":
            images = [im.resize(self.size, Image.BICUBIC) for im in images]
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]


class Images:
    """Preprocessed pixel tensors by image id, decoded lazily, optionally kept in memory."""

    def __init__(self, comp: Competition, split: str, transform: ImageTransform, cache: bool) -> None:
        self.comp, self.split, self.transform = comp, split, transform
        self.cache: dict[str, torch.Tensor] | None = {} if cache else None

    def __call__(self, image_ids: Sequence[str]) -> torch.Tensor:
        """(N, 3, H, W) pixels for the ids, in order."""
        if self.cache is None:
            return self.transform([self.comp.load_image(self.split, i) for i in image_ids])
        todo = sorted({i for i in image_ids if i not in self.cache})
        if todo:
            for i, px in zip(todo, self.transform([self.comp.load_image(self.split, i) for i in todo]), strict=True):
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
            return [self.comp.load_image(self.split, i) for i in image_ids]
        for i in image_ids:
            if i not in self.cache:
                self.cache[i] = self.comp.load_image(self.split, i)
        return [self.cache[i] for i in image_ids]
