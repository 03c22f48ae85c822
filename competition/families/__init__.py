"""The model families behind the one fold / predict / tune flow (model.family): each declares how it builds, trains,
saves, loads, plans and answers (`base.Family`), and registers itself by name.

    python -m competition train -c configs/demo_classifier.yaml --fold 0     # model.family: classifier
"""

from competition.families import classifier, llava, vlm  # noqa: F401  (each registers itself)
from competition.families.base import (
    FAMILIES,
    AnswerEngine,
    Blueprint,
    Family,
    family_for,
    fold_engine,
    register,
    tokenizer_texts,
)

__all__ = ["FAMILIES", "AnswerEngine", "Blueprint", "Family", "family_for", "fold_engine", "register", "tokenizer_texts"]
