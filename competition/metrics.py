"""Scoring: exact matches, VQA question types, the per-type majority baseline.

    from competition.metrics import exact_matches, question_type
    exact_matches(["yes", "2 "], ["yes", "two"])  # [True, False]: stripped, nothing else
    question_type("What color is the bus?")       # 'what color is the': the longest VQA type that fits
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

from competition.data import ANSWER, QUESTION

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
    counts = pd.DataFrame({"qtype": question_types(train[QUESTION]), ANSWER: answers}).value_counts()
    ranked = counts.reset_index().sort_values(["count", ANSWER], ascending=[False, True], kind="stable")
    per_type = ranked.drop_duplicates("qtype").set_index("qtype")[ANSWER]
    totals = answers.value_counts()
    overall = min(totals.index[totals == totals.max()])
    return question_types(val[QUESTION]).map(per_type).fillna(overall).rename(ANSWER)
