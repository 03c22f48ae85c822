"""Blends fitted on out-of-fold predictions, and their honest score: nested cross-validation over the same folds.

    python -m competition ensemble -c configs/demo.yaml     # (the ensemble stage chooses and applies a blend)

A blend is a vote method with member weights, one set for all questions or one per question type
(a member strong on counting need not be trusted on colour), a stacker (a logistic model scoring
each candidate answer from which members gave it and how sure they were), or the best single member. Choosing
and fitting it on the whole OOF scores it on its own training data; `nested_cv` refits the whole
choice on all folds but one and scores the fold left out, so the leaderboard's number for a blend is
one it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from competition.data import ANSWER, ID
from competition.metrics import Gold
from competition.vote import VOTE_COLUMNS, Candidate, candidate_weights, score, vote, vote_rows

MIN_TYPE_QUESTIONS = 50  # a question type with fewer OOF questions shares the stacker's global coefficients only


@dataclass(frozen=True)
class Blend:
    """A fitted vote: method, fuzzy threshold, member weights (None: unit), per question type when by_type; or
    (method 'stack') a logistic model scoring each candidate answer from its members."""

    method: str
    threshold: float
    weights: dict[str, float] | None
    by_type: dict[str, dict[str, float]] = field(default_factory=dict)
    stacker: Any = None
    members: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    metric: str = "exact"  # the vote serves it (anls, relaxed: near answers support each other)

    def params(self) -> dict[str, Any]:
        """The submission record's description of the blend."""
        method = f"{self.method} by type" if self.types else self.method
        return {"method": method, "threshold": self.threshold, "weights": self.weights,
                "weights_by_type": self.by_type or None}  # fmt: skip


def stack_features(preds: pd.DataFrame, members: tuple[str, ...], qtype: pd.Series,
                   types: tuple[str, ...] = ()) -> tuple[pd.DataFrame, np.ndarray]:  # fmt: skip
    """(id, answer) candidates and their features: the share of each member's rows for the id that gave the
    answer (on test a member has one row per fold model), their mean log-probability (0 when not given or
    unknown), and the share of members that gave it; then the same features again for each of `types`, zero
    outside that type, so each type gets coefficients of its own (whom to trust on counting, whom on colour)."""
    p = preds[VOTE_COLUMNS].assign(logprob=preds["logprob"].astype(float).fillna(0.0).clip(-20, 0))
    rows = p.groupby([ID, "member"]).size()
    given = p.groupby([ID, ANSWER, "member"]).agg(n=("logprob", "size"), lp=("logprob", "mean")).reset_index()
    given["share"] = given["n"].to_numpy() / rows.reindex(pd.MultiIndex.from_frame(given[[ID, "member"]])).to_numpy()
    wide = given.pivot_table(index=[ID, ANSWER], columns="member", values=["share", "lp"], aggfunc="first")
    share = wide["share"].reindex(columns=list(members)).fillna(0.0).to_numpy()
    logprob = wide["lp"].reindex(columns=list(members)).fillna(0.0).to_numpy()
    keys = wide.index.to_frame(index=False)
    x = np.hstack([share, logprob, share.mean(1, keepdims=True)])
    kind = keys[ID].map(qtype).to_numpy(object)
    return keys, np.hstack([x] + [x * (kind == t)[:, None] for t in types])


def fit_stacker(oof: pd.DataFrame, gold: Gold | pd.Series, qtype: pd.Series, by_type: bool = False) -> Blend | None:
    """A logistic model of 'this candidate answer is right' over the OOF candidates, with coefficients per question
    type (of at least MIN_TYPE_QUESTIONS questions) when `by_type`; None without both outcomes."""
    from sklearn.linear_model import LogisticRegression

    members = tuple(sorted(oof["member"].unique()))
    counts = oof.drop_duplicates(ID)[ID].map(qtype).value_counts()
    types = tuple(sorted(counts.index[counts >= MIN_TYPE_QUESTIONS])) if by_type else ()
    keys, x = stack_features(oof, members, qtype, types)
    right = Gold.of(gold).credit(keys[ID], keys[ANSWER])
    if right.min() == right.max():
        return None
    # each candidate twice, as right with weight = its credit and as wrong with the rest (a graded metric's credit)
    y, weight = np.r_[np.ones(len(right)), np.zeros(len(right))], np.r_[right, 1.0 - right]
    model = LogisticRegression(max_iter=1000).fit(np.vstack([x, x]), y, sample_weight=weight)
    return Blend("stack", 0.0, None, stacker=model, members=members, types=types, metric=Gold.of(gold).metric)


def apply_stacker(blend: Blend, preds: pd.DataFrame, qtype: pd.Series) -> pd.DataFrame:
    """Each id's candidate answer of the highest stacker score (first-seen id order)."""
    keys, x = stack_features(preds, blend.members, qtype, blend.types)
    keys["support"] = blend.stacker.decision_function(x)
    best = keys.sort_values([ID, "support", ANSWER], ascending=[True, False, True]).drop_duplicates(ID)
    order = pd.Index(pd.unique(preds[ID]))
    best = best.iloc[np.argsort(order.get_indexer(best[ID]))].reset_index(drop=True)
    return best.assign(logprob=np.nan)[[ID, ANSWER, "support", "logprob"]]


def apply_blend(blend: Blend, preds: pd.DataFrame, qtype: pd.Series) -> pd.DataFrame:
    """One voted row per id: `id, answer, support, logprob`; `qtype` maps id -> question type."""
    if blend.stacker is not None:
        return apply_stacker(blend, preds, qtype)
    if not blend.by_type:
        return vote(vote_rows(preds), blend.method, blend.weights, blend.threshold, blend.metric)
    types = preds[ID].map(qtype).to_numpy()
    parts = [vote(vote_rows(preds[types == t]), blend.method, blend.by_type.get(t, blend.weights), blend.threshold,
                  blend.metric) for t in pd.unique(types)]  # fmt: skip
    order = pd.Index(pd.unique(preds[ID]))
    out = pd.concat(parts, ignore_index=True)
    return out.iloc[np.argsort(order.get_indexer(out[ID]))].reset_index(drop=True)


def fit_candidate(c: Candidate, oof: pd.DataFrame, gold: Gold | pd.Series, qtype: pd.Series) -> Blend:
    """The candidate's blend, weights fitted on `oof` alone (per question type when c.by_type; unit without c.fit or
    c.select)."""
    weights, metric = candidate_weights(c, vote_rows(oof), gold), Gold.of(gold).metric
    if not c.by_type:
        return Blend(c.method, c.threshold, weights, metric=metric)
    types = oof[ID].map(qtype)
    by_type = {t: candidate_weights(c, vote_rows(oof[types == t]), gold) for t in pd.unique(types)}
    return Blend(c.method, c.threshold, weights, by_type, metric=metric)


def best_member(oof: pd.DataFrame, gold: Gold | pd.Series) -> Blend:
    """The single member with the best OOF accuracy (ties: the first in name order), as a blend."""
    right = Gold.of(gold).credit(oof[ID], oof[ANSWER])
    accuracy = pd.Series(right).groupby(oof["member"].to_numpy()).mean().sort_index(kind="stable")
    top = accuracy.idxmax()
    return Blend("weighted", 0.0, {m: float(m == top) for m in accuracy.index}, metric=Gold.of(gold).metric)


def choose_blend(oof: pd.DataFrame, gold: Gold | pd.Series, qtype: pd.Series, candidates: list[Candidate],
                 stack: bool = False) -> tuple[Blend, float]:  # fmt: skip
    """The blend of best OOF accuracy among the candidates (and the stacker when `stack`) and the best single
    member (which wins ties)."""
    best = best_member(oof, gold)
    best_score = score(apply_blend(best, oof, qtype), gold)
    stackers = [fit_stacker(oof, gold, qtype, by_type) for by_type in (False, True)] if stack else []
    fitted = [fit_candidate(c, oof, gold, qtype) for c in candidates] + stackers
    for blend in fitted:
        if blend is None:
            continue
        acc = score(apply_blend(blend, oof, qtype), gold)
        if acc > best_score:
            best, best_score = blend, acc
    return best, best_score


def nested_cv(oof: pd.DataFrame, gold: Gold | pd.Series, qtype: pd.Series, fold_of: pd.Series,
              candidates: list[Candidate], stack: bool = False) -> float | None:  # fmt: skip
    """Score (the gold's metric) of the whole choice (`choose_blend`) refitted without each fold, on that fold;
    None when the OOF covers fewer than two folds (nothing to refit on)."""
    folds = oof[ID].map(fold_of).to_numpy()
    if len(np.unique(folds)) < 2:
        return None
    right = 0.0
    for f in np.unique(folds):
        blend, _ = choose_blend(oof[folds != f], gold, qtype, candidates, stack)
        voted = apply_blend(blend, oof[folds == f], qtype)
        right += float(Gold.of(gold).credit(voted[ID], voted[ANSWER]).sum())
    return right / oof[ID].nunique()
