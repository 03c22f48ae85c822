"""competition.vqav2 on tiny hand-made VQA v2 files: the converted folder loads, answers in order, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from competition.config import load_config
from competition.data import Competition, load_competition
from competition.errors import DataError
from competition.metrics import credit
from competition.vqav2 import convert

# question_id -> (image_id, question, multiple_choice_answer, answer type, the 10 answers in answer_id order)
TRAIN = {
    9001: (9, "What color is the bus?", "red", "other", ["red"] * 7 + ["dark red", "red", "maroon"]),
    9002: (9, "Is it raining?", "no", "yes/no", ["no"] * 9 + ["yes"]),
    9003: (25, "How many dogs are there?", "2", "number", ["2"] * 6 + ["3"] * 2 + ["two", "2"]),
    9004: (25, 'What does the sign say, "stop"?', "stop", "other", ["stop"] * 8 + ["arrêt", "stop sign"]),
}
TEST = {7001: (42, "What is on the table?"), 7002: (42, "Is the cup empty?")}


def questions(subtype: str, rows: dict[int, tuple]) -> dict[str, Any]:
    """A VQA v2 questions file of `rows`."""
    return {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": subtype,
            "license": {}, "questions": [{"image_id": r[0], "question": r[1], "question_id": q}
                                         for q, r in rows.items()]}  # fmt: skip


def annotations(rows: dict[int, tuple]) -> dict[str, Any]:
    """A VQA v2 annotations file of `rows`; each question's answers are listed out of answer_id order."""

    def answers(texts: list[str]) -> list[dict[str, Any]]:
        listed = [{"answer": t, "answer_confidence": "yes", "answer_id": j} for j, t in enumerate(texts, 1)]
        return listed[5:] + listed[:5]

    return {"info": {}, "data_type": "mscoco", "data_subtype": "train2014",
            "annotations": [{"question_id": q, "image_id": r[0], "question_type": " ".join(r[1].lower().split()[:2]),
                             "answer_type": r[3], "multiple_choice_answer": r[2], "answers": answers(r[4])}
                            for q, r in rows.items()]}  # fmt: skip


def write_json(path: Path, obj: Any) -> Path:
    """Write `obj` as JSON to `path`; returns it."""
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def vqa_files(root: Path, train: dict[str, Any] | None = None, ann: dict[str, Any] | None = None) -> list[Path]:
    """The three VQA v2 JSON files under root/raw and a small PNG named as COCO does for every image."""
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for folder, subtype, rows in (("train2014", "train2014", TRAIN), ("test2015", "test2015", TEST)):
        (root / folder).mkdir(exist_ok=True)
        for image_id in {r[0] for r in rows.values()}:
            Image.new("RGB", (8, 6), (image_id, 0, 0)).save(root / folder / f"COCO_{subtype}_{image_id:012d}.png")
    return [write_json(raw / "q_train.json", train or questions("train2014", TRAIN)),
            write_json(raw / "a_train.json", ann or annotations(TRAIN)),
            write_json(raw / "q_test.json", questions("test2015", TEST))]  # fmt: skip


def loaded(root: Path) -> Competition:
    """The converted folder root/vqa loaded with the default config, its images in the COCO folders."""
    sets = [f"data.root={root / 'vqa'}", "data.answers_col=answers",
            f"data.train_images={root / 'train2014'}", f"data.test_images={root / 'test2015'}"]  # fmt: skip
    return load_competition(load_config(None, sets).data)


def refused(root: Path, files: list[Path]) -> str:
    """The one-line message convert refuses `files` with; nothing is written."""
    with pytest.raises(DataError) as e:
        convert(*files, root / "out")
    assert "\n" not in str(e.value), str(e.value)
    assert not (root / "out").exists()
    return str(e.value)


def test_the_converted_folder_loads_with_every_annotators_answer(tmp_path: Path) -> None:
    files = vqa_files(tmp_path)
    assert convert(*files, tmp_path / "vqa") == {"train": 4, "test": 2}
    comp = loaded(tmp_path)
    assert comp.train["id"].tolist() == ["9001", "9002", "9003", "9004"]
    assert comp.train["answers"].tolist() == [tuple(r[4]) for r in TRAIN.values()]  # answer_id order, not listed
    assert comp.train["answer"].tolist() == [r[2] for r in TRAIN.values()]
    assert comp.train["question"].tolist() == [r[1] for r in TRAIN.values()]
    assert comp.train["image_id"].tolist()[::2] == ["COCO_train2014_000000000009", "COCO_train2014_000000000025"]
    stem = "COCO_train2014_000000000025"
    assert comp.image_path("train", stem) == tmp_path / "train2014" / f"{stem}.png"
    assert comp.test["image_id"].tolist() == ["COCO_test2015_000000000042"] * 2
    assert comp.load_image("test", "COCO_test2015_000000000042").size == (8, 6)
    assert comp.sample.columns.tolist() == ["ID", "answer"] and comp.sample["ID"].tolist() == ["7001", "7002"]


def test_train_csv_keeps_the_question_and_answer_types(tmp_path: Path) -> None:
    convert(*vqa_files(tmp_path), tmp_path / "vqa")
    header = (tmp_path / "vqa" / "train.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "ID,image_id,question,answer,answers,question_type,answer_type"
    assert "arrêt" in (tmp_path / "vqa" / "train.csv").read_text(encoding="utf-8")  # ensure_ascii=False
    assert loaded(tmp_path).train.shape == (4, 5)  # id, image_id, question, answer, answers


def test_a_question_without_annotation_is_refused_naming_its_id(tmp_path: Path) -> None:
    ann = annotations({q: r for q, r in TRAIN.items() if q != 9003})
    msg = refused(tmp_path, vqa_files(tmp_path, ann=ann))
    assert "a_train.json" in msg and "question_id 9003" in msg and "no annotation" in msg


def test_a_missing_key_is_refused_naming_the_file_question_and_key(tmp_path: Path) -> None:
    ann = annotations(TRAIN)
    del ann["annotations"][1]["multiple_choice_answer"]
    msg = refused(tmp_path, vqa_files(tmp_path, ann=ann))
    assert "a_train.json" in msg and "question_id 9002" in msg and "'multiple_choice_answer'" in msg
    train = questions("train2014", TRAIN)
    del train["data_subtype"]
    assert "q_train.json" in (msg := refused(tmp_path, vqa_files(tmp_path, train=train))) and "'data_subtype'" in msg


def test_unreadable_json_is_refused_naming_the_file(tmp_path: Path) -> None:
    files = vqa_files(tmp_path)
    files[2].write_text('{"questions": [', encoding="utf-8")
    assert "q_test.json" in (msg := refused(tmp_path, files)) and "not JSON" in msg
    files[2].unlink()
    assert "q_test.json" in (msg := refused(tmp_path, files)) and "not found" in msg


def test_an_answer_two_of_ten_annotators_gave_scores_0_6(tmp_path: Path) -> None:
    convert(*vqa_files(tmp_path), tmp_path / "vqa")
    gold = loaded(tmp_path).train.set_index("id")["answers"]
    assert gold["9003"].count("3") == 2
    assert credit("vqa", ["3"], [gold["9003"]]).tolist() == pytest.approx([0.6])
    assert credit("vqa", ["2"], [gold["9003"]]).tolist() == pytest.approx([1.0])  # 7 of 10
