"""Answer a fixed set of questions with an engine and score them like the competition: the one path that the
in-training probe and the decoding study share (cv and the votes score files of answers with the same normalizer).

    python -m competition tune -c configs/demo.yaml --study decoding
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from competition.config import DecodingConfig
from competition.data import IMAGE, QUESTION
from competition.families import AnswerEngine
from competition.metrics import credit, gold_cells, types_of
from competition.normalize import AnswerNormalizer

GREEDY = DecodingConfig()  # the decoding the probe answers with: greedy, the config's defaults


class QuestionSet:
    """Questions with their images, gold answers (normalized) and question types, answered and scored together."""

    def __init__(self, rows: pd.DataFrame, normalizer: AnswerNormalizer, metric: str = "exact") -> None:
        self.normalizer, self.metric = normalizer, metric
        self.questions, self.image_ids = rows[QUESTION].tolist(), rows[IMAGE].tolist()
        self.gold = gold_cells(rows, normalizer)
        self.types = types_of(rows).to_numpy()

    def __len__(self) -> int:
        return len(self.questions)

    def answers(self, engine: AnswerEngine, prompt: str, decoding: DecodingConfig, rows: list[int]) -> list[str]:
        """The engine's raw answers to `rows`, in their order."""
        raw = {a.row: a.text for batch in engine.answer(prompt, decoding, self.questions, self.image_ids, rows)
               for a in batch}  # fmt: skip
        return [raw[r] for r in rows]

    def right(self, engine: AnswerEngine, prompt: str, decoding: DecodingConfig, rows: list[int] | None = None
              ) -> np.ndarray:  # fmt: skip
        """Per row, the credit of the engine's answer under the metric (normalized, as the gold is)."""
        rows = list(range(len(self))) if rows is None else rows
        pred = self.normalizer(pd.Series(self.answers(engine, prompt, decoding, rows), dtype=str)).to_numpy()
        return credit(self.metric, pred, self.gold[rows])

    def by_type(self, right: np.ndarray) -> dict[str, float]:
        """Accuracy per question type of a `right` over every row."""
        return {str(t): float(v) for t, v in pd.Series(right).groupby(self.types).mean().items()}
