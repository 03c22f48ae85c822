"""Convert the official VQA v2 files (questions and annotations JSON, COCO images) to the competition layout.

    python -m competition vqav2 --train-questions Q --train-annotations A --test-questions T --out DIR

Writes DIR/train.csv (ID, image_id, question, answer, answers, question_type, answer_type), DIR/test.csv
(ID, image_id, question) and DIR/sample_submission.csv (ID, answer), each atomically and only after every input
checked. ID is the question_id, image_id the COCO file stem (COCO_train2014_000000000009), answer the
multiple_choice_answer, answers the JSON list of the 10 annotators' answers in answer_id order. The images stay where
they are: point data.train_images / data.test_images at the COCO folders (e.g. train2014/) and set
data.answers_col=answers to score with every annotator's answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from competition.errors import DataError
from competition.io import atomic_write_csv

TRAIN_COLUMNS = ["ID", "image_id", "question", "answer", "answers", "question_type", "answer_type"]
TEST_COLUMNS = ["ID", "image_id", "question"]
PLACEHOLDER = "yes"  # the sample submission's answer: any valid text


def read_json(path: Path) -> dict[str, Any]:
    """The top-level object of a JSON file; a DataError names the file when it is missing, unreadable or no object."""
    try:
        with path.open(encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object at the top level, got {type(obj).__name__}")
    return obj


def field(obj: Any, key: str, path: Path, where: str, kind: type | tuple[type, ...]) -> Any:
    """obj[key] checked to be of `kind`; a DataError names the file, the place (`where`) and the key."""
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{path}: {where}: missing key '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{path}: {where}: key '{key}' is not {names}: {value!r}"[:300])
    return value


def image_stem(subtype: str, image_id: int) -> str:
    """The COCO file stem of an image: COCO_train2014_000000000009."""
    return f"COCO_{subtype}_{image_id:012d}"


def read_questions(path: Path) -> list[dict[str, Any]]:
    """Rows ID, image_id, question of a VQA v2 questions file, image ids as COCO stems of its data_subtype."""
    top = read_json(path)
    subtype = field(top, "data_subtype", path, "top level", str)
    rows, seen = [], set()
    for i, q in enumerate(field(top, "questions", path, "top level", list)):
        where = f"questions[{i}]"
        qid = field(q, "question_id", path, where, int)
        where = f"question_id {qid}"
        if qid in seen:
            raise DataError(f"{path}: {where}: duplicate question_id")
        seen.add(qid)
        image_id = field(q, "image_id", path, where, int)
        rows.append({"ID": str(qid), "image_id": image_stem(subtype, image_id),
                     "question": field(q, "question", path, where, str), "_image": image_id})  # fmt: skip
    if not rows:
        raise DataError(f"{path}: no questions")
    return rows


def read_annotations(path: Path) -> dict[str, dict[str, Any]]:
    """Each annotation of a VQA v2 annotations file by question id (as text)."""
    out = {}
    for i, a in enumerate(field(read_json(path), "annotations", path, "top level", list)):
        qid = field(a, "question_id", path, f"annotations[{i}]", int)
        if str(qid) in out:
            raise DataError(f"{path}: question_id {qid}: duplicate annotation")
        out[str(qid)] = a
    return out


def ordered_answers(a: dict[str, Any], path: Path, where: str) -> list[str]:
    """The annotators' answer texts of one annotation in answer_id order."""
    answers = field(a, "answers", path, where, list)
    if not answers:
        raise DataError(f"{path}: {where}: empty 'answers'")
    keyed = [(field(x, "answer_id", path, f"{where}: answers[{j}]", int),
              field(x, "answer", path, f"{where}: answers[{j}]", str)) for j, x in enumerate(answers)]  # fmt: skip
    return [text for _, text in sorted(keyed, key=lambda t: t[0])]


def train_row(q: dict[str, Any], annotations: dict[str, dict[str, Any]], q_path: Path, a_path: Path) -> dict[str, Any]:
    """One train.csv row: the question joined with its annotation."""
    where = f"question_id {q['ID']}"
    if q["ID"] not in annotations:
        raise DataError(f"{a_path}: {where}: no annotation for this question of {q_path}")
    a = annotations[q["ID"]]
    image_id = field(a, "image_id", a_path, where, int)
    if image_id != q["_image"]:
        raise DataError(f"{a_path}: {where}: image_id {image_id} differs from {q['_image']} in {q_path}")
    return {**{k: q[k] for k in TEST_COLUMNS},
            "answer": field(a, "multiple_choice_answer", a_path, where, str),
            "answers": json.dumps(ordered_answers(a, a_path, where), ensure_ascii=False),
            "question_type": field(a, "question_type", a_path, where, str),
            "answer_type": field(a, "answer_type", a_path, where, str)}  # fmt: skip


def convert(train_questions: Path, train_annotations: Path, test_questions: Path, out_dir: Path) -> dict[str, int]:
    """Write train.csv, test.csv and sample_submission.csv of VQA v2 files to `out_dir`; returns the row counts."""
    train_questions, train_annotations = Path(train_questions), Path(train_annotations)
    test_questions, out_dir = Path(test_questions), Path(out_dir)
    annotations = read_annotations(train_annotations)
    rows = [train_row(q, annotations, train_questions, train_annotations) for q in read_questions(train_questions)]
    train = pd.DataFrame(rows, columns=TRAIN_COLUMNS)
    test = pd.DataFrame(read_questions(test_questions), columns=TEST_COLUMNS)
    shared = test["ID"].isin(train["ID"])
    if shared.any():
        raise DataError(f"{test_questions}: question_id {test['ID'][shared].iloc[0]}: also in {train_questions}")
    sample = pd.DataFrame({"ID": test["ID"], "answer": PLACEHOLDER})
    for df, name in ((train, "train.csv"), (test, "test.csv"), (sample, "sample_submission.csv")):
        atomic_write_csv(df, out_dir / name)
    return {"train": len(train), "test": len(test)}
