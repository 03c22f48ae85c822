"""Ballots: a vote's predictions factorized once (ids, answers, members, their groups and clusters), so that any
weighting of the members is a few array sums (competition.vote decides and fits on them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from competition.config import top_k
from competition.data import ANSWER, ID
from competition.errors import DataError
from competition.metrics import NEAR_CREDIT, credit

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
    top_k: int = 1  # answers ranked per question (MAP@k)


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


def make_ballots(preds: pd.DataFrame, threshold: float | None = None, soft: bool = False, metric: str = "exact"
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
    group_start = starts(key)
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
        support=_support(group_id, group_answer, answers, metric)
        if metric in NEAR_CREDIT and threshold is None
        else None,
        top_k=top_k(metric),
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


def starts(key: np.ndarray) -> np.ndarray:
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
    start = starts(key)
    size = np.diff(np.r_[start, len(key)])
    partners = np.repeat(start + size, size) - np.arange(len(key)) - 1
    left = np.repeat(np.arange(len(key)), partners)
    offset = np.arange(len(left)) - np.repeat(np.cumsum(partners) - partners, partners) + 1
    return left, left + offset
