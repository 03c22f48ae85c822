"""What a model family is (the `Family` and `AnswerEngine` protocols) and the registry by name that `model.family`
selects from; a new family is one module that registers itself.

    python -c "from competition.families import FAMILIES; print(sorted(FAMILIES))"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from competition.config import Config, DecodingConfig
from competition.data import ANSWER, CHOICES, QUESTION, Competition
from competition.engine import Answer
from competition.errors import ConfigError
from competition.folds import fold_rows
from competition.model_config import FAMILY_NAMES


class AnswerEngine(Protocol):
    """Answers questions about images in batches grouped by image: an `Answer` for each row."""

    cut_answers: int  # answers cut short by the token budget so far (0 for engines that never cut)

    def max_new_tokens(self, decoding: DecodingConfig) -> int: ...

    def answer(self, prompt: str, decoding: DecodingConfig, questions: list[str], image_ids: list[str],
               rows: list[int] | None = None, progress: Callable[[int], None] | None = None
               ) -> Iterator[list[Answer]]: ...  # fmt: skip


@dataclass
class Blueprint:
    """A family's model as planned without weights or downloads: the model on the meta device (train.mode applied),
    the plan's model line, its tokenizer line and notes."""

    model: Any
    source: str
    parts: str
    tokenizer: str
    notes: list[str] = field(default_factory=list)


class Family(Protocol):
    """One way of answering: how a fold's model is built, trained (by HF Trainer, or by `fit`), saved, loaded,
    planned and asked."""

    uses_trainer: bool  # False: `fit` trains the model, no Trainer, no checkpoints
    questions_per_example: int  # about how many questions one training example holds (the plan's example count)
    soft_answers: bool  # learns from every annotator's answer at once (data.answers_col); else from one answer a row

    def __init__(self, cfg: Config) -> None: ...

    def check(self) -> None:
        """Refuse in one line, before anything is written, what cannot be built or run here."""

    def describe(self) -> tuple[str, str]:
        """(source, parts) for the plan's model line."""

    def blueprint(self) -> Blueprint: ...

    def build(self, comp: Competition, rows: pd.DataFrame) -> tuple[Any, Any]:
        """The model ready to train and its processor."""

    def train_set(self, model: Any, processor: Any, rows: pd.DataFrame) -> Any: ...

    def images(self, comp: Competition, split: str, processor: Any, cache: bool) -> Any: ...

    def collator(self, images: Any, model: Any, processor: Any) -> Any: ...

    def fit(self, model: Any, processor: Any, rows: pd.DataFrame) -> Any:
        """Train without a Trainer (families whose uses_trainer is False)."""

    def save(self, model: Any, processor: Any, out: Path) -> None: ...

    def load(self, folder: Path) -> tuple[Any, Any]: ...

    def engine(self, model: Any, processor: Any, images: Any, vocabulary: list[str]) -> AnswerEngine: ...


FAMILIES: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: the family answers to `model.family: <name>`."""

    def add(cls: type) -> type:
        FAMILIES[name] = cls
        FAMILY_NAMES.add(name)  # model.family accepts it from now on
        return cls

    return add


def family_for(cfg: Config) -> Family:
    """The model family of the config (model.family)."""
    if cfg.model.family not in FAMILIES:
        raise ConfigError(f"model.family={cfg.model.family!r}: not a registered family ({', '.join(sorted(FAMILIES))})")
    return FAMILIES[cfg.model.family](cfg)


def tokenizer_texts(comp: Competition) -> list[str]:
    """Text a random-init model's tokenizer is trained on: questions of both splits and training answers."""
    return [*comp.train[QUESTION], *comp.train[ANSWER], *comp.test[QUESTION]]


def fold_engine(cfg: Config, comp: Competition, folds: pd.DataFrame, fold: int, image_split: str,
                cache: bool = False, loaded: tuple[Any, Any] | None = None) -> AnswerEngine:  # fmt: skip
    """The engine of a fold's trained model (`loaded`: its (model, processor) when already in memory):
    the fold's training answers as vocabulary, images of `image_split`, the config's batching."""
    family = family_for(cfg)
    model, processor = loaded or family.load(cfg.fold_dir(fold) / "model")
    vocabulary = fold_rows(comp, folds, fold, "train")[ANSWER].value_counts().index.tolist()
    engine = family.engine(model, processor, family.images(comp, image_split, processor, cache), vocabulary)
    if CHOICES in comp.test and hasattr(engine, "alternatives"):
        engine.alternatives = len(vocabulary)  # every scored answer ranked: predict keeps the row's best choice
    return engine
