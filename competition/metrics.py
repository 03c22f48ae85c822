"""Scoring: the competition's metric (exact, VQA accuracy, ANLS, relaxed, choice, MAP@k), VQA question types, the
per-type majority baseline. Every stage that scores a prediction asks `credit` (through `Gold`).

    from competition.metrics import credit, question_type
    credit("vqa", ["red"], [("red", "red") + ("blue",) * 8])  # [0.6]: 2 of 10 annotators said it
    credit("anls", ["recieved"], [("received",)])             # [0.75]
    question_type("What color is the bus?")                   # 'what color is the': the longest VQA type that fits
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from competition.config import check_metric, top_k
from competition.data import ANSWER, ANSWERS, ID, QTYPE, QUESTION
from competition.errors import DataError
from competition.normalize import normalize_lists

# The VQA v2 question types (GT-Vision-Lab/VQA, QuestionTypes/mscoco_question_types.txt): a question's type
# is the longest of these that its first words spell out; UNMATCHED (VQA's 65th type) when none does.
QUESTION_TYPES: tuple[str, ...] = (
    "how many", "is the", "what", "what color is the", "what is the", "is this", "is this a", "what is", "are the",
    "what kind of", "is there a", "what type of", "is it", "what are the", "where is the", "is there", "does the",
    "what color are the", "are these", "are there", "which", "is", "what is the man", "is the man", "are", "how",
    "does this", "what is on the", "what does the", "how many people are", "what is in the", "what is this", "do",
    "what are", "are they", "what time", "what sport is", "are there any", "is he", "what color is", "why",
    "where are the", "what color", "who is", "what animal is", "is the woman", "is this an", "do you",
    "how many people are in", "what room is", "has", "is this person", "what is the woman", "can you", "why is the",
    "is the person", "what is the color of the", "what is the person", "could", "was", "is that a", "what number is",
    "what is the name", "what brand",
)  # fmt: skip
UNMATCHED = "none of the above"
_TYPE = object()  # trie key of the type that ends at a node (never a word)
_EDGE_MARKS = "\"'()[]{},.;:!?"  # stripped off a word's ends: "many?" -> "many"


@lru_cache(maxsize=8)
def _trie(types: tuple[str, ...]) -> dict:
    """Word trie of the question types: word -> child node, and _TYPE -> the type ending there."""
    root: dict = {}
    for qtype in types:
        node = root
        for word in qtype.split():
            node = node.setdefault(word, {})
        node[_TYPE] = qtype
    return root


def _longest_type(trie: dict, question: str) -> str:
    """Walk the trie along the question's words ("what's" read as "what is"); the last type passed, else UNMATCHED."""
    node, found = trie, UNMATCHED
    for word in question.replace("\u2019", "'").lower().replace("'s", " is").split():
        node = node.get(word.strip(_EDGE_MARKS))
        if node is None:
            return found
        found = node.get(_TYPE, found)
    return found


def question_type(question: str, types: Sequence[str] = QUESTION_TYPES) -> str:
    """The longest type in `types` that the question's first words spell, case aside; else UNMATCHED."""
    return _longest_type(_trie(tuple(types)), question)


def question_types(s: pd.Series, types: Sequence[str] = QUESTION_TYPES) -> pd.Series:
    """`question_type` of every cell, each distinct question computed once; a Series named 'qtype'."""
    codes, uniques = pd.factorize(s.fillna("").astype(str))
    trie = _trie(tuple(types))
    found = np.array([_longest_type(trie, q) for q in uniques], dtype=object)
    return pd.Series(found[codes], index=s.index, name="qtype")


def types_of(rows: pd.DataFrame) -> pd.Series:
    """Each row's question type: its table's (data.type_col) where given, else `question_type` of its question."""
    derived = question_types(rows[QUESTION])
    return rows[QTYPE].fillna(derived).rename("qtype") if QTYPE in rows else derived


def _strings(x: Sequence[str] | pd.Series) -> pd.Series:
    """Answers as a 0..n-1 indexed Series of stripped text (missing -> '')."""
    return pd.Series(np.asarray(x, dtype=object)).fillna("").astype(str).str.strip()


def exact_matches(pred: Sequence[str] | pd.Series, gold: Sequence[str] | pd.Series) -> np.ndarray:
    """Per row, whether the prediction equals the ground truth, both stripped: the competition's metric."""
    p, g = _strings(pred), _strings(gold)
    if len(p) != len(g):
        raise ValueError(f"{len(p)} predictions for {len(g)} ground truths")
    return (p == g).to_numpy(dtype=bool)


def majority_baseline(train: pd.DataFrame, val: pd.DataFrame) -> pd.Series:
    """Per val row, the most common training answer of its question type (ties: smallest string);
    types unseen in training get the overall most common answer. Indexed like `val`."""
    answers = train[ANSWER].astype(str)
    counts = pd.DataFrame({"qtype": types_of(train).to_numpy(), ANSWER: answers.to_numpy()}).value_counts()
    ranked = counts.reset_index().sort_values(["count", ANSWER], ascending=[False, True], kind="stable")
    per_type = ranked.drop_duplicates("qtype").set_index("qtype")[ANSWER]
    totals = answers.value_counts()
    overall = min(totals.index[totals == totals.max()])
    return types_of(val).map(per_type).fillna(overall).rename(ANSWER)


# ---- competition metrics: the credit of one prediction against its gold answers, in [0, 1] ----------------------

VQA_AGREEING = 3  # VQA v2: an answer given by 3 annotators of the others is fully right
ANLS_THRESHOLD = 0.5  # DocVQA: a normalized Levenshtein distance from this on scores 0
RELAXED_TOLERANCE = 0.05  # ChartQA: a number within 5 % relative error of the answer counts as right
NEAR_CREDIT = ("anls", "relaxed")  # metrics that give an answer credit for another, near one: votes pool them


def vqa_accuracy(pred: str, answers: Sequence[str]) -> float:
    """VQA v2 accuracy: over the leave-one-annotator-out subsets, the mean of min(1, matches among the others / 3)."""
    n, m = len(answers), sum(a == pred for a in answers)
    if n == 0:
        return 0.0
    if n == 1:
        return float(m == 1)  # one gold answer: nothing to leave out
    left_out_match = min(1.0, (m - 1) / VQA_AGREEING)  # a matching annotator left out: m-1 among the others
    left_out_other = min(1.0, m / VQA_AGREEING)
    return (m * left_out_match + (n - m) * left_out_other) / n


def _anls_text(text: str) -> str:
    """DocVQA compares lowercased text with runs of whitespace as one space."""
    return " ".join(text.lower().split())


def anls(pred: str, answers: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """ANLS of one question: the best 1 - normalized Levenshtein distance to an answer, 0 from `threshold` on."""
    from rapidfuzz.distance import Levenshtein

    p = _anls_text(pred)
    best = 0.0
    for a in map(_anls_text, answers):
        # the official denominator is the longer upper-cased length ('ß' counts as 'SS')
        longest = max(len(p.upper()), len(a.upper()))
        distance = Levenshtein.distance(p, a) / longest if longest else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def _number(text: str) -> float | None:
    """The text as a float ('12%' as 0.12), None when it is not one."""
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_match(pred: str, answers: Sequence[str], tolerance: float = RELAXED_TOLERANCE) -> float:
    """ChartQA's relaxed correctness: within `tolerance` relative error of a nonzero numeric answer, else the same
    text case aside; 1.0 when some answer accepts the prediction."""
    p = _number(pred)
    for a in answers:
        t = _number(a)
        right = abs(p - t) / abs(t) <= tolerance if p is not None and t else pred.lower() == a.lower()
        if right:
            return 1.0
    return 0.0


def average_precision(ranked: Sequence[str] | str, answers: Sequence[str], k: int) -> float:
    """MAP@k's term for one row: 1 / rank of the first guess among the first k that is an answer (repeated guesses
    counted once), 0 when none is."""
    guesses = [ranked] if isinstance(ranked, str) else list(ranked)
    seen: list[str] = []
    for g in guesses[:k]:
        if g in seen:
            continue
        seen.append(g)
        if g in answers:
            return 1.0 / (guesses.index(g) + 1)
    return 0.0


def _one(metric: str, pred: Any, answers: tuple[str, ...]) -> float:
    """The credit of one prediction under `metric` (check_metric'd)."""
    if metric == "vqa":
        return vqa_accuracy(pred, answers)
    if metric == "anls":
        return anls(pred, answers)
    if metric == "relaxed":
        return relaxed_match(pred, answers)
    if metric.startswith("map@"):
        return average_precision(pred, answers, top_k(metric))
    return float(pred in answers)  # exact, choice: the answer itself (any of several gold answers)


def as_answers(gold: Any) -> tuple[str, ...]:
    """A gold cell as the tuple of its answers (one string: a tuple of one)."""
    return (gold,) if isinstance(gold, str) else tuple(gold)


def credit(metric: str, pred: Sequence[Any], gold: Sequence[Any]) -> np.ndarray:
    """Per row, the prediction's credit in [0, 1] under `metric`; a gold cell is one answer or a tuple of them
    (VQA: every annotator's, repeats kept); a 'map@k' prediction is a tuple of ranked answers or one answer."""
    pred, gold = list(pred), list(gold)
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predictions for {len(gold)} ground truths")
    if metric in ("exact", "choice") and all(isinstance(g, str) for g in gold):
        return (np.asarray(pred, dtype=object) == np.asarray(gold, dtype=object)).astype(float)
    check_metric(metric)
    memo: dict[tuple[Any, tuple[str, ...]], float] = {}
    out = np.empty(len(pred))
    for i, (p, g) in enumerate(zip(pred, gold, strict=True)):
        key = (p if isinstance(p, str) else tuple(p), as_answers(g))
        if key not in memo:
            memo[key] = _one(metric, key[0], key[1])
        out[i] = memo[key]
    return out


@dataclass(frozen=True)
class Gold:
    """The gold answers of every scored id (normalized; a tuple where a question has several) and the metric that
    scores predictions against them: everything that scores (cv, votes, blends, studies) asks it."""

    answers: pd.Series  # indexed by id
    metric: str = "exact"

    @classmethod
    def of(cls, gold: Gold | pd.Series, metric: str = "exact") -> Gold:
        """A Gold as is; a Series of answers by id, scored by `metric`."""
        return gold if isinstance(gold, Gold) else cls(gold, metric)

    @classmethod
    def of_frame(cls, oof: pd.DataFrame, metric: str) -> Gold:
        """The gold of the ids of an OOF frame (predictions.oof_frame's 'gold' column)."""
        return cls(oof.drop_duplicates(ID).set_index(ID)["gold"], metric)

    def for_ids(self, ids: Sequence[Any]) -> np.ndarray:
        """The gold cell of each id; a DataError names the first id without one."""
        found = self.answers.reindex(np.asarray(ids, dtype=object))
        missing = found.isna().to_numpy()
        if missing.any():
            raise DataError(f"gold answers: no answer for id '{np.asarray(ids, dtype=object)[missing.argmax()]}'")
        return found.to_numpy(object)

    def credit(self, ids: Sequence[Any], pred: Sequence[Any]) -> np.ndarray:
        """Per row, the credit of `pred` for the question `ids` names."""
        return credit(self.metric, pred, self.for_ids(ids))


def gold_cells(rows: pd.DataFrame, normalizer: Callable[[pd.Series], pd.Series]) -> np.ndarray:
    """Each row's normalized gold: the tuple of its annotators' answers where the table has them, else its answer."""
    if ANSWERS not in rows:
        return normalizer(rows[ANSWER].astype(str)).to_numpy(object)
    cells = np.empty(len(rows), dtype=object)
    cells[:] = normalize_lists(rows[ANSWERS], normalizer)
    return cells
