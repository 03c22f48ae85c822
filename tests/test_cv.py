"""The local CV (competition.cv): the baseline scored with the answer normalizer, the exact column, the plot's
colours."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from competition.config import load_config
from competition.cv import BASELINE_STYLE, baseline_frame, cv_tables, member_colors, oof_frame, plot
from competition.data import Competition
from competition.normalize import AnswerNormalizer
from competition.predictions import file_for, write_canonical

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
