"""Metrics: question types, exact / normalized / VQA accuracy, breakdowns, the majority baseline."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from competition.metrics import (
    breakdown,
    exact_accuracy,
    majority_baseline,
    normalized_accuracy,
    question_type,
    question_types,
    vqa_accuracy,
)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How many circles are there?", "how many"),
        ("  HOW   many objects are in the image?", "how many"),
        ("What color is the square?", "what color"),
        ("What colour is the bus?", "what color"),
        ("What is the color of the car?", "what color"),
        ("What shape is the red object?", "what shape"),
        ("Where is the blue cross?", "where"),
        ("Is there a green triangle?", "is there"),
        ("Are there any dogs?", "is there"),
        ("Is the red circle large or small?", "is the"),
        ("Is it raining?", "yes/no"),
        ("Does the man wear a hat?", "yes/no"),
        ("Can you see a tree?", "yes/no"),
        ("What is this?", "what is"),
        ("What's on the table?", "what is"),
        ("What are they eating?", "what"),
        ("Why is the sky blue?", "other"),
        ("", "other"),
        ("¿Qué?", "other"),
    ],
)
def test_question_type(question: str, expected: str) -> None:
    assert question_type(question) == expected


def test_question_types_vectorised() -> None:
    s = pd.Series(["How many cats?", "Is there a dog?", "How many cats?", None], index=[5, 6, 7, 8])
    out = question_types(s)
    assert out.tolist() == ["how many", "is there", "how many", "other"]
    assert out.index.tolist() == [5, 6, 7, 8] and out.name == "qtype"


def test_exact_and_normalized_accuracy() -> None:
    pred = ["yes", " 2", "Two", "the dog", "none"]
    gold = ["yes", "2", "2", "dog", "0"]
    assert exact_accuracy(pred, gold) == pytest.approx(2 / 5)
    assert normalized_accuracy(pred, gold) == pytest.approx(1.0)
    assert normalized_accuracy(pred, gold, keep={"none"}) == pytest.approx(4 / 5)
    assert normalized_accuracy(pred, gold, rules=["lowercase"]) == pytest.approx(2 / 5)
    assert exact_accuracy(pd.Series(["a", "b"], index=[10, 20]), pd.Series(["a", "c"], index=[20, 10])) == 0.5
    assert math.isnan(exact_accuracy([], []))
    with pytest.raises(ValueError, match="2 predictions for 1"):
        exact_accuracy(["a", "b"], ["a"])


def test_vqa_accuracy_counts_agreeing_ground_truths() -> None:
    gold = [["red", "blue", "green"], ["Two", "2", "3"], ["cat", "cat", "cat", "dog"], ["x"]]
    assert vqa_accuracy(["red"], gold[:1]) == pytest.approx(1 / 3)
    assert vqa_accuracy(["2"], gold[1:2]) == pytest.approx(2 / 3)
    assert vqa_accuracy(["Cat."], gold[2:3]) == pytest.approx(1.0)
    assert vqa_accuracy(["y"], gold[3:]) == 0.0
    assert vqa_accuracy(["red", "2", "cat", "y"], gold) == pytest.approx((1 / 3 + 2 / 3 + 1 + 0) / 4)
    assert vqa_accuracy(["2"], ["2"]) == pytest.approx(1 / 3)  # a plain string is one ground truth
    with pytest.raises(ValueError):
        vqa_accuracy(["a", "b"], [["a"]])


def test_breakdown_per_group() -> None:
    df = pd.DataFrame(
        {
            "fold": [0, 0, 0, 1, 1, 1],
            "prompt": ["p1", "p2", "p1", "p1", "p2", "p2"],
            "answer": ["yes", "no", "2", "red", "blue", "Two"],
            "gold": ["yes", "yes", "2", "red", "red", "2"],
        }
    )
    by_fold = breakdown(df, ["fold"])
    assert list(by_fold.columns) == ["fold", "n", "accuracy"]
    assert by_fold["n"].tolist() == [3, 3]
    assert by_fold["accuracy"].tolist() == pytest.approx([2 / 3, 1 / 3])

    both = breakdown(df, ["fold", "prompt"]).set_index(["fold", "prompt"])
    assert both.loc[(0, "p1"), "accuracy"] == 1.0 and both.loc[(0, "p1"), "n"] == 2
    assert both.loc[(0, "p2"), "accuracy"] == 0.0
    assert both.loc[(1, "p2"), "accuracy"] == 0.0
    assert both["n"].sum() == len(df)

    normalized = breakdown(df, ["fold"], rules=("lowercase", "number_words")).set_index("fold")
    assert normalized.loc[1, "accuracy"] == pytest.approx(2 / 3)

    renamed = df.rename(columns={"answer": "pred", "gold": "truth"})
    assert breakdown(renamed, ["fold"], pred_col="pred", gold_col="truth").equals(by_fold)


def test_majority_baseline_picks_the_per_type_majority() -> None:
    train = pd.DataFrame(
        {
            "question": [
                "How many cats?",
                "How many dogs?",
                "How many cars?",
                "What color is it?",
                "What color is the sky?",
                "Is there a cat?",
                "Is there a dog?",
                "Is there a car?",
            ],
            "answer": ["2", "2", "1", "red", "blue", "no", "no", "yes"],
        }
    )
    val = pd.DataFrame(
        {"question": ["How many birds?", "What color is the car?", "Is there a bird?", "Why?"]}, index=[9, 8, 7, 6]
    )
    pred = majority_baseline(train, val)
    # 'what color' ties red/blue: the smaller string wins; 'other' is unseen: the overall majority ('2' ties 'no')
    assert pred.tolist() == ["2", "blue", "no", "2"]
    assert pred.index.tolist() == [9, 8, 7, 6] and pred.name == "answer"
    assert exact_accuracy(pred, ["2", "red", "no", "yes"]) == 0.5

    q = train.rename(columns={"question": "q", "answer": "a"})
    assert majority_baseline(q, val.rename(columns={"question": "q"}), "q", "a").tolist() == pred.tolist()
