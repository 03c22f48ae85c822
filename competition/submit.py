"""Write, validate and rank submissions: `<stamp>-<name>.csv` + `.json` sidecar, leaderboard by local CV.

python -m competition submit validate submissions/20250101-120000-vote.csv -c configs/demo.yaml
python -m competition submit validate submissions/20250101-120000-vote.vqa.json -c configs/demo_vqa.yaml
python -m competition submit leaderboard -c configs/demo.yaml
python -m competition submit record submissions/20250101-120000-vote.csv --public 0.8123 -c configs/demo.yaml
"""

from __future__ import annotations

import json
import math
import numbers
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from competition.data import MISSING_TEXT, check_unique, read_table
from competition.errors import CompetitionError
from competition.io import atomic_write_csv, atomic_write_json, atomic_write_text, markdown_table

RESULTS_SUFFIX = ".vqa.json"  # the VQA results file written beside a submission (data.submission_format: vqa_json)
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
LEADERBOARD_COLUMNS = ["rank", "file", "name", "cv", "public", "gap", "held_out", "method", "members", "created"]


class SubmissionError(CompetitionError):
    """A submission file, its sidecar or its contents are wrong."""


def _line(i: int) -> int:
    """CSV line number of 0-based data row i (the header is line 1)."""
    return i + 2


def _ids(n: int, what: str) -> str:
    """'1 extra ID' / '3 extra IDs'."""
    return f"{n} {what} ID{'s' * (n != 1)}"


def check_columns(sub: pd.DataFrame, sample: pd.DataFrame, name: str) -> None:
    """Refuse a header that is not exactly the sample's (same names, same order)."""
    found, expected = list(sub.columns), list(sample.columns)
    if found != expected:
        hint = " (same names, wrong order)" if sorted(map(str, found)) == sorted(map(str, expected)) else ""
        raise SubmissionError(
            f"{name}: header is '{','.join(map(str, found))}' but the sample's is '{','.join(expected)}'{hint}"
        )


def check_ids(sub: pd.DataFrame, sample: pd.DataFrame, id_col: str, name: str) -> None:
    """Refuse a duplicated, missing or extra ID, or IDs not in the sample's order."""
    ids, want = sub[id_col], sample[id_col]
    dup = ids.duplicated()
    if dup.any():
        i = int(dup.to_numpy().argmax())
        first = int((ids == ids.iloc[i]).to_numpy().argmax())
        raise SubmissionError(
            f"{name}: line {_line(i)}, column '{id_col}': duplicate ID '{ids.iloc[i]}' (first on line {_line(first)})"
        )
    missing = ~want.isin(ids)
    if missing.any():
        first = want[missing].iloc[0]
        raise SubmissionError(f"{name}: {_ids(int(missing.sum()), 'sample')} missing, first '{first}'")
    extra = ~ids.isin(want)
    if extra.any():
        i = int(extra.to_numpy().argmax())
        raise SubmissionError(
            f"{name}: line {_line(i)}, column '{id_col}': ID '{ids.iloc[i]}' is not in the sample "
            f"({_ids(int(extra.sum()), 'extra')})"
        )
    moved = np.flatnonzero(ids.to_numpy() != want.to_numpy())
    if len(moved):
        i = int(moved[0])
        raise SubmissionError(
            f"{name}: line {_line(i)}, column '{id_col}': ID '{ids.iloc[i]}' is out of order "
            f"(the sample has '{want.iloc[i]}' on that line)"
        )


def check_answers(sub: pd.DataFrame, id_col: str, answer_col: str, name: str) -> None:
    """Refuse an empty, whitespace-only or NaN answer, naming its line and ID."""
    answers = sub[answer_col]
    bad = answers.isna() | answers.astype(str).str.strip().str.lower().isin(MISSING_TEXT)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise SubmissionError(
            f"{name}: line {_line(i)}, column '{answer_col}': empty or NaN answer for ID '{sub[id_col].iloc[i]}'"
        )


def check_kept(sub: pd.DataFrame, sample: pd.DataFrame, answer_col: str, name: str) -> None:
    """Refuse a cell outside the answer column that differs from the sample's (rows already in its order)."""
    for col in sample.columns.drop(answer_col):
        found, expected = sub[col].astype(str).to_numpy(), sample[col].astype(str).to_numpy()
        changed = np.flatnonzero(found != expected)
        if len(changed):
            i = int(changed[0])
            raise SubmissionError(
                f"{name}: line {_line(i)}, column '{col}': '{found[i]}' differs from the sample's '{expected[i]}'"
            )


def check_ranked(sub: pd.DataFrame, id_col: str, answer_col: str, top_k: int, name: str) -> None:
    """Refuse a MAP@k cell of more than `top_k` space-separated answers or one answer twice."""
    for i, cell in enumerate(sub[answer_col].astype(str)):
        guesses = cell.split()
        if len(guesses) > top_k or len(set(guesses)) < len(guesses):
            why = f"{len(guesses)} answers, at most {top_k}" if len(guesses) > top_k else "an answer repeated"
            raise SubmissionError(f"{name}: line {_line(i)}, column '{answer_col}': '{cell}' for ID "
                                  f"'{sub[id_col].iloc[i]}' has {why}")  # fmt: skip


def validate_submission(sub: pd.DataFrame, sample: pd.DataFrame, id_col: str = "ID", answer_col: str = "answer",
                        name: str = "submission", top_k: int = 1) -> None:  # fmt: skip
    """Raise SubmissionError unless `sub` is the sample (columns, IDs, order, other cells) with every answer filled
    (MAP@k: up to `top_k` distinct space-separated answers)."""
    check_columns(sub, sample, name)
    check_ids(sub, sample, id_col, name)
    check_kept(sub, sample, answer_col, name)
    check_answers(sub, id_col, answer_col, name)
    if top_k > 1:
        check_ranked(sub, id_col, answer_col, top_k, name)


def read_results(path: Path) -> pd.DataFrame:
    """A VQA results file (`[{"question_id": ..., "answer": ...}, ...]`) as a frame of strings, `question_id, answer`;
    a SubmissionError names the first element that is not such an object."""
    results = read_json(path, list, "VQA results file")
    for i, r in enumerate(results):
        if not isinstance(r, dict) or set(r) != {"question_id", "answer"} or not isinstance(r["answer"], str):
            raise SubmissionError(f"{path}: element {i}: expected {{\"question_id\": ..., \"answer\": \"...\"}}, "
                                  f"got {json.dumps(r, ensure_ascii=False)[:80]}")  # fmt: skip
    return pd.DataFrame({"question_id": [str(r["question_id"]) for r in results],
                         "answer": [r["answer"] for r in results]})  # fmt: skip


def validate_results(path: Path, sample: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """Raise SubmissionError unless the VQA results file answers every sample ID once (any order), each non-empty."""
    res = read_results(path)
    order = res["question_id"].map(dict(zip(sample[id_col].astype(str), range(len(sample)), strict=True)))
    ranked = res.assign(_order=order.fillna(-1)).sort_values("_order", kind="stable").drop(columns="_order")
    named = ranked.rename(columns={"question_id": id_col}).set_axis(range(len(res)))
    check_ids(named, sample[[id_col]].astype(str), id_col, str(path))
    check_answers(named, id_col, "answer", str(path))
    return res


def results_json(sub: pd.DataFrame, id_col: str, answer_col: str) -> list[dict[str, Any]]:
    """The submission as VQA results: `question_id` (an integer where the ID is one), `answer`."""
    return [{"question_id": int(i) if str(i).isdigit() else i, "answer": a}
            for i, a in zip(sub[id_col], sub[answer_col], strict=True)]  # fmt: skip


def read_submission(path: str | Path) -> pd.DataFrame:
    """Read a submission CSV as strings with no NA guessing ('none' and 'NA' are answers, empty cells are '')."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise SubmissionError(f"{path}: cannot parse CSV: {str(e).splitlines()[0]}") from None


def validate_file(path: str | Path, sample_path: str | Path, id_col: str = "ID", answer_col: str = "answer",
                  top_k: int = 1) -> pd.DataFrame:  # fmt: skip
    """Read and validate a submission CSV (or a VQA results `.json`) against the sample submission; returns it."""
    sample_path = Path(sample_path)
    sample = read_table(sample_path, [id_col, answer_col])
    check_unique(sample, sample_path, id_col)
    if Path(path).suffix == ".json":
        return validate_results(Path(path), sample, id_col)
    sub = read_submission(path)
    validate_submission(sub, sample, id_col, answer_col, name=str(path), top_k=top_k)
    return sub


def join_answers(
    answers: pd.Series, sample: pd.DataFrame, id_col: str = "ID", answer_col: str = "answer"
) -> pd.DataFrame:
    """The sample with each ID's answer (joined by ID) in its answer column (ranked answers space-separated); IDs the
    sample lacks go last."""
    sub = pd.DataFrame({id_col: answers.index.to_numpy(), answer_col: [ranked_cell(i, a) for i, a in answers.items()]})
    rank = sub[id_col].map(dict(zip(sample[id_col], range(len(sample)), strict=True))).fillna(len(sample))
    sub = sub.iloc[np.argsort(rank.to_numpy(), kind="stable")]
    kept = sample.drop(columns=answer_col)
    return sub.merge(kept, on=id_col, how="left", validate="many_to_one")[list(sample.columns)]


def ranked_cell(id_: Any, answer: Any) -> str:
    """One answer as is; ranked answers (MAP@k) space-separated, refusing one that holds a space itself."""
    if not isinstance(answer, tuple | list):
        return answer
    spaced = [a for a in answer if len(str(a).split()) != 1]
    if spaced:
        raise SubmissionError(f"ID '{id_}': ranked answer '{spaced[0]}' is not one word, so the space-separated "
                              "row cannot hold it")  # fmt: skip
    return " ".join(map(str, answer))


def check_score(value: Any, what: str) -> float:
    """`value` as a float if it is a finite number, else a SubmissionError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise SubmissionError(f"{what}: must be a finite number, got {value!r}")
    return float(value)


def plain_json(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with numpy/pandas values as plain numbers and lists (anything else unknown as its str)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def write_submission(
    answers: pd.Series,
    sample: pd.DataFrame,
    out_dir: Path,
    name: str,
    meta: dict[str, Any],
    id_col: str = "ID",
    answer_col: str = "answer",
    stamp: str | None = None,
    top_k: int = 1,
    results: bool = False,
) -> Path:
    """Join `answers` (indexed by ID; MAP@k: tuples of up to `top_k` ranked answers) to the sample, validate, then
    write `<stamp>-<name>.csv` + `.json` (and the VQA results `<stamp>-<name>.vqa.json` with `results`); rerank.

    Nothing is written unless the submission is valid. Returns the CSV path.
    """
    now = datetime.now(UTC)
    stem = f"{stamp or now.strftime('%Y%m%d-%H%M%S')}-{name}"
    if not SAFE_NAME.fullmatch(name) or not SAFE_NAME.fullmatch(stem):
        raise SubmissionError(f"submission name '{stem}' is not a safe file name (letters, digits, '.', '_', '-')")
    path, sidecar = Path(out_dir) / f"{stem}.csv", Path(out_dir) / f"{stem}.json"
    if stamp is None and (path.exists() or sidecar.exists()):  # two runs in one second: the microseconds tell them apart
        stem = f"{now.strftime('%Y%m%d-%H%M%S-%f')}-{name}"
        path, sidecar = Path(out_dir) / f"{stem}.csv", Path(out_dir) / f"{stem}.json"
    if path.exists() or sidecar.exists():
        raise SubmissionError(f"{path}: already exists; choose another name")
    if meta.get("cv") is not None:
        check_score(meta["cv"], f"{sidecar}: 'cv'")
    sub = join_answers(answers, sample, id_col, answer_col)
    validate_submission(sub, sample, id_col, answer_col, name=str(path), top_k=top_k)
    info = plain_json({"created": now.isoformat(timespec="seconds"), **meta, "name": name, "file": path.name})
    if results:
        atomic_write_json(results_json(sub, id_col, answer_col), Path(out_dir) / f"{stem}{RESULTS_SUFFIX}")
    atomic_write_csv(sub, path)
    atomic_write_json(info, sidecar)
    write_leaderboard(out_dir)
    return path


def read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON sidecar at `path` as a dict."""
    return read_json(path, dict, "sidecar")


def read_json(path: Path, expected: type, what: str) -> Any:
    """The JSON value of the file if it is an `expected` (dict or list), else a SubmissionError naming `what`."""
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        raise SubmissionError(f"{path}: unreadable {what} ({e})") from None
    if not isinstance(value, expected):
        raise SubmissionError(f"{path}: {what} is not a JSON {'object' if expected is dict else 'list'}")
    return value


def check_one_competition(out_dir: str | Path, competition: str) -> None:
    """Refuse to rank beside submissions of another competition (another data folder or metric): their local CVs
    do not compare."""
    for sidecar in sorted(Path(out_dir).glob("*.json")):
        other = read_sidecar(sidecar).get("competition") if sidecar.with_suffix(".csv").is_file() else None
        if other not in (None, competition):
            raise SubmissionError(f"{out_dir}: holds submissions of {other} ({sidecar.name}); these are of "
                                  f"{competition}: give this config a workdir of its own")  # fmt: skip


def leaderboard_row(sidecar: Path) -> dict[str, Any]:
    """One leaderboard row from a sidecar; scores as floats (NaN when absent)."""
    info = read_sidecar(sidecar)
    members = info.get("members") or []
    cv, public, held_out = (float("nan") if info.get(k) is None else float(info[k]) for k in ("cv", "public", "held_out"))
    return {
        "file": sidecar.with_suffix(".csv").name,
        "name": info.get("name", sidecar.stem),
        "cv": cv,
        "public": public,
        "gap": public - cv,
        "held_out": held_out,
        "method": info.get("method", ""),
        "members": members if isinstance(members, str) else ", ".join(map(str, members)),
        "n_members": len(members) if isinstance(members, list) else 1,
        "created": info.get("created", ""),
    }


def leaderboard(out_dir: str | Path) -> pd.DataFrame:
    """Every submission in `out_dir` with a sidecar, ranked by local CV (best first). Ties go to fewer members
    (a vote that only ties its best member ranks below that member: ship the simpler one), then the earliest."""
    sidecars = [p for p in sorted(Path(out_dir).glob("*.json")) if p.with_suffix(".csv").is_file()]
    board = pd.DataFrame([leaderboard_row(p) for p in sidecars], columns=[*LEADERBOARD_COLUMNS[1:], "n_members"])
    board = board.sort_values(["cv", "n_members", "created", "file"], ascending=[False, True, True, True],
                              na_position="last").drop(columns="n_members")  # fmt: skip
    board.insert(0, "rank", range(1, len(board) + 1))
    return board.reset_index(drop=True)


def write_leaderboard(out_dir: str | Path) -> pd.DataFrame:
    """Rank the submissions of `out_dir` and write leaderboard.csv and leaderboard.md there."""
    board = leaderboard(out_dir)
    atomic_write_csv(board, Path(out_dir) / "leaderboard.csv")
    atomic_write_text(Path(out_dir) / "leaderboard.md", markdown_table(board))
    return board


def record_public(path: str | Path, score: float) -> None:
    """Store the public LB score in the submission's sidecar (key 'public') and rewrite the leaderboard."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if path.suffix != ".csv" or not path.is_file():
        raise SubmissionError(f"{path}: submission CSV not found")
    if not sidecar.is_file():
        raise SubmissionError(f"{path}: no sidecar {sidecar.name}; only submissions written by the toolkit are ranked")
    info = read_sidecar(sidecar)
    info["public"] = check_score(score, f"{path}: public score")
    atomic_write_json(info, sidecar)
    write_leaderboard(path.parent)
