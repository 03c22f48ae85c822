"""Blends fitted on out-of-fold predictions, and their honest score: nested cross-validation over the same folds.

    python -m competition ensemble -c configs/demo.yaml     # (the ensemble stage chooses and applies a blend)

A blend is a vote method with member weights, one set for all questions or one per question type
(a member strong on counting need not be trusted on colour), or the best single member. Choosing
and fitting it on the whole OOF scores it on its own training data; `nested_cv` refits the whole
choice on all folds but one and scores the fold left out, so the leaderboard's number for a blend is
one it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from competition.vote import Candidate, fit_weights, score, vote

VOTE_COLUMNS = ["id", "member", "answer", "logprob"]


@dataclass(frozen=True)
class Blend:
    """A fitted vote: method, fuzzy threshold, member weights (None: unit), per question type when by_type."""

    method: str
    threshold: float
    weights: dict[str, float] | None
    by_type: dict[str, dict[str, float]] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        """The submission record's description of the blend."""
        return {"method": self.method, "threshold": self.threshold, "weights": self.weights,
                "weights_by_type": self.by_type or None}  # fmt: skip


def apply_blend(blend: Blend, preds: pd.DataFrame, qtype: pd.Series) -> pd.DataFrame:
    """One voted row per id: `id, answer, support, logprob`; `qtype` maps id -> question type."""
    if not blend.by_type:
        return vote(preds[VOTE_COLUMNS], blend.method, blend.weights, blend.threshold)
    types = preds["id"].map(qtype).to_numpy()
    parts = [vote(preds[types == t][VOTE_COLUMNS], blend.method, blend.by_type.get(t, blend.weights), blend.threshold)
             for t in pd.unique(types)]  # fmt: skip
    order = pd.Index(pd.unique(preds["id"]))
    out = pd.concat(parts, ignore_index=True)
    return out.iloc[np.argsort(order.get_indexer(out["id"]))].reset_index(drop=True)


def fit_candidate(c: Candidate, oof: pd.DataFrame, gold: pd.Series, qtype: pd.Series) -> Blend:
    """The candidate's blend, weights fitted on `oof` alone (per question type when c.by_type)."""
    if not c.fit:
        return Blend(c.method, c.threshold, None)
    weights = fit_weights(oof[VOTE_COLUMNS], gold, c.method, c.threshold)
    if not c.by_type:
        return Blend(c.method, c.threshold, weights)
    types = oof["id"].map(qtype)
    by_type = {t: fit_weights(oof[types == t][VOTE_COLUMNS], gold, c.method, c.threshold) for t in pd.unique(types)}
    return Blend(c.method, c.threshold, weights, by_type)


def best_member(oof: pd.DataFrame, gold: pd.Series) -> Blend:
    """The single member with the best OOF accuracy (ties: the first in name order), as a blend."""
    right = (oof["answer"].to_numpy(object) == gold.reindex(oof["id"]).to_numpy(object))
    accuracy = pd.Series(right).groupby(oof["member"].to_numpy()).mean().sort_index(kind="stable")
    top = accuracy.idxmax()
    return Blend("weighted", 0.0, {m: float(m == top) for m in accuracy.index})


def choose_blend(oof: pd.DataFrame, gold: pd.Series, qtype: pd.Series, candidates: list[Candidate]
                 ) -> tuple[Blend, float]:  # fmt: skip
    """The blend of best OOF accuracy among the candidates and the best single member (which wins ties)."""
    best = best_member(oof, gold)
    best_score = score(apply_blend(best, oof, qtype), gold)
    for c in candidates:
        blend = fit_candidate(c, oof, gold, qtype)
        acc = score(apply_blend(blend, oof, qtype), gold)
        if acc > best_score:
            best, best_score = blend, acc
    return best, best_score


def nested_cv(oof: pd.DataFrame, gold: pd.Series, qtype: pd.Series, fold_of: pd.Series,
              candidates: list[Candidate]) -> float | None:  # fmt: skip
    """Accuracy of the whole choice (`choose_blend`) refitted without each fold and scored on that fold;
    None when the OOF covers fewer than two folds (nothing to refit on)."""
    folds = oof["id"].map(fold_of).to_numpy()
    if len(np.unique(folds)) < 2:
        return None
    right = 0
    for f in np.unique(folds):
        blend, _ = choose_blend(oof[folds != f], gold, qtype, candidates)
        voted = apply_blend(blend, oof[folds == f], qtype)
        right += int((voted["answer"].to_numpy(object) == gold.reindex(voted["id"]).to_numpy(object)).sum())
    return right / oof["id"].nunique()
