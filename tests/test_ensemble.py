"""The ensemble stage: members' OOF and test answers to a voted submission, scored on the solution where known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.config import Config, load_config
from competition.data import ANSWER, ID, Competition, load_competition, read_answers
from competition.ensemble import run_ensemble
from competition.errors import DataError
from competition.folds import fold_rows, read_folds, write_folds
from competition.predictions import file_for, write_canonical
from competition.submit import read_submission, validate_file

MEMBERS = {"short_answer": 0.8, "plain": 0.5}  # prompt -> chance that its (greedy) answer is right


def predicted(data: Path, work: Path, sets: list[str] | None = None) -> tuple[Config, Competition, pd.DataFrame]:
    """Folds and hand-made OOF and test predictions of two members (no model) for the data folder."""
    cfg = load_config("configs/demo.yaml", [f"data.root={data}", f"workdir={work}", *(sets or [])])
    comp = load_competition(cfg.data)
    write_folds(cfg, comp.train)
    folds, c = read_folds(cfg), cfg.data
    solution = read_answers(data / "solution.csv", c.id_col, c.answer_col)
    rng = np.random.default_rng(0)
    for fold in range(cfg.folds.k):
        for split, truth in (("oof", fold_rows(comp, folds, fold, "val")), ("test", solution)):
            ids, gold = truth[ID].to_numpy(), truth[ANSWER].to_numpy()
            rows = [
                pd.DataFrame(
                    {
                        "id": ids,
                        "fold": fold,
                        "split": split,
                        "prompt": prompt,
                        "decoding": "greedy",
                        "raw": gold,
                        "answer": np.where(rng.random(len(ids)) < p_right, gold, "wrong"),
                        "logprob": -1.0,
                        "alternatives": [[]] * len(ids),
                    }
                )
                for prompt, p_right in MEMBERS.items()
            ]
            write_canonical(pd.concat(rows), file_for(cfg, fold, split))
    return cfg, comp, folds


RENAMED = {"ID": "qid", "image_id": "img", "question": "text", "answer": "label"}


def rename_columns(data: Path) -> list[str]:
    """Rename the columns of every table of the data folder; returns the config overrides that name them."""
    for name in ("train.csv", "test.csv", "sample_submission.csv", "solution.csv"):
        df = pd.read_csv(data / name, dtype=str, keep_default_na=False)
        df.rename(columns=RENAMED).to_csv(data / name, index=False)
    return [f"data.{key}={RENAMED[old]}" for key, old in
            (("id_col", "ID"), ("image_col", "image_id"), ("question_col", "question"), ("answer_col", "answer"))]  # fmt: skip


def held_out_accuracy(submission: Path, data: Path, id_col: str = "ID", answer_col: str = "answer") -> float:
    """Exact-match accuracy of a submission against the data folder's solution.csv."""
    sub = read_submission(submission).set_index(id_col)[answer_col]
    sol = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False).set_index(id_col)[answer_col]
    return float((sub == sol.reindex(sub.index)).mean())


def test_ensemble_stage_with_renamed_columns_scores_on_the_solution(data_copy: Path, tmp_path: Path) -> None:
    sets = rename_columns(data_copy)
    cfg, comp, folds = predicted(data_copy, tmp_path / "w", sets)
    res = run_ensemble(cfg, comp, folds)
    for key in ("submission", "single"):
        path = res[key]
        assert read_submission(path).columns.tolist() == ["qid", "label"]
        assert res["holdout"][path.name] == pytest.approx(held_out_accuracy(path, data_copy, "qid", "label"))
    assert res["holdout"][res["single"].name] != res["holdout"][res["submission"].name]
    assert 0.5 < min(res["holdout"].values())
    board = pd.read_csv(cfg.submissions_dir / "leaderboard.csv").set_index("file")["held_out"]
    assert board.to_dict() == pytest.approx(res["holdout"])  # the leaderboard shows them beside the CV


def test_ensemble_stage_without_a_solution_scores_nothing(data_copy: Path, tmp_path: Path) -> None:
    cfg, comp, folds = predicted(data_copy, tmp_path / "w")
    (data_copy / "solution.csv").unlink()
    assert run_ensemble(cfg, comp, folds)["holdout"] == {}
    assert pd.read_csv(cfg.submissions_dir / "leaderboard.csv")["held_out"].isna().all()


def test_ensemble_stage_refuses_a_bad_solution_before_writing(data_copy: Path, tmp_path: Path) -> None:
    cfg, comp, folds = predicted(data_copy, tmp_path / "w")
    solution = pd.read_csv(data_copy / "solution.csv", dtype=str, keep_default_na=False)
    solution.iloc[1:].to_csv(data_copy / "solution.csv", index=False)
    with pytest.raises(DataError, match=rf"solution\.csv: column 'ID': test ID '{solution['ID'][0]}' has no row"):
        run_ensemble(cfg, comp, folds)
    solution.rename(columns={"answer": "label"}).to_csv(data_copy / "solution.csv", index=False)
    with pytest.raises(DataError, match=r"solution\.csv: missing column 'answer'"):
        run_ensemble(cfg, comp, folds)
    assert not cfg.submissions_dir.exists()


def test_ensemble_stage_keeps_the_samples_columns_and_order(data_copy: Path, tmp_path: Path) -> None:
    sample = pd.read_csv(data_copy / "sample_submission.csv", dtype=str, keep_default_na=False)
    sample = sample.iloc[::-1].assign(Usage=["Public", "Private"] * (len(sample) // 2) + ["Public"] * (len(sample) % 2))
    sample[["answer", "Usage", "ID"]].to_csv(data_copy / "sample_submission.csv", index=False)
    cfg, comp, folds = predicted(data_copy, tmp_path / "w")
    res = run_ensemble(cfg, comp, folds)
    for key in ("submission", "single"):
        sub = validate_file(res[key], data_copy / "sample_submission.csv")
        assert sub.columns.tolist() == ["answer", "Usage", "ID"]
        assert sub["ID"].tolist() == sample["ID"].tolist() and sub["Usage"].tolist() == sample["Usage"].tolist()
        assert json.loads(res[key].with_suffix(".json").read_text())["cv"] > 0.5
    assert res["holdout"][res["submission"].name] == pytest.approx(held_out_accuracy(res["submission"], data_copy))


