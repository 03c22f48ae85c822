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
from rapidfuzz import fuzz, process
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from competition.config import VoteMethod
from competition.data import ANSWER, ID
from competition.errors import ConfigError, DataError
from competition.metrics import NEAR_CREDIT, Gold, credit
from competition.normalize import FUZZY_THRESHOLD

Method = VoteMethod
METHODS: tuple[str, ...] = get_args(Method)
VOTE_COLUMNS = [ID, "member", ANSWER, "logprob"]
ALTERNATIVES = "alternatives"  # the optional column of (answer, logprob) pairs the soft vote adds


@dataclass(frozen=True)
class Ballots:
    """Predictions factorized once; a vote is then a few array sums, whatever the weights.

    Rows are sorted by (id, answer) group; groups by id then answer; a cluster is a set of groups of
    one id (one group each unless fuzzy).
    """

    ids: np.ndarray  # distinct ids, first-seen order
    answers: np.ndarray  # distinct answers, sorted: answer code order is string order
    members: np.ndarray  # distinct members, sorted
    row_member: np.ndarray  # per row: member code
    row_scale: np.ndarray  # per row: its share of the member's weight (soft: the answer's probability, else 1)
    group_start: np.ndarray  # per group: its first row
    group_id: np.ndarray  # per group: id code
    group_answer: np.ndarray  # per group: answer code
    group_logprob: np.ndarray  # per group: summed logprob (NaN when no voter has one)
    cluster: np.ndarray  # per group: cluster code
    cluster_id: np.ndarray  # per cluster: id code
    cluster_logprob: np.ndarray  # per cluster: summed logprob
    support: Any = None  # (groups x groups) credit of each answer were another of its question's right; None: none


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
    """
    check_method(method)
    b = _ballots(preds, threshold if method == "fuzzy" else None, soft=method == "soft", metric=metric)
    w = _member_weights(b, None if method == "majority" else weights)
    return _result(b, *_decide(b, w))


def vote_rows(preds: pd.DataFrame) -> pd.DataFrame:
    """The columns a vote reads (alternatives where present)."""
    return preds[VOTE_COLUMNS + ([ALTERNATIVES] if ALTERNATIVES in preds else [])]


def with_alternatives(preds: pd.DataFrame) -> pd.DataFrame:
    """The rows and, after them, one row per alternative answer of each (id, member, answer, logprob)."""
    if ALTERNATIVES not in preds:
        return preds[VOTE_COLUMNS]
    alt = preds[[ID, "member", ALTERNATIVES]].explode(ALTERNATIVES).dropna(subset=[ALTERNATIVES])
    pairs = alt[ALTERNATIVES].tolist()
    extra = pd.DataFrame({ID: alt[ID].to_numpy(), "member": alt["member"].to_numpy(),
                          ANSWER: [a for a, _ in pairs], "logprob": np.array([lp for _, lp in pairs], float)})  # fmt: skip
    return pd.concat([preds[VOTE_COLUMNS], extra], ignore_index=True)


def _ballots(preds: pd.DataFrame, threshold: float | None = None, soft: bool = False, metric: str = "exact"
             ) -> Ballots:  # fmt: skip
    """Factorize ids, answers and members; cluster similar answers per id when a threshold is given; with `soft`,
    the alternatives join as rows weighted by their probabilities; `metric` (anls, relaxed): near answers' support."""
    preds = with_alternatives(preds) if soft else preds
    id_code, ids = _factorize(preds, ID, sort=False)
    answer_code, answers = _factorize(preds, ANSWER, sort=True)
    member_code, members = _factorize(preds, "member", sort=True)
    key = id_code.astype(np.int64) * max(len(answers), 1) + answer_code
    order = np.argsort(key, kind="stable")
    key = key[order]
    group_start = _starts(key)
    group_id, group_answer = np.divmod(key[group_start], max(len(answers), 1))
    logprob = preds["logprob"].to_numpy(float)[order]
    group_logprob = _nansum_at(logprob, group_start)
    cluster = (
        np.arange(len(group_start)) if threshold is None else _clusters(group_id, group_answer, answers, threshold)
    )
    n_clusters = int(cluster.max()) + 1 if len(cluster) else 0
    cluster_id = np.zeros(n_clusters, np.int64)
    cluster_id[cluster] = group_id
    return Ballots(
        ids=ids,
        answers=answers,
        members=members,
        row_member=member_code[order],
        row_scale=np.where(np.isnan(logprob), 1.0, np.exp(logprob)) if soft else np.ones(len(order)),
        group_start=group_start,
        group_id=group_id,
        group_answer=group_answer,
        group_logprob=group_logprob,
        cluster=cluster,
        cluster_id=cluster_id,
        cluster_logprob=_nansum_by(cluster, group_logprob, n_clusters),
        support=_support(group_id, group_answer, answers, metric) if metric in NEAR_CREDIT and threshold is None else None,
    )


def _support(group_id: np.ndarray, group_answer: np.ndarray, answers: np.ndarray, metric: str) -> coo_array:
    """(groups x groups): 1 on the diagonal, and for two answers of one question the credit the first would get were
    the second the gold answer (each direction scored: relaxed accuracy is not symmetric)."""
    n = len(group_id)
    left, right = _pairs_within(group_id)
    a, b = answers[group_answer[left]], answers[group_answer[right]]
    forward = credit(metric, a, [(x,) for x in b])
    backward = credit(metric, b, [(x,) for x in a])
    rows = np.r_[np.arange(n), left, right]
    cols = np.r_[np.arange(n), right, left]
    return coo_array((np.r_[np.ones(n), forward, backward], (rows, cols)), shape=(n, n)).tocsr()


def _factorize(preds: pd.DataFrame, col: str, sort: bool) -> tuple[np.ndarray, np.ndarray]:
    """Codes and distinct values of a column; a DataError names the first row missing a value."""
    codes, values = pd.factorize(preds[col], sort=sort)
    if (codes < 0).any():
        raise DataError(f"predictions: row {int((codes < 0).argmax())} has no '{col}'")
    return codes, np.asarray(values, object)


def _starts(key: np.ndarray) -> np.ndarray:
    """Index where each run of equal values of the sorted array `key` begins."""
    return np.flatnonzero(np.r_[True, key[1:] != key[:-1]][: len(key)])


def _nansum_at(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum of each run of `values` beginning at `starts`, NaN skipped; NaN where a run has no number."""
    known = ~np.isnan(values)
    total = np.add.reduceat(np.where(known, values, 0.0), starts)
    return np.where(np.add.reduceat(known, starts) > 0, total, np.nan)


def _nansum_by(labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Sum of `values` per label, NaN skipped; NaN where a label has no number."""
    known = ~np.isnan(values)
    total = np.bincount(labels, np.where(known, values, 0.0), minlength=n)
    return np.where(np.bincount(labels, known, minlength=n) > 0, total, np.nan)


def _clusters(group_id: np.ndarray, group_answer: np.ndarray, answers: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster code per group: connected components of one id's answers linked by fuzz.ratio >= threshold.

    Every pair of answers that meets in a question is scored once (rapidfuzz cpdist), whatever its count.
    """
    n = len(group_id)
    left, right = _pairs_within(group_id)
    pair = group_answer[left] * len(answers) + group_answer[right]
    distinct, inverse = np.unique(pair, return_inverse=True)
    scores = process.cpdist(
        answers[distinct // len(answers)],
        answers[distinct % len(answers)],
        scorer=fuzz.ratio,
        score_cutoff=threshold,
        dtype=np.float64,
        workers=-1,
    )
    linked = (scores >= threshold)[inverse]
    graph = coo_array((np.ones(int(linked.sum())), (left[linked], right[linked])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _pairs_within(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j), i < j, of positions sharing a value of the sorted array `key`."""
    start = _starts(key)
    size = np.diff(np.r_[start, len(key)])
    partners = np.repeat(start + size, size) - np.arange(len(key)) - 1
    left = np.repeat(np.arange(len(key)), partners)
    offset = np.arange(len(left)) - np.repeat(np.cumsum(partners) - partners, partners) + 1
    return left, left + offset


def _member_weights(b: Ballots, weights: dict[str, float] | None) -> np.ndarray:
    """Weight per member code (1.0 when unnamed); refuse a negative or non-finite weight."""
    w = np.array([float((weights or {}).get(m, 1.0)) for m in b.members])
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise ConfigError(f"ensemble: weight of member '{b.members[bad.argmax()]}' must be >= 0, got {w[bad][0]}")
    return w


def _decide(b: Ballots, member_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per id: the winning cluster, its best spelling (a group) and its summed weight."""
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
    return winner, spelling[winner], cluster_weight


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
    b = _ballots(oof, threshold if method == "fuzzy" else None, soft=method == "soft", metric=Gold.of(gold).metric)
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
    b = _ballots(oof, threshold if method == "fuzzy" else None, soft=method == "soft", metric=Gold.of(gold).metric)
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
    _, group, _ = _decide(b, member_weight)
    return float(correct[group].mean()) if len(group) else 0.0


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
