"""Scoring: exact, normalized and VQA accuracy, per-group breakdowns, question types, the majority baseline.

from competition.metrics import breakdown, exact_accuracy, question_types, vqa_accuracy
exact_accuracy(["yes", "2 "], ["yes", "two"])  # 0.5
vqa_accuracy(["2"], [["two", "2", "3"]])       # 0.667: 2 of 3 ground truths agree
breakdown(df.assign(qtype=question_types(df["question"])), ["qtype"])  # columns qtype, n, accuracy

Matching is exact on stripped strings unless normalization `rules` are given (see competition.normalize).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from competition.normalize import DEFAULT_RULES, normalize_series

YES_NO_STARTS: tuple[str, ...] = tuple(
    "is are was were am do does did can could will would should shall has have had may might must".split()
)
# Leading words -> question type; the longest matching prefix wins, anything unmatched is "other".
QUESTION_TYPES: dict[tuple[str, ...], str] = {
    **{(w,): "yes/no" for w in YES_NO_STARTS},
    ("how", "many"): "how many",
    **{("what", c): "what color" for c in ("color", "colour", "colors", "colours")},
    **{("what", "is", "the", c): "what color" for c in ("color", "colour")},
    **{("what", s): "what shape" for s in ("shape", "shapes")},
    ("what", "is", "the", "shape"): "what shape",
    ("where",): "where",
    ("is", "there"): "is there",
    ("are", "there"): "is there",
    ("is", "the"): "is the",
    ("are", "the"): "is the",
    ("what", "is"): "what is",
    ("what's",): "what is",
    ("what",): "what",
}
_PREFIX_LEN = max(map(len, QUESTION_TYPES))
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def question_type(question: str) -> str:
    """Type from the question's first words: 'how many', 'what color', 'is there', 'yes/no', ..., 'other'."""
    words = tuple(_WORD.findall(question.lower().replace("\u2019", "'"))[:_PREFIX_LEN])
    for n in range(len(words), 0, -1):
        if words[:n] in QUESTION_TYPES:
            return QUESTION_TYPES[words[:n]]
    return "other"


def question_types(s: pd.Series) -> pd.Series:
    """`question_type` of every cell, each distinct question computed once; a Series named 'qtype'."""
    codes, uniques = pd.factorize(s.fillna("").astype(str))
    types = np.array([question_type(q) for q in uniques], dtype=object)
    return pd.Series(types[codes], index=s.index, name="qtype")


def _strings(x: Sequence[str] | pd.Series) -> pd.Series:
    """Answers as a 0..n-1 indexed Series of stripped text (missing -> '')."""
    return pd.Series(np.asarray(x, dtype=object)).fillna("").astype(str).str.strip()


def _correct(
    pred: Sequence[str] | pd.Series,
    gold: Sequence[str] | pd.Series,
    rules: Sequence[str] = (),
    keep: Collection[str] = (),
) -> np.ndarray:
    """Per-row match of the stripped answers after normalizing both sides with `rules` (none: exact)."""
    p, g = _strings(pred), _strings(gold)
    if len(p) != len(g):
        raise ValueError(f"{len(p)} predictions for {len(g)} ground truths")
    return (normalize_series(p, rules, keep) == normalize_series(g, rules, keep)).to_numpy(dtype=bool)


def _mean(values: np.ndarray) -> float:
    """Mean as a float; NaN for no rows."""
    return float(values.mean()) if len(values) else float("nan")


def exact_accuracy(pred: Sequence[str] | pd.Series, gold: Sequence[str] | pd.Series) -> float:
    """Share of predictions equal to the ground truth, both stripped: the competition's metric."""
    return _mean(_correct(pred, gold))


def normalized_accuracy(
    pred: Sequence[str] | pd.Series,
    gold: Sequence[str] | pd.Series,
    rules: Sequence[str] = DEFAULT_RULES,
    keep: Collection[str] = (),
) -> float:
    """Share of predictions equal to the ground truth once both are normalized."""
    return _mean(_correct(pred, gold, rules, keep))


def vqa_accuracy(
    pred: Sequence[str] | pd.Series,
    gold: Sequence[Sequence[str]] | pd.Series,
    rules: Sequence[str] = DEFAULT_RULES,
    keep: Collection[str] = (),
) -> float:
    """Mean over questions of min(1, #ground truths equal to the prediction / 3), after normalization.

    `gold` holds each question's list of ground truths; a plain string counts as a single one."""
    lists = [[g] if isinstance(g, str) else list(g) for g in gold]
    if len(pred) != len(lists):
        raise ValueError(f"{len(pred)} predictions for {len(lists)} ground-truth lists")
    rows = np.repeat(np.arange(len(lists)), [len(g) for g in lists])
    p = normalize_series(_strings(pred), rules, keep).to_numpy()
    g = normalize_series(_strings([a for g in lists for a in g]), rules, keep).to_numpy()
    hits = np.bincount(rows, weights=(g == p[rows]), minlength=len(lists))
    return _mean(np.minimum(1.0, hits / 3))


def breakdown(
    df: pd.DataFrame,
    by: list[str],
    pred_col: str = "answer",
    gold_col: str = "gold",
    rules: Sequence[str] = (),
    keep: Collection[str] = (),
) -> pd.DataFrame:
    """Accuracy per group: columns `by` + ['n', 'accuracy'], sorted by group, no total row.

    Matching is exact (stripped) unless `rules` are given, then both sides are normalized first."""
    ok = pd.Series(_correct(df[pred_col], df[gold_col], rules, keep), index=df.index, dtype=float)
    out = ok.groupby([df[c] for c in by], sort=True, dropna=False).agg(n="size", accuracy="mean")
    return out.reset_index()


def majority_baseline(
    train: pd.DataFrame, val: pd.DataFrame, question_col: str = "question", answer_col: str = "answer"
) -> pd.Series:
    """Per val row, the most common training answer of its question type (ties: smallest string);
    types unseen in training get the overall most common answer. Indexed like `val`."""
    answers = train[answer_col].astype(str)
    counts = pd.DataFrame({"qtype": question_types(train[question_col]), "answer": answers}).value_counts()
    ranked = counts.reset_index().sort_values(["count", "answer"], ascending=[False, True], kind="stable")
    per_type = ranked.drop_duplicates("qtype").set_index("qtype")["answer"]
    totals = answers.value_counts()
    overall = min(totals.index[totals == totals.max()])
    return question_types(val[question_col]).map(per_type).fillna(overall).rename(answer_col)
