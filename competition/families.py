"""The model families behind the one fold / predict / tune flow (model.family): how each builds its model, makes
its training examples and batches, saves, loads, and answers questions with the engine's surface.

    python -m competition train -c configs/demo_classifier.yaml --fold 0     # model.family: classifier
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd

from competition.classifier import (
    ClassifierCollator,
    ClassifierEngine,
    ClassifierSet,
    build_classifier,
    load_classifier,
    save_classifier,
)
from competition.config import Config
from competition.data import ANSWER, QUESTION, Competition
from competition.dataset import TrainCollator, TrainSet
from competition.engine import Engine
from competition.folds import fold_rows
from competition.images import Images, ImageTransform, RawImages
from competition.modeling import apply_mode, build_base, image_token_count, load_trained, local_device, save_trained
from competition.plan import check_model
from competition.vlm import VlmCollator, VlmEngine, VlmSet, apply_vlm_mode, load_vlm, load_vlm_trained, save_vlm


def tokenizer_texts(comp: Competition) -> list[str]:
    """Text a random-init model's tokenizer is trained on: questions of both splits and training answers."""
    return [*comp.train[QUESTION], *comp.train[ANSWER], *comp.test[QUESTION]]


class Llava:
    """LlavaForConditionalGeneration: tiny, pretrained or from parts; projector / LoRA / full; generated answers."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.base_name: str | None = None
        self.pristine: Any = None

    def build(self, comp: Competition, rows: pd.DataFrame) -> tuple[Any, Any]:
        """The model ready to train (train.mode applied) and its processor."""
        cfg = self.cfg
        model, processor = build_base(cfg.model, tokenizer_texts(comp), cfg.seed)
        self.base_name = None if cfg.model.source == "tiny" else (cfg.model.name_or_path or "from_parts")
        self.pristine = copy.deepcopy(model) if self.base_name is None and cfg.train.mode != "full" else None
        model = apply_mode(model, cfg.train)
        if cfg.train.gradient_checkpointing:
            model.enable_input_require_grads()
        return model, processor

    def train_set(self, model: Any, processor: Any, rows: pd.DataFrame) -> TrainSet:
        t = self.cfg.train
        return TrainSet(processor, t.prompt, rows, t.max_length, t.pack_questions)

    def images(self, comp: Competition, split: str, processor: Any, cache: bool) -> Images:
        """The split's images as the model reads them."""
        return Images(comp, split, ImageTransform(processor, self.cfg.model.image_aspect_ratio), cache)

    def collator(self, images: Images, model: Any, processor: Any) -> TrainCollator:
        return TrainCollator(images, model.config.image_token_id, image_token_count(model.config),
                             processor.tokenizer.pad_token_id)  # fmt: skip

    def save(self, model: Any, processor: Any, out: Path) -> None:
        save_trained(model, processor, out, self.cfg.train.mode, self.base_name, self.pristine)

    def load(self, folder: Path) -> tuple[Any, Any]:
        return load_trained(folder, self.cfg.model)

    def engine(self, model: Any, processor: Any, images: Images, vocabulary: list[str]) -> Engine:
        p = self.cfg.predict
        return Engine(model, processor, images, batch_size=p.batch_size, prefix_cache=p.prefix_cache,
                      max_length=p.max_length, vocabulary=vocabulary, alternatives=p.alternatives)  # fmt: skip


class Classifier(Llava):
    """AnswerClassifier: a vision backbone + a question encoder + a head over the fold's top training answers."""

    def build(self, comp: Competition, rows: pd.DataFrame) -> tuple[Any, Any]:
        cfg = self.cfg
        check_model(cfg)  # one line naming the key for backbones that cannot work, or LoRA, before any weights
        answers = rows[ANSWER].value_counts().index.tolist()
        model, processor = build_classifier(cfg.model.classifier, tokenizer_texts(comp), answers, cfg.seed)
        if cfg.train.mode == "projector":  # the backbones stay as they are; fusion and head train
            for part in (model.vision_tower, model.text_encoder):
                part.requires_grad_(False)
        return model, processor

    def train_set(self, model: Any, processor: Any, rows: pd.DataFrame) -> ClassifierSet:
        t = self.cfg.train
        return ClassifierSet(processor, rows, model.answers, t.max_length, t.pack_questions)

    def collator(self, images: Images, model: Any, processor: Any) -> ClassifierCollator:
        return ClassifierCollator(images, processor.tokenizer)

    def save(self, model: Any, processor: Any, out: Path) -> None:
        save_classifier(model, processor, out)

    def load(self, folder: Path) -> tuple[Any, Any]:
        model, processor = load_classifier(folder)
        return model.to(local_device()), processor

    def engine(self, model: Any, processor: Any, images: Images, vocabulary: list[str]) -> ClassifierEngine:
        p = self.cfg.predict
        return ClassifierEngine(model, processor, images, batch_size=p.batch_size, max_length=p.max_length,
                                alternatives=p.alternatives)  # fmt: skip


class Vlm(Llava):
    """Any AutoModelForImageTextToText checkpoint with its processor's chat template; generated answers."""

    def build(self, comp: Competition, rows: pd.DataFrame) -> tuple[Any, Any]:
        model, processor = load_vlm(self.cfg.model)
        model = apply_vlm_mode(model, self.cfg.train)
        if self.cfg.train.gradient_checkpointing:
            model.enable_input_require_grads()
        return model, processor

    def images(self, comp: Competition, split: str, processor: Any, cache: bool) -> RawImages:
        return RawImages(comp, split, cache)

    def train_set(self, model: Any, processor: Any, rows: pd.DataFrame) -> VlmSet:
        return VlmSet(processor, self.cfg.train.prompt, rows)

    def collator(self, images: RawImages, model: Any, processor: Any) -> VlmCollator:
        return VlmCollator(images, processor)

    def save(self, model: Any, processor: Any, out: Path) -> None:
        save_vlm(model, processor, out, self.cfg.train.mode, str(self.cfg.model.name_or_path))

    def load(self, folder: Path) -> tuple[Any, Any]:
        return load_vlm_trained(folder, self.cfg.model)

    def engine(self, model: Any, processor: Any, images: RawImages, vocabulary: list[str]) -> VlmEngine:
        p = self.cfg.predict
        return VlmEngine(model, processor, images, batch_size=p.batch_size, prefix_cache=False,
                         max_length=p.max_length, vocabulary=vocabulary)  # fmt: skip


FAMILIES = {"llava": Llava, "classifier": Classifier, "vlm": Vlm}


def family_for(cfg: Config) -> Llava:
    """The model family of the config (model.family)."""
    return FAMILIES[cfg.model.family](cfg)


def fold_engine(cfg: Config, comp: Competition, folds: pd.DataFrame, fold: int, image_split: str,
                cache: bool = False, loaded: tuple[Any, Any] | None = None) -> Any:  # fmt: skip
    """The engine of a fold's trained model (`loaded`: its (model, processor) when already in memory):
    the fold's training answers as vocabulary, images of `image_split`, the config's batching."""
    family = family_for(cfg)
    model, processor = loaded or family.load(cfg.fold_dir(fold) / "model")
    vocabulary = fold_rows(comp, folds, fold, "train")[ANSWER].value_counts().index.tolist()
    return family.engine(model, processor, family.images(comp, image_split, processor, cache), vocabulary)
