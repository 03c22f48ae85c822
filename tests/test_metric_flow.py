"""The flow under metrics other than exact match, on a tiny classifier trained once on the `vqa` kind (ten
annotators per question): cv and the held-out score equal the official VQA accuracy, VQA results JSON and MAP@k
submissions validate, and multiple-choice answers stay within each row's choices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.config import Config, load_config
from competition.cv import run_cv
from competition.data import ANSWERS, CHOICES, ID, load_competition
from competition.ensemble import run_ensemble
from competition.folds import read_folds, write_folds
from competition.predict import predict_fold
from competition.predictions import file_for, oof_frame
from competition.submit import RESULTS_SUFFIX, read_submission, validate_file
from competition.synthetic import generate
from competition.train import train_fold
from tests.reference_metrics import vqa_official_accuracy

TINY = ["folds.k=3", "train.max_steps=60", "train.save_steps=1000", "train.eval_steps=0", "train.patience=null",
        "predict.batch_size=64", "ensemble.stack=false"]  # fmt: skip


def config(root: Path, work: Path, *extra: str) -> Config:
    return load_config("configs/demo_vqa.yaml", [f"data.root={root}", f"workdir={work}", *TINY, *extra])


@pytest.fixture(scope="module")
def vqa_trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data root, workdir) with fold 0 of the demo_vqa classifier trained and its OOF and test answered."""
    base = tmp_path_factory.mktemp("vqa")
    root, work = base / "data", base / "work"
    generate(root, train_images=45, test_images=12, q_per_image=4, seed=3, kind="vqa")
    one_word_answers(root)
    cfg = config(root, work)
    comp = load_competition(cfg.data)
    write_folds(cfg, comp.train)
    train_fold(cfg, comp, read_folds(cfg), 0, log=lambda s: None)
    predict_fold(cfg, comp, read_folds(cfg), 0, ("oof", "test"), warn=lambda s: None)
    return root, work


def one_word_answers(root: Path) -> None:
    """Keep the questions whose answers are single words (a MAP@k row separates its answers by spaces)."""
    tables = {name: pd.read_csv(root / name, dtype=str, keep_default_na=False)
              for name in ("train.csv", "test.csv", "solution.csv", "sample_submission.csv")}  # fmt: skip
    def one_word(cell: str) -> bool:
        return all(" " not in a for a in json.loads(cell))

    keep = {split: set(tables[name].loc[tables[name]["answers"].map(one_word), "ID"])
            for split, name in (("train", "train.csv"), ("test", "solution.csv"))}  # fmt: skip
    for name, df in tables.items():
        df[df["ID"].isin(keep["train" if name == "train.csv" else "test"])].to_csv(root / name, index=False)


def own_workdir(vqa_trained: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    root, work = vqa_trained
    shutil.copytree(work, tmp_path / "work")
    return root, tmp_path / "work"


@pytest.mark.e2e(minutes=0.4)
def test_cv_equals_the_official_vqa_accuracy_of_the_oof_answers(vqa_trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, work = own_workdir(vqa_trained, tmp_path)
    cfg = config(root, work)
    comp, folds = load_competition(cfg.data), read_folds(cfg)
    tables = run_cv(cfg, comp, folds)
    oof = oof_frame(cfg, comp, folds)
    annotators = comp.train.set_index(ID)[ANSWERS]
    official = np.mean([vqa_official_accuracy(a, annotators[i]) for i, a in zip(oof[ID], oof["answer"], strict=True)])
    assert tables["best"]["accuracy"] == pytest.approx(official, abs=1e-9)
    assert 0 < official < 1 and tables["best"]["accuracy"] != pytest.approx(tables["best"]["exact"])


@pytest.mark.e2e(minutes=0.3)
def test_held_out_equals_official_vqa_accuracy_and_results_json_validates(vqa_trained: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:  # fmt: skip
    root, work = own_workdir(vqa_trained, tmp_path)
    cfg = config(root, work, "data.submission_format=vqa_json")
    comp, folds = load_competition(cfg.data), read_folds(cfg)
    res = run_ensemble(cfg, comp, folds)
    sub = read_submission(res["submission"]).set_index("ID")["answer"]
    solution = pd.read_csv(root / "solution.csv", dtype=str, keep_default_na=False).set_index("ID")
    official = np.mean([vqa_official_accuracy(sub[i], json.loads(solution.at[i, "answers"])) for i in sub.index])
    assert res["holdout"][res["submission"].name] == pytest.approx(official, abs=1e-9)
    results = res["submission"].with_name(res["submission"].stem + RESULTS_SUFFIX)
    sample = root / "sample_submission.csv"
    assert validate_file(results, sample)["answer"].tolist() == sub.tolist()
    broken = tmp_path / f"broken{RESULTS_SUFFIX}"
    broken.write_text(json.dumps(json.loads(results.read_text())[1:]))
    with pytest.raises(Exception, match="missing"):
        validate_file(broken, sample)


@pytest.mark.e2e(minutes=0.3)
def test_map_at_3_submissions_rank_three_answers_and_score_by_map(vqa_trained: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:  # fmt: skip
    root, work = own_workdir(vqa_trained, tmp_path)
    cfg = config(root, work, "metric=map@3", "ensemble.methods=[soft]")
    comp, folds = load_competition(cfg.data), read_folds(cfg)
    res = run_ensemble(cfg, comp, folds)
    sub = validate_file(res["submission"], root / "sample_submission.csv", top_k=3)
    guesses = sub["answer"].str.split()
    assert guesses.map(len).max() == 3 and guesses.map(len).min() >= 1
    single = validate_file(res["single"], root / "sample_submission.csv", top_k=3)["answer"].str.split()
    assert single.map(len).max() == 3  # a member's submission ranks its guesses as its OOF was scored
    with pytest.raises(Exception, match="holds submissions of .* scored by map@3"):  # CVs of other metrics
        run_ensemble(config(root, work, "metric=exact"), comp, folds)
    shutil.copytree(work, tmp_path / "exact", ignore=shutil.ignore_patterns("submissions"))
    top1 = run_ensemble(config(root, tmp_path / "exact", "metric=exact"), comp, folds, name="top1")
    assert res["cv"] >= top1["cv"]  # more guesses never score less than the first alone
    with pytest.raises(Exception, match="at most 2"):
        validate_file(res["submission"], root / "sample_submission.csv", top_k=2)


def with_choices(src: Path, dst: Path) -> Path:
    """A copy of the competition with a `choices` column: each question's answer and three other answers."""
    shutil.copytree(src, dst)
    train = pd.read_csv(dst / "train.csv", dtype=str, keep_default_na=False)
    vocab = sorted(train["answer"].unique())
    rng = np.random.default_rng(0)
    solution = pd.read_csv(dst / "solution.csv", dtype=str, keep_default_na=False).set_index("ID")["answer"]
    for name, truth in (("train.csv", train.set_index("ID")["answer"]), ("test.csv", solution)):
        df = pd.read_csv(dst / name, dtype=str, keep_default_na=False)
        picks = [[truth[i], *rng.choice([v for v in vocab if v != truth[i]], 3, replace=False)] for i in df["ID"]]
        df["choices"] = [json.dumps(sorted(p)) for p in picks]
        df.to_csv(dst / name, index=False)
    return dst


@pytest.mark.e2e(minutes=0.3)
def test_multiple_choice_answers_are_each_rows_choices(vqa_trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, work = own_workdir(vqa_trained, tmp_path)
    choice_root = with_choices(root, tmp_path / "choice")
    cfg = config(choice_root, work, "data.choices_col=choices", "metric=choice")
    comp, folds = load_competition(cfg.data), read_folds(cfg)
    assert comp.test["question"].str.contains("\nChoices: ").all()
    for split in ("oof", "test"):
        file_for(cfg, 0, split, (0, 1)).unlink()
    predict_fold(cfg, comp, folds, 0, ("oof", "test"), warn=lambda s: None)
    oof = oof_frame(cfg, comp, folds)
    choices = pd.concat([comp.train, comp.test]).set_index(ID)[CHOICES]
    assert all(a in choices[i] for i, a in zip(oof[ID], oof["answer"], strict=True))
    res = run_ensemble(cfg, comp, folds)
    sub = read_submission(res["submission"]).set_index("ID")["answer"]
    assert all(sub[i] in choices[i] for i in sub.index)


def test_rank_decoding_scores_each_rows_own_choices(trained: tuple[list[str], Path], tmp_path: Path) -> None:
    sets, work = trained
    shutil.copytree(work, tmp_path / "work")
    root = Path(next(s for s in sets if s.startswith("data.root=")).partition("=")[2])
    choice_root = with_choices(root, tmp_path / "choice")
    sets = [s for s in sets if not s.startswith(("workdir=", "data.root=", "predict."))]
    cfg = load_config("configs/demo.yaml", [*sets, f"workdir={tmp_path / 'work'}", f"data.root={choice_root}",
                                            "data.choices_col=choices", "metric=choice",
                                            "predict.decodings=[{name: rank, rank: 3}]"])  # fmt: skip
    comp, folds = load_competition(cfg.data), read_folds(cfg)
    predict_fold(cfg, comp, folds, 0, ("oof",), warn=lambda s: None)
    rows = pd.read_json(file_for(cfg, 0, "oof"), lines=True, dtype={"id": str})
    choices = comp.train.set_index(ID)[CHOICES]
    assert all(a in choices[i] for i, a in zip(rows["id"], rows["answer"], strict=True))
    ranked = [[a, *(t for t, _ in alts)] for a, alts in zip(rows["answer"], rows["alternatives"], strict=True)]
    assert all(sorted(r) == sorted(choices[i]) for i, r in zip(rows["id"], ranked, strict=True))  # all four scored
