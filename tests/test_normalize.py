"""Normalization: every rule alone, the full pipeline, 'none' vs '0', the merge report, vocabulary snapping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from competition.normalize import (
    DEFAULT_RULES,
    RULES,
    merge_report,
    normalize,
    normalize_series,
    protected_answers,
    snap_to_vocab,
)


@pytest.mark.parametrize(
    ("rule", "text", "expected"),
    [
        ("lowercase", "Yes", "yes"),
        ("lowercase", "BLUE Car", "blue car"),
        ("whitespace", "  red \t car\n", "red car"),
        ("whitespace", "red", "red"),
        ("punctuation", "yes!", "yes "),  # the whitespace rule tidies up after it
        ("punctuation", "t-shirt", "t shirt"),
        ("punctuation", "yes, it is", "yes it is"),
        ("punctuation", "(left)", " left "),
        ("punctuation", "1.5", "1.5"),
        ("punctuation", ".5", ".5"),
        ("punctuation", "3.", "3"),
        ("punctuation", "e.g.", "eg"),
        ("punctuation", "1,000", "1000"),
        ("punctuation", "1,000 (approx)", "1000 approx"),
        ("punctuation", "don't", "don't"),
        ("articles", "a dog", "dog"),
        ("articles", "the cat and an apple", "cat and apple"),
        ("articles", "theater", "theater"),
        ("articles", "A dog", "A dog"),
        ("number_words", "two", "2"),
        ("number_words", "ten dogs", "10 dogs"),
        ("number_words", "zero", "0"),
        ("number_words", "none", "0"),
        ("number_words", "eleven", "eleven"),
        ("number_words", "someone", "someone"),
        ("contractions", "dont", "don't"),
        ("contractions", "isnt", "isn't"),
        ("contractions", "it isnt", "it isn't"),
        ("contractions", "somebodyd", "somebody'd"),
        ("contractions", "don't", "don't"),
        ("contractions", "wont", "won't"),
    ],
)
def test_each_rule_alone(rule: str, text: str, expected: str) -> None:
    assert normalize(text, rules=[rule]) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two dogs.", "2 dogs"),
        ("  The  Red   Car ", "red car"),
        ("None", "0"),
        ("Isnt it?", "isn't it"),
        ("1,000", "1000"),
        ("1.5 meters", "1.5 meters"),
        ("Black-and-White!", "black and white"),
        ("a", ""),
    ],
)
def test_default_pipeline(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_rules_run_in_fixed_order_and_unknown_rules_are_refused() -> None:
    assert DEFAULT_RULES == RULES
    assert RULES.index("punctuation") < RULES.index("whitespace") < RULES.index("number_words")
    assert normalize("The Two", rules=["number_words", "articles", "lowercase"]) == "2"
    assert normalize("Two", rules=[]) == "Two"
    with pytest.raises(ValueError, match="unknown normalization rule"):
        normalize("x", rules=["lowercase", "stemming"])


def test_none_and_zero_merge_by_default_and_keep_holds_them_apart() -> None:
    answers = ["none", "0", "None", "red", "Red", "two", "2", "a dog", "dog", "dont", "don't"]
    assert normalize("none") == normalize("0") == "0"
    assert normalize("None.", keep={"none"}) == "none"
    assert normalize("none dogs", keep={"none"}) == "0 dogs"
    assert normalize("0", keep={"none"}) == "0"

    report = merge_report(answers)
    assert report["0"] == ["0", "None", "none"]
    assert report["2"] == ["2", "two"]
    assert report["dog"] == ["a dog", "dog"]
    assert report["don't"] == ["don't", "dont"]
    assert "red" not in report  # differs only by case

    keep = protected_answers(answers)
    assert keep == {"none", "two", "dont"}
    assert set(merge_report(answers, keep=keep)) == {"dog"}  # articles merge; keep cannot stop that
    assert normalize("None", keep=keep) == "none" and normalize("Two", keep=keep) == "two"


def test_protected_answers_only_where_a_merge_happens() -> None:
    assert protected_answers(["none", "two", "dont", "yes"]) == set()
    assert protected_answers(["none", "zero", "0"]) == {"none", "zero"}
    assert protected_answers(["none", "0"], rules=["lowercase", "whitespace"]) == set()


def test_normalize_series_equals_normalize_elementwise() -> None:
    raw = ["Two", "none", " The Cat ", "t-shirt", "dont", "Two", "1,000", "", "yes"] * 50
    s = pd.Series(raw, index=np.arange(len(raw)) * 7, name="answer")
    keep = {"none"}
    out = normalize_series(s, keep=keep)
    assert out.index.equals(s.index) and out.name == "answer"
    assert out.tolist() == [normalize(x, keep=keep) for x in raw]
    assert normalize_series(pd.Series(["A", None])).tolist() == ["", ""]


@pytest.mark.parametrize(
    ("answer", "cutoff", "expected"),
    [
        ("yellow", 90.0, "yellow"),  # exact member: unchanged
        ("yelow", 90.0, "yellow"),  # ratio 90.9 >= 90
        ("yelow", 95.0, "yelow"),  # below the cutoff: kept, never forced
        ("zebra", 90.0, "zebra"),
        ("bluee", 88.0, "blue"),  # ratio 88.9
        ("bluee", 90.0, "bluee"),
    ],
)
def test_snap_to_vocab_cutoff(answer: str, cutoff: float, expected: str) -> None:
    assert snap_to_vocab([answer], ["yellow", "blue", "red"], cutoff=cutoff) == [expected]


def test_snap_to_vocab_keeps_order_ties_and_edge_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("competition.normalize._CHUNK_CELLS", 2)  # many small chunks
    answers = ["grean", "red", "gren", "grean", "purple"]
    assert snap_to_vocab(answers, ["green", "red", "blue"], cutoff=80) == ["green", "red", "green", "green", "purple"]
    assert snap_to_vocab(["ab"], ["aa", "bb"], cutoff=50) == ["aa"]  # tie: the earlier entry
    assert snap_to_vocab(["x"], [], cutoff=0) == ["x"]
    assert snap_to_vocab([], ["a"]) == []
