"""Families are plug-ins: a family defined and registered in this file alone runs folds -> train -> predict -> cv ->
ensemble, and every registered family keeps the contract (save/load gives the same answers, batched equals one at a
time, the engine yields Answers)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from competition.cli import app
from competition.config import Config, DecodingConfig, load_config
from competition.data import ANSWER, QUESTION, Competition
from competition.engine import Answer
from competition.families import FAMILIES, Blueprint, family_for, register
from competition.io import atomic_dir
from competition.metrics import question_types
from competition.pipeline import stage_inputs

runner = CliRunner()
MODEL_FILE = "majority.json"


class TypeMajorityEngine:
    """Each question's type's majority training answer (the overall majority for a type never seen)."""

    cut_answers = 0

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def max_new_tokens(self, decoding: DecodingConfig) -> int:
        return 0

    def answer(self, prompt: str, decoding: DecodingConfig, questions: list[str], image_ids: list[str],
               rows: list[int] | None = None, progress: Callable[[int], None] | None = None) -> Iterator[list[Answer]]:  # fmt: skip
        rows = list(range(len(questions))) if rows is None else rows
        types = question_types(pd.Series([questions[r] for r in rows], dtype=str))
        yield [Answer(r, self.answers.get(t, self.answers[""]), 0.0) for r, t in zip(rows, types, strict=True)]
        if progress:
            progress(len(rows))


@register("type_majority")
class TypeMajority:
    """The per-question-type majority answer: no weights, no Trainer, no images."""

    uses_trainer = False
    questions_per_example = 1

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def check(self) -> None:
        pass

    def describe(self) -> tuple[str, str]:
        return "type_majority", "each question type's majority training answer"

    def blueprint(self) -> Blueprint:
        import torch

        return Blueprint(torch.nn.Module(), *self.describe(), "tokenizer: none")

    def build(self, comp: Competition, rows: pd.DataFrame) -> tuple[Any, Any]:
        return {}, None

    def fit(self, model: Any, processor: Any, rows: pd.DataFrame) -> dict[str, str]:
        majority = rows.groupby(question_types(rows[QUESTION]))[ANSWER].agg(lambda s: s.value_counts().index[0])
        return {**majority.to_dict(), "": rows[ANSWER].value_counts().index[0]}

    def train_set(self, model: Any, processor: Any, rows: pd.DataFrame) -> None:
        raise NotImplementedError

    def images(self, comp: Competition, split: str, processor: Any, cache: bool) -> None:
        return None

    def collator(self, images: Any, model: Any, processor: Any) -> None:
        raise NotImplementedError

    def save(self, model: dict[str, str], processor: Any, out: Path) -> None:
        with atomic_dir(out) as tmp:
            (tmp / MODEL_FILE).write_text(json.dumps(model))

    def load(self, folder: Path) -> tuple[dict[str, str], None]:
        return json.loads((folder / MODEL_FILE).read_text()), None

    def engine(self, model: dict[str, str], processor: Any, images: Any, vocabulary: list[str]) -> TypeMajorityEngine:
        return TypeMajorityEngine(model)


def cli(*args: str, sets: list[str]) -> Any:
    res = runner.invoke(app, [*args, "-c", "configs/demo.yaml", *[x for s in sets for x in ("--set", s)]])
    assert res.exit_code == 0, res.output[-2000:]
    return res


@pytest.mark.e2e(minutes=0.05)
def test_a_family_registered_in_a_test_file_runs_the_whole_flow(demo_root: Path, tmp_path: Path) -> None:
    sets = [f"data.root={demo_root}", f"workdir={tmp_path}", "folds.k=3", "model.family=type_majority",
            "experiment=majority", "predict.prompts=[short_answer]", "predict.decodings=[{name: greedy}]"]  # fmt: skip
    cli("folds", sets=sets)
    assert "type_majority" in cli("train", "--dry-run", sets=sets).output
    for fold in range(3):
        assert "fitted on" in cli("train", "--fold", str(fold), sets=sets).output
        cli("predict", "--fold", str(fold), sets=sets)
    cli("cv", sets=sets)
    cli("ensemble", sets=sets)
    report = json.loads((tmp_path / "experiments" / "majority" / "cv.json").read_text())
    text = json.dumps(report)
    assert "short_answer/greedy" in text
    cfg = load_config("configs/demo.yaml", sets)
    comp, folds = stage_inputs(cfg)
    oof = pd.concat([pd.read_json(cfg.fold_dir(k) / "predictions" / "oof.jsonl", lines=True) for k in range(3)])
    assert len(oof) == len(comp.train) and set(oof["answer"]) <= set(comp.train[ANSWER])
    assert list((tmp_path / "submissions").glob("*.csv"))


def contract_config(family: str, root: Path, work: Path, tiny_vlm: Path | None) -> Config:
    config = {"classifier": "configs/demo_classifier.yaml"}.get(family, "configs/demo.yaml")
    sets = [f"data.root={root}", f"workdir={work}", "folds.k=3", "predict.batch_size=4", f"model.family={family}"]
    if family == "vlm":
        sets += [f"model.name_or_path={tiny_vlm}", "train.mode=full"]
    if family == "classifier":
        sets += ["model.classifier.hidden=32"]
    return load_config(config, sets)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_registered_family_keeps_the_contract(name: str, demo_root: Path, tmp_path: Path) -> None:
    from tests.test_vlm import texts
    from tests.vlm_models import save_tiny_vlm

    tiny = save_tiny_vlm("llava", tmp_path / "vlm", texts()) if name == "vlm" else None
    cfg = contract_config(name, demo_root, tmp_path, tiny)
    comp, folds = stage_inputs(cfg)
    family = family_for(cfg)
    rows = comp.train.head(40)
    model, processor = family.build(comp, rows)
    model = model if family.uses_trainer else family.fit(model, processor, rows)
    family.save(model, processor, tmp_path / "model")
    loaded = family.load(tmp_path / "model")
    questions, images = rows[QUESTION].head(10).tolist(), rows["image_id"].head(10).tolist()
    vocabulary = rows[ANSWER].unique().tolist()

    def answers(model_and_processor: tuple[Any, Any], batch_size: int) -> list[Answer]:
        engine = family.engine(*model_and_processor, family.images(comp, "train", model_and_processor[1], False), vocabulary)
        if hasattr(engine, "batch_size"):
            engine.batch_size = batch_size
        got = [a for batch in engine.answer(cfg.train.prompt, DecodingConfig(max_new_tokens=4), questions, images)
               for a in batch]  # fmt: skip
        assert all(isinstance(a, Answer) for a in got) and sorted(a.row for a in got) == list(range(10))
        return sorted(got, key=lambda a: a.row)

    if hasattr(model, "eval"):
        model.eval()
    in_memory, reloaded, one_by_one = answers((model, processor), 4), answers(loaded, 4), answers(loaded, 1)
    assert [a.text for a in in_memory] == [a.text for a in reloaded] == [a.text for a in one_by_one]
    assert [a.logprob for a in reloaded] == pytest.approx([a.logprob for a in one_by_one], abs=1e-4)
