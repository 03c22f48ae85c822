"""Voting over ensemble members: majority, weighted, fuzzy-clustered (rapidfuzz) and soft; weights fitted on OOF.

    python bench/vote_speed.py      # (used by `python -m competition ensemble` and `tune --study vote`)

Predictions are one long frame, `id, member, answer, logprob` (answers already normalized), and optionally
`alternatives`, each row's (answer, logprob) pairs of its member's next most likely answers, which only the
soft vote reads: there every answer counts with its probability, so two members unsure of one answer can
outvote a third sure of another.

    candidates = [Candidate("majority"), Candidate("weighted", fit=True), Candidate("fuzzy", 80.0, fit=True)]
    method, params, cv = select_method(oof, gold, candidates)  # chosen on out-of-fold predictions only
    test = pd.concat([test, load_external(Path("result.jsonl"), "ext/llava_seed")])  # competition.external
    voted = vote(test, method, **params)                       # id, answer, support, logprob

Ties between answers go to the higher summed log-probability, then the higher single member weight,
then the smaller answer string. A NaN log-probability (external members) adds nothing to a sum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from competition.ballots import VOTE_COLUMNS, Ballots, make_ballots, starts, vote_rows, with_alternatives
from competition.config import VoteMethod
from competition.data import ANSWER, ID
from competition.errors import ConfigError
from competition.metrics import Gold
from competition.normalize import FUZZY_THRESHOLD

__all__ = ["VOTE_COLUMNS", "Candidate", "score", "select_method", "vote", "vote_rows", "with_alternatives"]

Method = VoteMethod
METHODS: tuple[str, ...] = get_args(Method)


@dataclass(frozen=True)
class Candidate:
    """One voting configuration that `select_method` scores on OOF: method, fuzzy threshold, fitted weights."""

    method: Method = "majority"
    threshold: float = FUZZY_THRESHOLD
    fit: bool = False
    by_type: bool = False  # fitted weights: one set per question type
    select: bool = False  # fitted weights: Caruana's ensemble selection (greedy, with replacement) instead of search

    def __post_init__(self) -> None:
        """Refuse an unknown method, and fitted weights for majority (which ignores weights)."""
        check_method(self.method)
        if self.method == "majority" and (self.fit or self.select):
            raise ConfigError("ensemble: majority uses unit weights; fit weights with 'weighted' or 'fuzzy'")


def check_method(method: str) -> None:
    """Refuse an unknown voting method, listing the valid ones."""
    if method not in METHODS:
        raise ConfigError(f"ensemble: unknown method '{method}' (valid: {', '.join(METHODS)})")


def vote(
    preds: pd.DataFrame,
    method: Method,
    weights: dict[str, float] | None = None,
    threshold: float = FUZZY_THRESHOLD,
    metric: str = "exact",
) -> pd.DataFrame:
    """One row per id (first-seen order): `id, answer, support, logprob` of the winning answer.

    majority: unit weights; weighted: `weights` by member (default 1.0); fuzzy: weighted, with the answers
    of one question clustered when fuzz.ratio >= threshold; the cluster wins, its best-supported spelling answers;
    soft: weighted, each answer and alternative times its probability (1 for a member without log-probabilities).
    Under a metric that gives credit to near answers (anls, relaxed), an answer also gains the weight of every
    other answer as much as it would score were that one right: the winner has the highest expected score.
    Under map@k the answer is the tuple of the k best answers, best first.
    """
    check_method(method)
    b = make_ballots(preds, threshold if method == "fuzzy" else None, soft=method == "soft", metric=metric)
    w = _member_weights(b, None if method == "majority" else weights)
    winner, spelling, weight = _decide(b, w)
    voted = _result(b, winner, spelling[winner], weight)
    if b.top_k > 1:
        voted[ANSWER] = _ranked_answers(b, spelling, weight)
    return voted


def _member_weights(b: Ballots, weights: dict[str, float] | None) -> np.ndarray:
    """Weight per member code (1.0 when unnamed); refuse a negative or non-finite weight."""
    w = np.array([float((weights or {}).get(m, 1.0)) for m in b.members])
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise ConfigError(f"ensemble: weight of member '{b.members[bad.argmax()]}' must be >= 0, got {w[bad][0]}")
    return w


def _decide(b: Ballots, member_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per id its winning cluster; per cluster its best spelling (a group) and its summed weight."""
    row_weight = member_weight[b.row_member] * b.row_scale
    group_weight = np.add.reduceat(row_weight, b.group_start)
    if b.support is not None:
        group_weight = b.support @ group_weight
    group_top = np.maximum.reduceat(row_weight, b.group_start)
    n_clusters = len(b.cluster_id)
    spelling = (
        np.arange(n_clusters)  # one answer per cluster: its own best spelling
        if n_clusters == len(b.group_id)
        else _best(b.cluster, group_weight, b.group_logprob, group_top, b.group_answer)
    )
    cluster_weight = np.bincount(b.cluster, group_weight, minlength=n_clusters)
    cluster_top = np.zeros(n_clusters)
    np.maximum.at(cluster_top, b.cluster, group_top)
    winner = _best(b.cluster_id, cluster_weight, b.cluster_logprob, cluster_top, b.group_answer[spelling])
    return winner, spelling, cluster_weight


def _ranks(b: Ballots, spelling: np.ndarray, cluster_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clusters ordered by id, then most weight, logprob and smallest answer; and each one's rank in its id."""
    logprob = np.where(np.isnan(b.cluster_logprob), -np.inf, b.cluster_logprob)
    order = np.lexsort((b.group_answer[spelling], -logprob, -np.round(cluster_weight, 9), b.cluster_id))
    ids = b.cluster_id[order]
    return order, np.arange(len(order)) - starts(ids).repeat(np.diff(np.r_[starts(ids), len(ids)]))


def _ranked_answers(b: Ballots, spelling: np.ndarray, cluster_weight: np.ndarray) -> list[tuple[str, ...]]:
    """Per id, its top_k answers best first."""
    order, rank = _ranks(b, spelling, cluster_weight)
    keep = order[rank < b.top_k]
    ranked: list[list[str]] = [[] for _ in b.ids]
    for cluster in keep:
        ranked[b.cluster_id[cluster]].append(b.answers[b.group_answer[spelling[cluster]]])
    return [tuple(r) for r in ranked]


def _best(by: np.ndarray, weight: np.ndarray, logprob: np.ndarray, top: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """Index of the best item per value 0..n-1 of `by`: most weight, then logprob, top weight, smallest answer.

    Each key in turn keeps the items at their `by`'s maximum (no sort) until one is left per `by`;
    answers are distinct within a `by`.
    """
    n = int(by.max(initial=-1)) + 1
    keep = np.arange(len(by))
    for key in (np.round(weight, 9), np.where(np.isnan(logprob), -np.inf, logprob), top, -answer.astype(float)):
        most = np.full(n, -np.inf)
        np.maximum.at(most, by[keep], key[keep])
        keep = keep[key[keep] == most[by[keep]]]
        if len(keep) == n:
            break
    best = np.empty(n, np.int64)
    best[by[keep]] = keep
    return best


def _result(b: Ballots, winner: np.ndarray, group: np.ndarray, cluster_weight: np.ndarray) -> pd.DataFrame:
    """The voted frame: id, answer, support (winning weight / total weight), summed logprob of its voters."""
    total = np.bincount(b.cluster_id, cluster_weight, minlength=len(b.ids))
    support = np.minimum(np.divide(cluster_weight[winner], total, out=np.zeros(len(winner)), where=total > 0), 1.0)
    return pd.DataFrame(
        {
            ID: b.ids,
            ANSWER: b.answers[b.group_answer[group]],
            "support": support,
            "logprob": b.cluster_logprob[winner],
        }
    )


def score(voted: pd.DataFrame, gold: Gold | pd.Series) -> float:
    """The voted answers' mean credit under the gold's metric (a Series of answers by id: exact match)."""
    return float(Gold.of(gold).credit(voted[ID], voted[ANSWER]).mean()) if len(voted) else 0.0


def _group_credit(b: Ballots, gold: Gold | pd.Series) -> np.ndarray:
    """Per (id, answer) group of the ballots: the answer's credit for its question."""
    return Gold.of(gold).credit(b.ids[b.group_id], b.answers[b.group_answer])


def fit_weights(
    oof: pd.DataFrame,
    gold: Gold | pd.Series,
    method: Literal["weighted", "fuzzy", "soft"] = "weighted",
    threshold: float = FUZZY_THRESHOLD,
    grid: Iterable[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    rounds: int = 3,
) -> dict[str, float]:
    """Member weights that maximise the voted OOF accuracy; deterministic.

    Start from each member's OOF accuracy; then, member by member (sorted), try that start times each
    `grid` factor, keeping a change only if it raises the voted accuracy; stop after `rounds` or a quiet round.
    """
    b = make_ballots(oof, threshold if method == "fuzzy" else None, soft=method == "soft", metric=Gold.of(gold).metric)
    correct = _group_credit(b, gold)
    start = _member_accuracy(b, correct)
    factors = np.asarray(tuple(grid), float)
    weight, best = start.copy(), _accuracy(b, start, correct)
    for _ in range(rounds):
        improved = False
        for m in range(len(weight)):
            for trial in _trials(weight, m, start[m] * factors):
                acc = _accuracy(b, trial, correct)
                if acc > best:
                    weight, best, improved = trial, acc, True
        if not improved:
            break
    return {str(member): round(float(w), 6) for member, w in zip(b.members, weight, strict=True)}


SELECTION_ROUNDS = 20  # Caruana et al. (2004) stop adding members after a few dozen; the best prefix is kept


def select_ensemble(oof: pd.DataFrame, gold: Gold | pd.Series, method: Literal["weighted", "fuzzy", "soft"] = "weighted",
                    threshold: float = FUZZY_THRESHOLD, rounds: int = SELECTION_ROUNDS) -> dict[str, float]:  # fmt: skip
    """Caruana's ensemble selection: add, with replacement, the member whose extra vote most raises the voted OOF
    accuracy, `rounds` times; the weights are the members' counts in the best bag seen (the earliest on ties)."""
    b = make_ballots(oof, threshold if method == "fuzzy" else None, soft=method == "soft", metric=Gold.of(gold).metric)
    correct = _group_credit(b, gold)
    counts, best, best_counts = np.zeros(len(b.members)), -1.0, np.zeros(len(b.members))
    for _ in range(rounds):
        trials = [counts + np.eye(len(counts))[m] for m in range(len(counts))]
        scores = [_accuracy(b, t, correct) for t in trials]
        counts = trials[int(np.argmax(scores))]
        if max(scores) > best:
            best, best_counts = max(scores), counts
    return {str(member): float(n) for member, n in zip(b.members, best_counts, strict=True)}


def candidate_weights(c: Candidate, oof: pd.DataFrame, gold: Gold | pd.Series) -> dict[str, float] | None:
    """The candidate's member weights fitted on `oof` (ensemble selection or weight search); None: unit weights."""
    if c.select:
        return select_ensemble(oof, gold, c.method, c.threshold)
    return fit_weights(oof, gold, c.method, c.threshold) if c.fit else None


def _member_accuracy(b: Ballots, correct: np.ndarray) -> np.ndarray:
    """Each member's mean credit (soft: over its probability mass)."""
    row_correct = np.repeat(correct, np.diff(np.r_[b.group_start, len(b.row_member)])) * b.row_scale
    n = len(b.members)
    mass = np.bincount(b.row_member, b.row_scale, minlength=n)
    return np.bincount(b.row_member, row_correct, minlength=n) / np.maximum(mass, 1e-12)


def _accuracy(b: Ballots, member_weight: np.ndarray, correct: np.ndarray) -> float:
    """Voted accuracy for these member weights, from the precomputed ballots."""
    winner, spelling, cluster_weight = _decide(b, member_weight)
    if b.top_k == 1:
        return float(correct[spelling[winner]].mean()) if len(winner) else 0.0
    order, rank = _ranks(b, spelling, cluster_weight)  # MAP@k: 1 / rank of the first right answer among the top k
    hit = (rank < b.top_k) & (correct[spelling[order]] > 0)
    precision = np.zeros(len(b.ids))
    np.maximum.at(precision, b.cluster_id[order[hit]], 1.0 / (rank[hit] + 1))
    return float(precision.mean()) if len(b.ids) else 0.0


def _trials(weight: np.ndarray, m: int, values: np.ndarray) -> Iterable[np.ndarray]:
    """Copies of `weight` with member m set to each value that differs from its current one."""
    for value in values:
        if value != weight[m]:
            trial = weight.copy()
            trial[m] = value
            yield trial


def select_method(
    oof: pd.DataFrame, gold: Gold | pd.Series, candidates: Iterable[Candidate]
) -> tuple[Method, dict[str, Any], float]:
    """The candidate with the best voted OOF accuracy (first on ties): (method, vote kwargs, OOF accuracy).

    The kwargs are `threshold` and `weights` (fitted, or None for unit weights): `vote(test, method, **params)`.
    """
    best: tuple[Method, dict[str, Any], float] | None = None
    for c in candidates:
        weights = candidate_weights(c, oof, gold)
        acc = score(vote(oof, c.method, weights, c.threshold, Gold.of(gold).metric), gold)
        if best is None or acc > best[2]:
            best = (c.method, {"threshold": c.threshold, "weights": weights}, acc)
    if best is None:
        raise ConfigError("ensemble: no candidate voting method to select from")
    return best
