"""Metrics: question types, exact / normalized / VQA accuracy, breakdowns, the majority baseline; and the local
CV's use of them (competition.cv: the baseline, the exact column, the plot's colours)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from competition.config import load_config
from competition.cv import BASELINE_STYLE, baseline_frame, cv_tables, member_colors, oof_frame, plot
from competition.data import Competition
from competition.metrics import (
    QUESTION_TYPES,
    UNMATCHED,
    exact_matches,
    majority_baseline,
    question_type,
    question_types,
)
from competition.normalize import AnswerNormalizer
from competition.predictions import file_for, write_canonical

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


# Local CV (competition.cv): two folds of a tiny competition, no images needed.
CV_TRAIN = pd.DataFrame(
    {
        "id": ["T0", "T1", "T2", "T3", "T4", "T5"],
        "image_id": ["a", "a", "b", "c", "c", "d"],
        "question": ["Is there a cat?", "How many cats?", "Is there a dog?"] * 2,
        "answer": [" Yes.", "2 ", "YES", "yes", "2", "yes"],  # fold 0 spells its answers unlike fold 1
    }
)
CV_FOLDS = pd.DataFrame({"id": CV_TRAIN["id"], "image_id": CV_TRAIN["image_id"], "fold": [0, 0, 0, 1, 1, 1]})


def cv_setup(tmp_path: Path) -> tuple:
    cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}", "folds.k=2"])
    comp = Competition(CV_TRAIN, CV_TRAIN.iloc[:0], CV_TRAIN[["id", "answer"]].iloc[:0], {}, {}, cfg.data)
    return cfg, comp


def test_cv_baseline_is_scored_with_the_answer_normalizer(tmp_path: Path) -> None:
    """Each fold's majority answer, normalized like the gold answers: right whatever the spelling."""
    cfg, comp = cv_setup(tmp_path)
    base = baseline_frame(cfg, comp, CV_FOLDS)
    assert base["id"].tolist() == ["T0", "T1", "T2", "T3", "T4", "T5"]
    assert base["qtype"].tolist() == ["is there a", "how many", "is there a"] * 2
    assert base["correct"].tolist() == [True] * 6


def test_cv_exact_strips_both_sides_and_tables(tmp_path: Path) -> None:
    """oof_frame's exact column is the competition's metric (both stripped); cv_tables' numbers."""
    cfg, comp = cv_setup(tmp_path)
    norm = AnswerNormalizer.of(cfg, comp)
    rows = []
    for decoding, raws in {"greedy": ["Yes.", "2", "YES"], "beam": ["yes", "two", "no"]}.items():
        rows += [
            {"id": i, "fold": 0, "split": "oof", "prompt": "short_answer", "decoding": decoding, "raw": r,
             "answer": norm(pd.Series([r]))[0], "logprob": -1.0, "alternatives": [["No.", -2.5], ["Two", -3.0]]}
            for i, r in zip(["T0", "T1", "T2"], raws, strict=True)
        ]  # fmt: skip
    write_canonical(pd.DataFrame(rows), file_for(cfg, 0, "oof"))
    df = oof_frame(cfg, comp, CV_FOLDS).set_index(["member", "id"])
    assert df["alternatives"].map(list).tolist() == [[("no", -2.5), ("2", -3.0)]] * 6  # normalized like the answers
    assert df.loc["short_answer/greedy", "exact"].tolist() == [True, True, True]
    assert df.loc["short_answer/beam", "exact"].tolist() == [False, False, False]
    assert df.loc["short_answer/beam", "correct"].tolist() == [True, True, False]
    tables = cv_tables(df.reset_index(), baseline_frame(cfg, comp, CV_FOLDS))
    assert tables["baseline"] == 1.0  # over the questions that have predictions
    assert [(m["member"], m["accuracy"], m["exact"]) for m in tables["members"]] == [
        ("short_answer/greedy", 1.0, 1.0),
        ("short_answer/beam", pytest.approx(2 / 3), 0.0),
    ]
    per_type = {r["qtype"]: r for r in tables["per_type"]}
    assert per_type["is there a"]["n"] == 2 and per_type["is there a"]["short_answer/beam"] == 0.5


@pytest.mark.parametrize("n_members", [1, 9, 10, 25])
def test_cv_plot_gives_the_baseline_its_own_style(
    n_members: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the member count: the baseline's bars are hatched grey, every member has a colour of its own."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "close", lambda *args: None)  # keep the figure to look at it
    members = [f"prompt{i}/greedy" for i in range(n_members)]
    per_type = [{"qtype": t, "n": 4, "baseline": 0.3, **dict.fromkeys(members, 0.5)} for t in ("how many", "what")]
    plot({"per_type": per_type}, tmp_path / "cv.png")
    bars = {c.get_label(): c.patches for c in plt.gcf().axes[0].containers}
    monkeypatch.undo()
    plt.close("all")
    faces = {label: matplotlib.colors.to_hex(p[0].get_facecolor()) for label, p in bars.items()}
    assert faces.pop("baseline") == matplotlib.colors.to_hex(BASELINE_STYLE["color"])
    assert all(p.get_hatch() == BASELINE_STYLE["hatch"] for p in bars["baseline"])
    assert sorted(faces) == sorted(members) and len(set(faces.values())) == n_members
    assert matplotlib.colors.to_hex(BASELINE_STYLE["color"]) not in faces.values()
    assert not any(p.get_hatch() for m in members for p in bars[m])
    assert (tmp_path / "cv.png").stat().st_size > 1000


def test_member_colors_are_distinct_and_never_grey() -> None:
    for n in range(1, 40):
        colors = [matplotlib.colors.to_rgb(c) for c in member_colors(n)]
        assert len(set(colors)) == n and not any(r == g == b for r, g, b in colors)
