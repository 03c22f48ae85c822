"""Metrics: question types, exact matches, the majority baseline."""

from __future__ import annotations

import pandas as pd
import pytest

from competition.metrics import (
    QUESTION_TYPES,
    UNMATCHED,
    exact_matches,
    majority_baseline,
    question_type,
    question_types,
)

# GT-Vision-Lab/VQA, QuestionTypes/mscoco_question_types.txt, in its order.
OFFICIAL_TYPES = """how many|is the|what|what color is the|what is the|is this|is this a|what is|are the|what kind of|
is there a|what type of|is it|what are the|where is the|is there|does the|what color are the|are these|are there|which|
is|what is the man|is the man|are|how|does this|what is on the|what does the|how many people are|what is in the|
what is this|do|what are|are they|what time|what sport is|are there any|is he|what color is|why|where are the|
what color|who is|what animal is|is the woman|is this an|do you|how many people are in|what room is|has|
is this person|what is the woman|can you|why is the|is the person|what is the color of the|what is the person|could|
was|is that a|what number is|what is the name|what brand""".replace("\n", "").split("|")


def test_question_types_are_the_vqa_v2_list() -> None:
    assert QUESTION_TYPES == tuple(OFFICIAL_TYPES) and len(set(QUESTION_TYPES)) == 64
    assert UNMATCHED == "none of the above"  # VQA's 65th type


@pytest.mark.parametrize("qtype", OFFICIAL_TYPES)
def test_every_type_is_its_own_longest_prefix(qtype: str) -> None:
    assert question_type(f"{qtype} xyzzy?") == qtype
    assert question_type(f"  {qtype.upper()}?") == qtype
    assert question_type(f"{qtype}xyzzy") in {UNMATCHED, *OFFICIAL_TYPES} - {qtype}  # words, not characters


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("How many circles are there?", "how many"),
        ("  HOW   many objects are in the image?", "how many"),
        ("How many?", "how many"),
        ("How many people are in the room?", "how many people are in"),
        ("How many people are there?", "how many people are"),
        ("How tall is it?", "how"),
        ("What color is the square?", "what color is the"),
        ("What color is it?", "what color is"),
        ("What color are the cars?", "what color are the"),
        ("What color?", "what color"),
        ("What colour is the bus?", "what"),  # the list spells 'color'
        ("What is the color of the car?", "what is the color of the"),
        ("What shape is the red object?", "what"),
        ("Where is the blue cross?", "where is the"),
        ("Where was it?", UNMATCHED),
        ("Is there a green triangle?", "is there a"),
        ("Is there any dog?", "is there"),
        ("Are there any dogs?", "are there any"),
        ("Is the red circle large or small?", "is the"),
        ("Is the man happy?", "is the man"),
        ("Is this an apple?", "is this an"),
        ("Is this animal a dog?", "is this"),
        ("Is it raining?", "is it"),
        ("Is she happy?", "is"),
        ("Does the man wear a hat?", "does the"),
        ("Can you see a tree?", "can you"),
        ("Can he swim?", UNMATCHED),
        ("What is this?", "what is this"),
        ("What's on the table?", "what is on the"),
        ("What's that?", "what is"),
        ("Is the man's hat red?", "is the man"),  # as a prefix of letters would have it
        ("What\u2019s the man holding?", "what is the man"),
        ("Who's there?", "who is"),
        ("Why's it red?", "why"),  # 'why is' is only on the way to 'why is the'
        ("What are they eating?", "what are"),
        ("Why is the sky blue?", "why is the"),
        ("Whatever happened?", UNMATCHED),
        ("", UNMATCHED),
        ("¿Qué?", UNMATCHED),
    ],
)
def test_question_type(question: str, expected: str) -> None:
    assert question_type(question) == expected


def test_question_type_list_is_a_parameter() -> None:
    types = ["what shape", "what", "is there"]
    assert question_type("What shape is it?", types) == "what shape"
    assert question_type("What color is it?", types) == "what"
    assert question_type("What's that?", types) == "what"
    assert question_type("Is it?", types) == UNMATCHED
    s = pd.Series(["What shape is it?", "Is there a cat?", "How many?"])
    assert question_types(s, types).tolist() == ["what shape", "is there", UNMATCHED]


def test_question_types_vectorised() -> None:
    s = pd.Series(["How many cats?", "Is there a dog?", "How many cats?", None], index=[5, 6, 7, 8])
    out = question_types(s)
    assert out.tolist() == ["how many", "is there a", "how many", UNMATCHED]
    assert out.index.tolist() == [5, 6, 7, 8] and out.name == "qtype"


def test_exact_matches_strip_both_sides_and_nothing_else() -> None:
    assert exact_matches([" yes", "no ", "2"], ["yes\n", "No", "two"]).tolist() == [True, False, False]
    assert exact_matches(pd.Series(["a", "b"], index=[10, 20]), pd.Series(["a", "c"], index=[20, 10])).tolist() == [
        True,
        False,
    ]
    with pytest.raises(ValueError, match="2 predictions for 1"):
        exact_matches(["a", "b"], ["a"])


def test_majority_baseline_picks_the_per_type_majority() -> None:
    train = pd.DataFrame(
        {
            "question": [
                "How many cats?",
                "How many dogs?",
                "How many cars?",
                "What color is the sea?",
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
    # 'what color is the' ties red/blue: the smaller string wins; 'why' is unseen: the overall majority ('2' ties 'no')
    assert pred.tolist() == ["2", "blue", "no", "2"]
    assert pred.index.tolist() == [9, 8, 7, 6] and pred.name == "answer"
    assert exact_matches(pred, ["2", "red", "no", "yes"]).mean() == 0.5
