"""External members: another tool's submission CSV or an original-LLaVA result.jsonl, read into the vote's rows."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from competition.errors import CompetitionError, DataError
from competition.external import load_external

BAD_RECORD = "line 1: expected an object with 'question_id' and 'text'"
BAD_QID = "line 1, 'question_id': empty or not a string/integer"
BAD_TEXT = "line 1, 'text': empty or not a string"
LONG = '{"question_id": "a", "text": "' + "x" * 80


def refused(error: type[Exception], message: str, fn: Callable[..., object], *args: object, **kw: object) -> None:
    """`fn(*args, **kw)` raises `error` with exactly `message`."""
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        fn(*args, **kw)


def test_load_external_submission_csv(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    path.write_text("ID,answer\nTEST_0,none\nTEST_1,NA\nTEST_2,0\n")
    ext = load_external(path, "ext/public_notebook")
    assert ext.columns.tolist() == ["id", "member", "answer", "logprob"]
    assert ext["id"].tolist() == ["TEST_0", "TEST_1", "TEST_2"]
    assert ext["answer"].tolist() == ["none", "NA", "0"]
    assert (ext["member"] == "ext/public_notebook").all() and ext["logprob"].isna().all()


def test_load_external_llava_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "result.jsonl"
    path.write_text(
        '{"question_id": "TEST_0", "prompt": "Q", "text": "none", "answer_id": "x", "model_id": "llava"}\n'
        "\n"
        '{"question_id": 7, "text": "red"}\n'
    )
    ext = load_external(path, "ext/llava_seed")
    assert ext["id"].tolist() == ["TEST_0", "7"]
    assert ext["answer"].tolist() == ["none", "red"]
    assert ext["logprob"].isna().all()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("result.jsonl", '{"question_id": "a", "text": "x"}\n{"question_id": "b", "text": \n', r"line 2: invalid JSON"),
        ("result.jsonl", '{"question_id": "a"}\n', r"line 1: expected an object with 'question_id' and 'text'"),
        ("result.jsonl", '{"question_id": "a", "text": "x"}\n\n{"question_id": "a", "text": "y"}\n', r"line 3: dup"),
        ("result.jsonl", '{"question_id": "a", "text": null}\n', r"line 1, 'text': empty"),
        ("sub.csv", "ID,answer\nTEST_0,red\nTEST_1,red,extra\n", r"line 3"),
        ("sub.csv", "ID,answer\nTEST_0,red\nTEST_1,\n", r"line 3, column 'answer': empty"),
        ("sub.csv", "ID,prediction\nTEST_0,red\n", r"missing column 'answer'"),
    ],
)
def test_load_external_malformed_file_names_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CompetitionError, match=message) as err:
        load_external(path, "ext/bad")
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_load_external_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_external(tmp_path / "result.jsonl", "ext/x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5", BAD_RECORD),
        ('{"text": "x"}', BAD_RECORD),
        ('{"question_id": true, "text": "x"}', BAD_QID),
        ('{"question_id": 1.5, "text": "x"}', BAD_QID),
        ('{"question_id": " ", "text": "x"}', BAD_QID),
        ('{"question_id": "a", "text": " "}', BAD_TEXT),
        ('{"question_id": "a", "text": 7}', BAD_TEXT),
        (LONG, f"line 1: invalid JSON: {LONG[:60]!r}"),
        (
            '{"question_id": "a", "text": "x"}\n\n{"question_id": "a", "text": "y"}',
            "line 3: duplicate question_id 'a' (first on line 1)",
        ),
    ],
)
def test_llava_result_refusals_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "result.jsonl"
    path.write_text(text + "\n")
    refused(DataError, f"{path}: {message}", load_external, path, "ext/x")


def test_load_external_csv_with_named_columns_and_unique_ids(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    path.write_text("label,qid\nred,q1\n2,q2\n")
    ext = load_external(path, "ext/x", id_col="qid", answer_col="label")
    assert ext["id"].tolist() == ["q1", "q2"] and ext["answer"].tolist() == ["red", "2"]
    path.write_text("ID,answer\nTEST_0,red\nTEST_1,red\nTEST_0,blue\n")
    refused(
        DataError, f"{path}: line 4, column 'ID': duplicate ID 'TEST_0' (first on line 2)", load_external, path, "x"
    )
