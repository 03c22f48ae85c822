"""Submissions: every validation rejection, join by ID, nothing written when invalid, leaderboard ranking."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.errors import CompetitionError
from competition.io import markdown_table
from competition.submit import (
    LEADERBOARD_COLUMNS,
    SubmissionError,
    leaderboard,
    read_submission,
    record_public,
    validate_file,
    validate_submission,
    write_submission,
)

IDS = [f"TEST_{i:03d}" for i in range(6)]
ANSWERS = ["2", "red", "none", "NA", "circle", "yes"]


@pytest.fixture
def sample() -> pd.DataFrame:
    return pd.DataFrame({"ID": IDS, "answer": ["0"] * len(IDS)})


@pytest.fixture
def good() -> pd.DataFrame:
    return pd.DataFrame({"ID": IDS, "answer": ANSWERS})


def answers(ids: list[str] = IDS, values: list[str] = ANSWERS) -> pd.Series:
    return pd.Series(values, index=ids)


def put(col: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row, col] = value
        return df

    return fn


REJECTIONS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = {
    "missing ID": (lambda d: d.drop(index=[2, 4]).reset_index(drop=True), "2 sample IDs missing, first 'TEST_002'"),
    "extra ID": (
        lambda d: pd.concat([d, pd.DataFrame({"ID": ["TEST_999"], "answer": ["x"]})], ignore_index=True),
        "line 8, column 'ID': ID 'TEST_999' is not in the sample (1 extra ID)",
    ),
    "duplicated ID": (put("ID", 4, "TEST_001"), "line 6, column 'ID': duplicate ID 'TEST_001' (first on line 3)"),
    "empty answer": (put("answer", 3, ""), "line 5, column 'answer': empty or NaN answer for ID 'TEST_003'"),
    "whitespace answer": (put("answer", 0, "   "), "line 2, column 'answer': empty or NaN answer for ID 'TEST_000'"),
    "NaN answer (text)": (put("answer", 5, "NaN"), "line 7, column 'answer': empty or NaN answer for ID 'TEST_005'"),
    "NaN answer (value)": (put("answer", 1, np.nan), "line 3, column 'answer': empty or NaN answer for ID 'TEST_001'"),
    "wrong column names": (
        lambda d: d.rename(columns={"answer": "pred"}),
        "header is 'ID,pred' but the sample's is 'ID,answer'",
    ),
    "wrong column order": (
        lambda d: d[["answer", "ID"]],
        "header is 'answer,ID' but the sample's is 'ID,answer' (same names, wrong order)",
    ),
    "wrong row order": (
        lambda d: d.iloc[[0, 2, 1, 3, 4, 5]].reset_index(drop=True),
        "line 3, column 'ID': ID 'TEST_002' is out of order (the sample has 'TEST_001' on that line)",
    ),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_validate_rejects_with_clear_message(case: str, sample: pd.DataFrame, good: pd.DataFrame) -> None:
    breaker, message = REJECTIONS[case]
    with pytest.raises(SubmissionError) as err:
        validate_submission(breaker(good.copy()), sample, name="sub.csv")
    assert isinstance(err.value, CompetitionError) and str(err.value) == f"sub.csv: {message}"


def test_valid_submission_passes(sample: pd.DataFrame, good: pd.DataFrame) -> None:
    validate_submission(good, sample)


def test_validate_file_reads_text_and_names_the_file(tmp_path: Path, sample: pd.DataFrame, good: pd.DataFrame) -> None:
    sample.to_csv(tmp_path / "sample.csv", index=False)
    (tmp_path / "ok.csv").write_text("ID,answer\n" + "".join(f"{i},{a}\n" for i, a in zip(IDS, ANSWERS, strict=True)))
    assert validate_file(tmp_path / "ok.csv", tmp_path / "sample.csv")["answer"].tolist() == ANSWERS
    good.assign(answer=["x", "x", "", "x", "x", "x"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SubmissionError, match=r"bad\.csv: line 4, column 'answer'.*TEST_002"):
        validate_file(tmp_path / "bad.csv", tmp_path / "sample.csv")
    with pytest.raises(SubmissionError, match=r"nope\.csv: file not found"):
        validate_file(tmp_path / "nope.csv", tmp_path / "sample.csv")


def test_shuffled_answers_are_joined_by_id(tmp_path: Path, sample: pd.DataFrame) -> None:
    order = [5, 2, 0, 4, 1, 3]
    shuffled = answers([IDS[i] for i in order], [ANSWERS[i] for i in order])
    path = write_submission(shuffled, sample, tmp_path, "vote", {"cv": 0.5}, stamp="20250101-000000")
    assert path == tmp_path / "20250101-000000-vote.csv"
    sub = read_submission(path)
    assert sub["ID"].tolist() == IDS and sub["answer"].tolist() == ANSWERS


def test_none_and_na_answers_survive_round_trip(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = write_submission(answers(), sample, tmp_path, "rt", {"cv": 0.5})
    sub = read_submission(path)
    assert sub.loc[sub["ID"] == "TEST_002", "answer"].item() == "none"
    assert sub.loc[sub["ID"] == "TEST_003", "answer"].item() == "NA"
    validate_submission(sub, sample, name=str(path))


WRITE_REJECTIONS: dict[str, tuple[pd.Series, str]] = {
    "missing ID": (answers(IDS[:-1], ANSWERS[:-1]), "1 sample ID missing, first 'TEST_005'"),
    "extra ID": (answers([*IDS, "TEST_999"], [*ANSWERS, "x"]), "'TEST_999' is not in the sample"),
    "duplicated ID": (answers([*IDS, "TEST_003"], [*ANSWERS, "x"]), "duplicate ID 'TEST_003'"),
    "NaN answer": (answers(IDS, [*ANSWERS[:-1], None]), "empty or NaN answer for ID 'TEST_005'"),
}


@pytest.mark.parametrize("case", list(WRITE_REJECTIONS))
def test_nothing_written_when_invalid(case: str, tmp_path: Path, sample: pd.DataFrame) -> None:
    series, needle = WRITE_REJECTIONS[case]
    out = tmp_path / "submissions"
    with pytest.raises(SubmissionError, match=needle) as err:
        write_submission(series, sample, out, "bad", {"cv": 0.5}, stamp="20250101-000000")
    assert "20250101-000000-bad.csv" in str(err.value)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "with space"])
def test_unsafe_name_refused(name: str, tmp_path: Path, sample: pd.DataFrame) -> None:
    with pytest.raises(SubmissionError, match="not a safe file name"):
        write_submission(answers(), sample, tmp_path / "out", name, {"cv": 0.5})
    assert not (tmp_path / "out").exists()


def test_same_stamp_and_name_not_overwritten(tmp_path: Path, sample: pd.DataFrame) -> None:
    write_submission(answers(), sample, tmp_path, "a", {"cv": 0.5}, stamp="20250101-000000")
    with pytest.raises(SubmissionError, match="already exists"):
        write_submission(answers(), sample, tmp_path, "a", {"cv": 0.9}, stamp="20250101-000000")
    assert json.loads((tmp_path / "20250101-000000-a.json").read_text())["cv"] == 0.5


def test_sidecar_holds_meta(tmp_path: Path, sample: pd.DataFrame) -> None:
    meta = {"members": ["f0", "f1"], "weights": np.array([0.25, 0.75]), "cv": np.float64(0.7), "config_hash": "abc"}
    path = write_submission(answers(), sample, tmp_path, "vote", {**meta, "method": "fuzzy"}, stamp="20250101-000000")
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["weights"] == [0.25, 0.75] and info["cv"] == 0.7 and info["method"] == "fuzzy"
    assert info["name"] == "vote" and info["file"] == path.name and info["created"]


def test_leaderboard_ranked_by_cv_with_public_and_gap(tmp_path: Path, sample: pd.DataFrame) -> None:
    def write(name: str, cv: float, created: str) -> Path:
        meta = {"cv": cv, "method": "vote", "members": ["a", "b"], "created": created}
        return write_submission(answers(), sample, tmp_path, name, meta, stamp=created[:8] + "-000000")

    low = write("low", 0.60, "20250101T00")
    high = write("high", 0.80, "20250102T00")
    tie_late = write("tie-late", 0.70, "20250104T00")
    write("tie-early", 0.70, "20250103T00")
    board = leaderboard(tmp_path)
    assert list(board.columns) == ["rank", "file", "name", "cv", "public", "gap", "held_out", "method", "members", "created"]
    assert board["name"].tolist() == ["high", "tie-early", "tie-late", "low"]
    assert board["rank"].tolist() == [1, 2, 3, 4] and board["public"].isna().all()
    assert pd.read_csv(tmp_path / "leaderboard.csv")["name"].tolist() == board["name"].tolist()

    record_public(high, 0.75)
    record_public(low, 0.65)
    board = leaderboard(tmp_path).set_index("name")
    assert board.loc["high", "public"] == 0.75 and board.loc["high", "gap"] == pytest.approx(-0.05)
    assert board.loc["low", "gap"] == pytest.approx(0.05) and np.isnan(board.loc["tie-late", "gap"])
    assert board.loc["high", "members"] == "a, b" and board.loc["high", "file"] == high.name
    saved = pd.read_csv(tmp_path / "leaderboard.csv").set_index("name")
    assert saved.loc["high", "public"] == 0.75 and saved.loc["low", "rank"] == 4
    md = (tmp_path / "leaderboard.md").read_text().splitlines()
    assert md[0].startswith("| rank | file | name | cv | public | gap |") and len(md) == 6
    assert md[2].startswith(f"| 1 | {high.name} | high | 0.8000 | 0.7500 | -0.0500 |")
    assert tie_late.name in md[4]


def test_record_public_refuses_file_without_sidecar(tmp_path: Path, good: pd.DataFrame) -> None:
    path = tmp_path / "hand-made.csv"
    good.to_csv(path, index=False)
    with pytest.raises(SubmissionError, match=r"hand-made\.csv: no sidecar hand-made\.json"):
        record_public(path, 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hand-made.csv"]


def test_record_public_refuses_non_number(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = write_submission(answers(), sample, tmp_path, "a", {"cv": 0.5})
    with pytest.raises(SubmissionError, match="public score: must be a finite number"):
        record_public(path, float("nan"))


def test_submission_takes_the_samples_header_rows_and_other_cells(tmp_path: Path) -> None:
    usage = ["Public", "Private"] * 3
    sample = pd.DataFrame({"answer": ["yes"] * 6, "Usage": usage, "ID": IDS[::-1]})
    sample.to_csv(tmp_path / "sample.csv", index=False)
    path = write_submission(answers(), sample, tmp_path / "out", "vote", {"cv": 0.5})
    sub = validate_file(path, tmp_path / "sample.csv")
    assert sub.columns.tolist() == ["answer", "Usage", "ID"]
    assert (
        sub["ID"].tolist() == IDS[::-1] and sub["Usage"].tolist() == usage and sub["answer"].tolist() == ANSWERS[::-1]
    )


def test_validate_rejects_a_changed_cell_outside_the_answer_column() -> None:
    sample = pd.DataFrame({"ID": IDS, "Usage": ["Public"] * 6, "answer": ["0"] * 6})
    sub = sample.assign(answer=ANSWERS)
    validate_submission(sub, sample, name="sub.csv")
    sub.loc[3, "Usage"] = "Private"
    message = "sub.csv: line 5, column 'Usage': 'Private' differs from the sample's 'Public'"
    with pytest.raises(SubmissionError, match=f"^{re.escape(message)}$"):
        validate_submission(sub, sample, name="sub.csv")


def test_names_stamps_and_existing_files(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = write_submission(answers(), sample, tmp_path, "a" * 84, {"cv": 0.5})  # stamp + name: 100 characters
    assert re.fullmatch(r"\d{8}-\d{6}-a{84}\.csv", path.name)
    for name, stamp in (("a" * 85, None), ("a", "2025/01")):
        with pytest.raises(SubmissionError, match="is not a safe file name"):
            write_submission(answers(), sample, tmp_path, name, {"cv": 0.5}, stamp=stamp)
    (tmp_path / "20250101-000000-json.json").write_text("{}")
    (tmp_path / "20250101-000000-csv.csv").write_text("")
    for name in ("json", "csv"):
        with pytest.raises(SubmissionError, match=f"20250101-000000-{name}.csv: already exists; choose another name"):
            write_submission(answers(), sample, tmp_path, name, {"cv": 0.5}, stamp="20250101-000000")


@pytest.mark.parametrize("cv", [True, "0.5", float("inf")])
def test_a_cv_that_is_not_a_finite_number_is_refused(cv: object, tmp_path: Path, sample: pd.DataFrame) -> None:
    message = f"{tmp_path / '20250101-000000-a.json'}: 'cv': must be a finite number, got {cv!r}"
    with pytest.raises(SubmissionError, match=f"^{re.escape(message)}$"):
        write_submission(answers(), sample, tmp_path, "a", {"cv": cv}, stamp="20250101-000000")
    assert not any(tmp_path.iterdir())


def test_read_submission_keeps_text_and_names_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes("\ufeffID,answer\nTEST_000,007\nTEST_001,\n".encode())
    sub = read_submission(path)
    assert sub.columns.tolist() == ["ID", "answer"] and sub["answer"].tolist() == ["007", ""]
    path.write_text("ID,answer\nTEST_000,red\nTEST_001,red,blue\n")
    with pytest.raises(SubmissionError, match=rf"^{re.escape(str(path))}: cannot parse CSV: Error tokenizing data"):
        read_submission(path)
    path.write_text("")
    with pytest.raises(SubmissionError, match=rf"^{re.escape(str(path))}: cannot parse CSV: No columns to parse"):
        read_submission(path)


def test_validate_file_with_named_columns_refuses_a_duplicated_sample_id(tmp_path: Path) -> None:
    (tmp_path / "sample.csv").write_text("qid,label\nq1,x\nq2,x\n")
    (tmp_path / "sub.csv").write_text("qid,label\nq1,red\nq2,2\n")
    assert validate_file(tmp_path / "sub.csv", tmp_path / "sample.csv", "qid", "label")["label"].tolist() == [
        "red",
        "2",
    ]
    (tmp_path / "sample.csv").write_text("qid,label\nq1,x\nq1,x\n")
    with pytest.raises(
        CompetitionError, match=r"sample\.csv: line 3, column 'qid': duplicate ID 'q1' \(first on line 2\)"
    ):
        validate_file(tmp_path / "sub.csv", tmp_path / "sample.csv", "qid", "label")


def sidecar(folder: Path, stem: str, info: object) -> None:
    """A hand-made submission: an empty CSV and its sidecar."""
    (folder / f"{stem}.csv").write_text("")
    (folder / f"{stem}.json").write_text(json.dumps(info))


def test_leaderboard_defaults_ties_and_strays(tmp_path: Path) -> None:
    assert leaderboard(tmp_path).columns.tolist() == LEADERBOARD_COLUMNS and leaderboard(tmp_path).empty
    sidecar(tmp_path, "bare", {})
    sidecar(tmp_path, "b", {"cv": 0.5, "created": "2025", "members": "x+y"})
    sidecar(tmp_path, "a", {"cv": 0.5, "created": "2025", "name": "first", "method": "fuzzy", "members": ["m", 2]})
    (tmp_path / "stray.json").write_text("{}")  # no CSV: not a submission
    board = leaderboard(tmp_path)
    assert board["file"].tolist() == ["b.csv", "a.csv", "bare.csv"] and board["rank"].tolist() == [1, 2, 3]
    assert board["name"].tolist() == ["b", "first", "bare"] and board["method"].tolist() == ["", "fuzzy", ""]
    assert board["members"].tolist() == ["x+y", "m, 2", ""] and board["created"].tolist() == ["2025", "2025", ""]
    assert np.isnan(board.loc[2, "cv"]) and np.isnan(board.loc[2, "public"])


def test_a_vote_that_only_ties_its_best_member_ranks_below_it(tmp_path: Path) -> None:
    sidecar(tmp_path, "vote", {"cv": 0.54, "created": "2025-01", "members": ["p/greedy", "p/beam3", "p/vocab"]})
    sidecar(tmp_path, "member", {"cv": 0.54, "created": "2025-02", "members": ["p/beam3"]})
    sidecar(tmp_path, "better-vote", {"cv": 0.55, "created": "2025-03", "members": ["p/greedy", "p/beam3"]})
    assert leaderboard(tmp_path)["name"].tolist() == ["better-vote", "member", "vote"]


@pytest.mark.parametrize(("text", "message"), [("{", "unreadable sidecar"), ("[1]", "sidecar is not a JSON object")])
def test_leaderboard_names_a_bad_sidecar(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.csv").write_text("")
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(SubmissionError, match=rf"^{re.escape(str(tmp_path / 'x.json'))}: {message}"):
        leaderboard(tmp_path)


def test_markdown_table_formats_floats_blanks_nan_and_escapes_pipes() -> None:
    df = pd.DataFrame({"name": ["a|b", "c"], "cv": [0.123456, float("nan")], "rank": [1, 2]})
    assert markdown_table(df) == "| name | cv | rank |\n| --- | --- | --- |\n| a\\|b | 0.1235 | 1 |\n| c |  | 2 |\n"


def test_record_public_needs_a_csv_and_a_number(tmp_path: Path, sample: pd.DataFrame) -> None:
    path = write_submission(answers(), sample, tmp_path, "a", {"cv": 0.5, "where": tmp_path})
    assert json.loads(path.with_suffix(".json").read_text())["where"] == str(tmp_path)
    for wrong in (path.with_suffix(".json"), tmp_path / "gone.csv"):
        with pytest.raises(SubmissionError, match=rf"^{re.escape(str(wrong))}: submission CSV not found$"):
            record_public(wrong, 0.5)
    with pytest.raises(SubmissionError, match="public score: must be a finite number, got True"):
        record_public(path, True)  # type: ignore[arg-type]


def test_ranked_rows_hold_at_most_k_distinct_answers(sample: pd.DataFrame, tmp_path: Path) -> None:
    ranked = pd.Series([("red", "blue", "2")] * len(IDS), index=IDS)
    path = write_submission(ranked, sample, tmp_path, "top3", {"cv": 0.5}, top_k=3)
    assert read_submission(path)["answer"].tolist() == ["red blue 2"] * len(IDS)
    with pytest.raises(SubmissionError, match=r"line 2, column 'answer': 'red blue 2' .* 3 answers, at most 2"):
        validate_file(path, write_sample(sample, tmp_path), top_k=2)
    twice = pd.DataFrame({"ID": IDS, "answer": ["red red"] * len(IDS)})
    with pytest.raises(SubmissionError, match="an answer repeated"):
        validate_submission(twice, sample, top_k=3)
    with pytest.raises(SubmissionError, match="'fire hydrant' is not one word"):
        write_submission(pd.Series([("fire hydrant", "dog")] * len(IDS), index=IDS), sample, tmp_path, "bad", {},
                         top_k=3)  # fmt: skip


def write_sample(sample: pd.DataFrame, folder: Path) -> Path:
    path = folder / "sample.csv"
    sample.to_csv(path, index=False)
    return path


def test_vqa_results_json_is_written_beside_and_validated(sample: pd.DataFrame, tmp_path: Path) -> None:
    answers = pd.Series(ANSWERS, index=IDS)
    path = write_submission(answers, sample, tmp_path / "subs", "res", {"cv": 0.5}, results=True)
    results = path.with_name(path.stem + ".vqa.json")
    assert json.loads(results.read_text())[0] == {"question_id": IDS[0], "answer": ANSWERS[0]}
    assert validate_file(results, write_sample(sample, tmp_path))["answer"].tolist() == ANSWERS
    assert leaderboard(tmp_path / "subs")["file"].tolist() == [path.name]  # the results file is no leaderboard row
    for bad, message in [([{"question_id": IDS[0]}], "element 0: expected"), ({"a": 1}, "is not a JSON list"),
                         ([{"question_id": i, "answer": "x"} for i in [*IDS, "X"]], "'X' is not in the sample")]:  # fmt: skip
        broken = tmp_path / "broken.vqa.json"
        broken.write_text(json.dumps(bad))
        with pytest.raises(SubmissionError, match=re.escape(message)):
            validate_file(broken, tmp_path / "sample.csv")
