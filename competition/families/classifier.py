"""model.family=classifier: an answer-vocabulary classifier (competition/classifier.py: a vision backbone, a question
encoder, a fusion transformer and a head over the fold's most common training answers).

    python -m competition train -c configs/demo_classifier.yaml --fold 0
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import AutoConfig, AutoImageProcessor

from competition.classifier import (
    AnswerClassifier,
    ClassifierCollator,
    ClassifierEngine,
    ClassifierSet,
    backbone_config,
    balanced_weights,
    build_backbone,
    build_classifier,
    check_backbones,
    load_classifier,
    refuse_lora,
    save_classifier,
)
from competition.config import Config
from competition.data import ANSWER, Competition
from competition.errors import ConfigError
from competition.families.base import Blueprint, register, tokenizer_texts
from competition.families.hub import local_config
from competition.images import DATA_SIDE_CAP, Images, ImageTransform, data_side, output_size
from competition.model_config import ClassifierConfig
from competition.modeling import local_device


class NotOnDisk(ConfigError):
    """A named checkpoint whose config is neither on disk nor known: the plan needs it, a run downloads it."""


KNOWN_BACKBONES: dict[str, dict[str, Any]] = {
    "google/siglip-so400m-patch14-384": dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                                             num_hidden_layers=27, num_attention_heads=16, image_size=384, patch_size=14),
    "google-bert/bert-base-uncased": dict(model_type="bert"),  # BertConfig's defaults are bert-base's
}  # fmt: skip


def classifier_part(part: str, name: str | None, fields: dict[str, Any]) -> tuple[Any, str, bool]:
    """A classifier backbone's (part: vision or text) config for planning: a named one's from disk (never
    downloaded) or its published shape, else the random-init fields; its config key; whether the named weights
    are missing from disk."""
    key = f"model.classifier.{part}"
    if not name:
        return backbone_config(f"{key}_config", fields), f"{key}_config", False
    config = local_config(name)
    if config is not None:
        return getattr(config, "vision_config", config) if part == "vision" else config, key, False
    if name in KNOWN_BACKBONES:
        return AutoConfig.for_model(**KNOWN_BACKBONES[name]), key, True
    where = "a folder without config.json" if Path(name).is_dir() else "no such folder, nor in the Hugging Face cache"
    raise NotOnDisk(f"{key}={name}: not on disk ({where}) and of no known shape, so it cannot be planned offline "
                    "(`train` downloads a hub id)")  # fmt: skip


def classifier_image_size(c: ClassifierConfig, vision_config: Any) -> tuple[int, int]:
    """(width, height) the classifier's images reach the vision tower at: its image processor's output (a named
    backbone's, when on disk), else the tower's image_size, else model.classifier.image_size."""
    if not c.vision:
        side = DATA_SIDE_CAP if c.image_size == "data" else c.image_size  # data: planned at its largest
        return side, side
    try:
        return output_size(AutoImageProcessor.from_pretrained(c.vision, local_files_only=True))
    except (OSError, ValueError):
        side = getattr(vision_config, "image_size", c.image_size)
        return side, side


def plan_classifier(c: ClassifierConfig) -> tuple[Any, list[str]]:
    """The classifier on the meta device from its backbone configs (a named backbone's read from disk or known),
    with max_answers answers, checked (classifier.check_backbones); and the named backbones not on disk."""
    vc, vkey, v_absent = classifier_part("vision", c.vision, c.vision_config)
    tc, tkey, t_absent = classifier_part("text", c.text, c.text_config)
    with torch.device("meta"):
        vision, text = build_backbone(vkey, vc), build_backbone(tkey, tc)
        model = AnswerClassifier(getattr(vision, "vision_model", vision), text, ["?"] * c.max_answers, c)
    check_backbones(model, (vkey, tkey), classifier_image_size(c, vc))
    return model, [name for name, absent in ((c.vision, v_absent), (c.text, t_absent)) if absent]


def sized_to_data(c: ClassifierConfig, comp: Competition) -> ClassifierConfig:
    """The settings with image_size: data replaced by the training pictures' side (images.data_side), a multiple of
    what one cell of the random-init tower spans."""
    if c.image_size != "data" or c.vision:
        return c
    vision = backbone_config("model.classifier.vision_config", c.vision_config)
    reduction = getattr(vision, "reduction", None) or getattr(vision, "patch_size", 1)
    return c.model_copy(update={"image_size": data_side(comp, reduction)})


@register("classifier")
class Classifier:
    """AnswerClassifier: a vision backbone + a question encoder + a head over the fold's top training answers."""

    uses_trainer = True
    soft_answers = True
    questions_per_example = 1  # the plan counts questions (a pack shares its image, not its loss)

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def check(self) -> None:
        """Backbones that cannot work and LoRA, refused by building on the meta device (weights not on disk: later)."""
        refuse_lora(self.cfg.train.mode)
        with contextlib.suppress(NotOnDisk):
            plan_classifier(self.cfg.model.classifier)

    def describe(self) -> tuple[str, str]:
        c = self.cfg.model.classifier
        side = "the training pictures' side (image_size: data)" if c.image_size == "data" else f"{c.image_size}px"
        vision = c.vision or f"random-init {c.vision_config.get('model_type')} @ {side}"
        text = c.text or f"random-init {c.text_config.get('model_type')}"
        return "classifier", f"{vision} + {text} -> {c.max_answers:,} answers at most"

    def blueprint(self) -> Blueprint:
        refuse_lora(self.cfg.train.mode)
        c = self.cfg.model.classifier
        model, absent = plan_classifier(c)
        tokenizer = f"tokenizer: {c.text}'s" if c.text else "tokenizer: word-level, trained on the data's text"
        notes = [f"weights: {' and '.join(absent)} not on disk: planned from the published shapes; "
                 "`train` downloads them"] if absent else []  # fmt: skip
        return Blueprint(model, *self.describe(), tokenizer, notes)

    def build(self, comp: Competition, rows: pd.DataFrame) -> tuple[Any, Any]:
        settings = sized_to_data(self.cfg.model.classifier, comp)
        self.cfg = cfg = self.cfg.model_copy(update={"model": self.cfg.model.model_copy(update={"classifier": settings})})
        self.check()
        answers = rows[ANSWER].value_counts().index.tolist()
        model, processor = build_classifier(cfg.model.classifier, tokenizer_texts(comp), answers, cfg.seed)
        if cfg.train.mode == "projector":  # the backbones stay as they are; fusion and head train
            for part in (model.vision_tower, model.text_encoder):
                part.requires_grad_(False)
        return model, processor

    def train_set(self, model: Any, processor: Any, rows: pd.DataFrame) -> ClassifierSet:
        t, balanced = self.cfg.train, self.cfg.model.classifier.answer_weights == "balanced"
        weights = balanced_weights(rows) if balanced else None
        return ClassifierSet(processor, rows, model.answers, t.max_length, t.pack_questions, weights)

    def images(self, comp: Competition, split: str, processor: Any, cache: bool) -> Images:
        """The split's images as the backbone reads them."""
        return Images(comp, split, ImageTransform(processor, self.cfg.model.image_aspect_ratio), cache)

    def collator(self, images: Images, model: Any, processor: Any) -> ClassifierCollator:
        return ClassifierCollator(images, processor.tokenizer, len(model.answers))

    def fit(self, model: Any, processor: Any, rows: pd.DataFrame) -> Any:
        raise NotImplementedError("the classifier family trains with HF Trainer")

    def save(self, model: Any, processor: Any, out: Path) -> None:
        save_classifier(model, processor, out)

    def load(self, folder: Path) -> tuple[Any, Any]:
        model, processor = load_classifier(folder)
        return model.to(local_device()), processor

    def engine(self, model: Any, processor: Any, images: Images, vocabulary: list[str]) -> ClassifierEngine:
        p = self.cfg.predict
        return ClassifierEngine(model, processor, images, batch_size=p.batch_size, max_length=p.max_length,
                                alternatives=p.alternatives)  # fmt: skip
