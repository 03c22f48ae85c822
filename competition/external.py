"""External members: a submission CSV or an original-LLaVA result.jsonl as vote rows (they have no OOF, so they
join the test vote at a given weight).

    python -m competition ensemble -c configs/demo.yaml     # with ensemble.external: [{path: ..., name: ...}]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from competition.data import ANSWER, ID, read_answers
from competition.errors import DataError


def load_external(path: str | Path, member: str, id_col: str = "ID", answer_col: str = ANSWER) -> pd.DataFrame:
    """An external member's rows (`id, member, answer, logprob=NaN`) from a submission CSV or LLaVA result.jsonl."""
    path = Path(path)
    if path.suffix == ".jsonl":
        ids, answers = _read_llava_jsonl(path)
    else:
        df = read_answers(path, id_col, answer_col)
        ids, answers = df[ID].tolist(), df[ANSWER].tolist()
    return pd.DataFrame({ID: ids, "member": member, ANSWER: answers, "logprob": np.nan})


def _read_llava_jsonl(path: Path) -> tuple[list[str], list[str]]:
    """(ids, answers) of a LLaVA result.jsonl: one {"question_id": ..., "text": ...} per line; blank lines skipped."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    first_line: dict[str, int] = {}
    answers: list[str] = []
    with path.open("rb") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                qid, text = _llava_record(line, path, n)
                if qid in first_line:
                    raise DataError(
                        f"{path}: line {n}: duplicate question_id '{qid}' (first on line {first_line[qid]})"
                    )
                first_line[qid] = n
                answers.append(text)
    return list(first_line), answers


def _llava_record(line: bytes, path: Path, n: int) -> tuple[str, str]:
    """(question_id, text) of one result.jsonl line; a DataError names the file and line."""
    try:
        rec = json.loads(line)
    except ValueError:
        raise DataError(f"{path}: line {n}: invalid JSON: {line[:60].decode('utf-8', 'replace')!r}") from None
    if not isinstance(rec, dict) or "question_id" not in rec or "text" not in rec:
        raise DataError(f"{path}: line {n}: expected an object with 'question_id' and 'text'")
    qid, text = rec["question_id"], rec["text"]
    if isinstance(qid, bool) or not isinstance(qid, str | int) or not str(qid).strip():
        raise DataError(f"{path}: line {n}, 'question_id': empty or not a string/integer")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{path}: line {n}, 'text': empty or not a string")
    return str(qid), text
