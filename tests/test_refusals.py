"""Hand-edited or damaged run files (tuned.yaml, prediction files), and stage options that would count members twice,
write outside their folders or train before a refusal: one line naming the file and line (or key), nothing written."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from competition.cli import app
from competition.config import load_config
from competition.demo import config_at_seed
from competition.errors import ConfigError, DataError
from competition.predictions import PredictionLog, meta_path, read_predictions
from competition.tuned import load_tuned, save_tuned, tuned_job, tuned_train
from tests.test_bad_input import assert_one_line_error, edit_csv, set_cell
from tests.test_ensemble import predicted

runner = CliRunner()


def run(command: str, data: Path, work: Path, *extra: str):
    """`command` on the demo config with the data folder and workdir set."""
    sets = ["--set", f"data.root={data}", "--set", f"workdir={work}"]
    return runner.invoke(app, [*command.split(), "-c", "configs/demo.yaml", *sets, *extra])


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# 1. experiments/<exp>/tuned.yaml, edited by hand

TUNED = {
    "not YAML": ("train: [1, 2\n", ["line 2, column 1: invalid YAML"]),
    "binary": (bytes(range(256)), ["not a UTF-8 text file"]),
    "not a mapping": ("- train\n- vote\n", ["expected a mapping of train, decoding, vote"]),
    "unknown key": ("trian: {}\n", ["unknown key 'trian'", "valid keys: train, decoding, vote"]),
    "section not a mapping": ("decoding: 3\n", ["bad value for 'decoding': expected a mapping"]),
    "unknown train key": ("train: {learning_rat: 0.1}\n", ["unknown config key 'train.learning_rat'"]),
    "bad train value": ("train: {learning_rate: -1}\n", ["bad value for 'train.learning_rate'", "(got -1)"]),
    "unknown prompt": ("decoding: {prompt: nope, num_beams: 1}\n", ["bad value for 'decoding.prompt'", "'nope'"]),
    "bad decoding value": ("decoding: {prompt: plain, num_beams: 0}\n", ["bad value for 'decoding.num_beams'"]),
    "unknown decoding key": ("decoding: {prompt: plain, beams: 2}\n", ["unknown config key 'decoding.beams'"]),
    "bad vote method": ("vote: {method: best}\n", ["bad value for 'vote.method'", "'best'"]),
    "negative vote weight": ("vote: {method: weighted, weights: {a: -1}}\n", ["bad value for 'vote.weights.a'"]),
    "score not a number": ("vote_score: high\n", ["bad value for 'vote_score': expected a number", "'high'"]),
}


@pytest.mark.parametrize("case", list(TUNED))
def test_a_hand_edited_tuned_yaml_that_does_not_fit_is_one_line(case: str, demo_root: Path, tmp_path: Path) -> None:
    text, needles = TUNED[case]
    path = tmp_path / "w" / "experiments" / "demo" / "tuned.yaml"
    path.parent.mkdir(parents=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = files_under(tmp_path / "w")
    for command in ("cv", "predict --fold 0", "train --fold 0"):  # refused before folds.csv or a model is made
        res = run(command, demo_root, tmp_path / "w")
        assert_one_line_error(res, [f"{path}:", *needles])
    assert files_under(tmp_path / "w") == before


def test_a_tuned_yaml_the_studies_write_reads_back(tmp_path: Path) -> None:
    cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}"])
    assert load_tuned(cfg) == {}
    save_tuned(cfg, {"train": {"learning_rate": 1e-3, "pack_questions": 2}, "train_score": 0.5})
    save_tuned(cfg, {"decoding": {"prompt": "short_answer", "name": "tuned", "num_beams": 2}, "decoding_score": 0.6})
    save_tuned(cfg, {"vote": {"method": "fuzzy", "threshold": 85.0, "weights": None}, "vote_score": 0.7})
    tuned = load_tuned(cfg)
    assert tuned["vote"] == {"method": "fuzzy", "threshold": 85.0, "weights": None} and tuned["train_score"] == 0.5
    trained, params = tuned_train(cfg)
    assert (trained.train.learning_rate, trained.train.pack_questions, params["pack_questions"]) == (1e-3, 2, 2)
    prompt, decoding = tuned_job(cfg)
    assert (prompt, decoding.num_beams) == ("short_answer", 2)
    (tmp_path / "experiments" / "demo" / "tuned.yaml").write_text("vote: {method: majority}\ntrain:\n")
    assert load_tuned(cfg) == {"vote": {"method": "majority", "threshold": 90.0, "weights": None}, "train": None}


# 2. damaged prediction files, read by cv, tune and ensemble


@pytest.fixture(scope="module")
def predicted_work(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with folds and hand-made OOF and test predictions of two members on every fold."""
    work = tmp_path_factory.mktemp("predicted") / "w"
    predicted(demo_root, work)
    return work


@pytest.fixture
def work(predicted_work: Path, tmp_path: Path) -> Path:
    """A private copy of the predicted workdir."""
    shutil.copytree(predicted_work, tmp_path / "w")
    return tmp_path / "w"


def oof_file(work: Path, fold: int = 1, split: str = "oof") -> Path:
    return work / "experiments" / "demo" / f"fold{fold}" / "predictions" / f"{split}.jsonl"


def edit_line(n: int, fn: Callable[[dict], object]) -> Callable[[Path], None]:
    """Replace line n (1-based) of the file by fn(its row), written as JSON unless fn gives text."""

    def apply(path: Path) -> None:
        lines = path.read_text().splitlines(keepends=True)
        new = fn(json.loads(lines[n - 1]))
        lines[n - 1] = new if isinstance(new, str) else json.dumps(new) + "\n"
        path.write_text("".join(lines))

    return apply


def without(key: str) -> Callable[[dict], dict]:
    return lambda r: {k: v for k, v in r.items() if k != key}


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def cut_last(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def duplicate(n: int) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        lines = lines_of(path)
        path.write_text("".join([*lines, lines[n - 1]]))

    return apply


def drop_line(n: int) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        lines = lines_of(path)
        path.write_text("".join(lines[: n - 1] + lines[n:]))

    return apply


def first_id(path: Path) -> str:
    return json.loads(lines_of(path)[0])["id"]


def count_lines(path: Path) -> int:
    return len(lines_of(path))


DAMAGE: dict[str, tuple[Callable[[Path], None], Callable[[Path], list[str]]]] = {
    "a line cut in the middle": (edit_line(5, lambda r: json.dumps(r)[:30] + "\n"), lambda p: ["line 5: not JSON"]),
    "a cut last line": (cut_last, lambda p: [f"line {count_lines(p)}: cut short (no line end)", "--fold 1"]),
    "a non-JSON line": (edit_line(7, lambda r: "<<<<<<< HEAD\n"), lambda p: ["line 7: not JSON", "<<<<<<< HEAD"]),
    "a JSON line that is no row": (edit_line(7, lambda r: "[1, 2]\n"), lambda p: ["line 7: expected a JSON object"]),
    "malformed alternatives": (edit_line(3, lambda r: {**r, "alternatives": [["red"]]}), lambda p: ["line 3, 'alternatives'"]),
    "alternatives not a list": (edit_line(3, lambda r: {**r, "alternatives": "red"}), lambda p: ["line 3, 'alternatives'"]),
    "a non-numeric logprob": (edit_line(4, lambda r: {**r, "logprob": "-1.2"}), lambda p: ["line 4, 'logprob'", "'-1.2'"]),
    "a NaN logprob": (edit_line(4, lambda r: {**r, "logprob": float("nan")}), lambda p: ["line 4, 'logprob'", "nan"]),
    "a null logprob": (edit_line(4, lambda r: {**r, "logprob": None}), lambda p: ["line 4, 'logprob'", "None"]),
    "a numeric answer": (edit_line(2, lambda r: {**r, "answer": 2}), lambda p: ["line 2, 'answer': expected a string"]),
    "an unknown id": (edit_line(6, lambda r: {**r, "id": "TRAIN_999999"}),
                      lambda p: ["line 6, 'id': 'TRAIN_999999' is not a validation question of fold 1"]),
    "another fold's id": (lambda p: edit_line(6, lambda r: {**r, "id": first_id(oof_file(p.parents[4], 0))})(p),
                          lambda p: ["line 6, 'id':", "is not a validation question of fold 1"]),
    "a row of another fold": (edit_line(6, lambda r: {**r, "fold": 0}), lambda p: ["line 6: a row of fold 0's oof split"]),
    "a duplicate row": (duplicate(2), lambda p: [f"line {count_lines(p)}: duplicate row of", "(first on line 2)"]),
    "a row without answer": (edit_line(8, without("answer")), lambda p: ["line 8: no 'answer' field"]),
    "a missing question": (drop_line(3), lambda p: ["plain/greedy answers", "questions (none for 'TRAIN_"]),
    "an empty file whose meta says complete": (
        lambda p: (p.write_text(""), meta_path(p).write_text('{"config_hash": "x", "complete": true}')),
        lambda p: ["no rows, though oof.meta.json says complete"],
    ),
    "an unfinished file": (
        lambda p: meta_path(p).write_text('{"config_hash": "x", "complete": false}'),
        lambda p: ["unfinished (oof.meta.json says complete: false)", "predict --fold 1"],
    ),
    "a damaged meta": (lambda p: meta_path(p).write_text("{"), lambda p: ["oof.meta.json: not a prediction sidecar"]),
}


@pytest.mark.parametrize("command", ["cv", "ensemble"])
@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_prediction_file_is_one_line_naming_file_and_line(
    case: str, command: str, demo_root: Path, work: Path
) -> None:
    damage, needles = DAMAGE[case]
    path = oof_file(work)
    damage(path)
    before = files_under(work)
    res = run(command, demo_root, work)
    assert_one_line_error(res, [f"error: {path.parent / 'oof.'}", *needles(path)])  # oof.jsonl, or its oof.meta.json
    assert files_under(work) == before


@pytest.mark.parametrize(
    ("damage", "needles"),
    [(duplicate(1), ["duplicate row of"]), (edit_line(2, lambda r: {**r, "id": "TRAIN_000000"}), ["is not a test question"]),
     (drop_line(1), ["answers 59 of 60 questions"])],
)  # fmt: skip
def test_a_damaged_test_file_stops_the_ensemble(damage: Callable, needles: list[str], demo_root: Path, work: Path) -> None:
    path = oof_file(work, 2, "test")
    damage(path)
    res = run("ensemble", demo_root, work)
    assert_one_line_error(res, [f"{path}", *needles])
    assert not (work / "submissions").exists()


def test_a_trained_fold_without_predictions_is_refused(demo_root: Path, work: Path) -> None:
    oof_file(work, 2).unlink()
    (work / "experiments" / "demo" / "fold2" / "model").mkdir(parents=True, exist_ok=True)
    (work / "experiments" / "demo" / "fold2" / "train_metrics.json").write_text("{}")
    res = run("cv", demo_root, work)
    assert_one_line_error(res, [f"{oof_file(work, 2)}: not found, though fold 2 is trained", "predict --fold 2"])


def test_untrained_folds_are_named_in_a_warning(demo_root: Path, work: Path) -> None:
    for fold in (1, 2):
        oof_file(work, fold).unlink()
    res = run("cv", demo_root, work)
    assert res.exit_code == 0, res.output
    assert "warning: demo: oof predictions of fold 0 only (fold 1, 2 not trained yet)" in res.stderr
    scored = json.loads((work / "experiments" / "demo" / "cv.json").read_text())["members"]
    assert {m["n"] for m in scored} == {sum(1 for _ in lines_of(oof_file(work, 0))) // 2}


def test_a_member_missing_from_one_folds_file_is_refused(demo_root: Path, work: Path) -> None:
    path = oof_file(work, 2)
    path.write_text("".join(line for line in lines_of(path) if '"prompt": "plain"' not in line))
    res = run("cv", demo_root, work)
    assert_one_line_error(res, [f"{path}: no rows of plain/greedy, which fold 0's file has", "predict --fold 2"])


def test_predict_resumes_after_a_cut_last_line_and_refuses_a_damaged_one(tmp_path: Path) -> None:
    path = tmp_path / "oof.jsonl"
    row = {"id": "T0", "fold": 0, "split": "oof", "prompt": "p", "decoding": "greedy", "raw": "Yes", "answer": "yes",
           "logprob": -0.1, "alternatives": []}  # fmt: skip
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "id": "T1"})[:25])
    log = PredictionLog(path, "h")
    assert log.done() == {("T0", "p", "greedy")} and path.read_text() == json.dumps(row) + "\n"
    log.append([{**row, "id": "T1"}])
    log.finish()
    assert read_predictions(path)["id"].tolist() == ["T0", "T1"]
    assert json.loads(meta_path(path).read_text()) == {"config_hash": "h", "complete": True}
    path.write_text("garbage\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"^{path}: line 1: not JSON: 'garbage'$"):
        PredictionLog(path, "h").done()


# 3. ensemble and demo options


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--with", "demo"], ["ensemble.experiments: 'demo' is this experiment: its members would count twice"]),
        (["--with", "other", "--with", "other"], ["ensemble.experiments: 'other' is named twice"]),
        (["--with", "../x"], ["bad value for 'ensemble.experiments.0'", "not one folder name under experiments/"]),
        (["--with", "/tmp"], ["bad value for 'ensemble.experiments.0'", "(got '/tmp')"]),
        (["--name", ""], ["--name '': expected a file name"]),
        (["--name", "../up"], ["--name '../up': expected a file name"]),
    ],
)
def test_an_ensemble_that_would_count_members_twice_or_write_elsewhere_is_refused(
    extra: list[str], needles: list[str], demo_root: Path, work: Path
) -> None:
    res = run("ensemble", demo_root, work, *extra)
    assert_one_line_error(res, needles)
    assert not (work / "submissions").exists()


def test_a_with_of_no_path_is_refused() -> None:
    for spec in ("@7", ""):
        with pytest.raises(ConfigError, match=f"^--with {spec}: expected PATH or PATH@SEED"):
            config_at_seed(spec, [])
    res = runner.invoke(app, ["demo", "-c", "configs/demo.yaml", "--with", "@7"])
    assert_one_line_error(res, ["--with @7: expected PATH or PATH@SEED with a whole-number seed"])


def test_a_demo_with_other_folds_is_refused_before_anything_trains(demo_root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(Path("configs/demo_classifier_patch.yaml").read_text().replace("  k: 3\n", "  k: 4\n"))
    sets = ["--set", f"data.root={demo_root}", "--set", f"workdir={tmp_path / 'w'}"]
    res = runner.invoke(app, ["demo", "-c", "configs/demo.yaml", "--with", str(other), *sets])
    assert_one_line_error(res, ["--with demo_classifier_patch: folds.k=4 differs from demo's folds.k=3"])
    assert not (tmp_path / "w").exists()
    for name, folds in (("demo", "id,image_id,fold\na,a,0\n"), ("demo_classifier_patch", "id,image_id,fold\na,a,1\n")):
        (tmp_path / "w" / "experiments" / name).mkdir(parents=True)
        (tmp_path / "w" / "experiments" / name / "folds.csv").write_text(folds)
    before = files_under(tmp_path / "w")
    res = runner.invoke(app, ["demo", "-c", "configs/demo.yaml", "--with", "configs/demo_classifier_patch.yaml", *sets])
    assert_one_line_error(res, ["--with demo_classifier_patch:", "demo_classifier_patch/folds.csv differs from"])
    assert files_under(tmp_path / "w") == before


# 4. a test ID that is also a training ID


def test_a_test_id_that_is_a_training_id_is_one_line(data_copy: Path, tmp_path: Path) -> None:
    train = pd.read_csv(data_copy / "train.csv", dtype=str)
    edit_csv("test.csv", set_cell("ID", 3, train["ID"][6]))(data_copy)
    edit_csv("sample_submission.csv", set_cell("ID", 3, train["ID"][6]))(data_copy)
    res = run("folds", data_copy, tmp_path / "w")
    assert_one_line_error(res, [f"{data_copy / 'test.csv'}: line 5, column 'ID': ID '{train['ID'][6]}' is also a "
                                f"training ID ({data_copy / 'train.csv'}: line 8)"])  # fmt: skip
    assert not (tmp_path / "w").exists()


# 5. train.max_steps and --set of a whole section


@pytest.mark.parametrize(("steps", "message"), [(-2, "greater than or equal to -1"), (0, "0 steps trains nothing")])
def test_max_steps_other_than_minus_one_or_positive_is_refused(steps: int, message: str) -> None:
    with pytest.raises(ConfigError, match=f"bad value for 'train.max_steps': .*{message}.*\\(got {steps}\\)"):
        load_config("configs/demo.yaml", [f"train.max_steps={steps}"])
    for fine in (-1, 1):
        assert load_config("configs/demo.yaml", [f"train.max_steps={fine}"]).train.max_steps == fine


def test_set_of_a_mapping_on_a_section_changes_only_its_keys() -> None:
    base = load_config("configs/demo_classifier_patch.yaml")
    cfg = load_config("configs/demo_classifier_patch.yaml", ["model.classifier={image_size: 64, hidden: 64}"])
    assert cfg.model.classifier == base.model.classifier.model_copy(update={"image_size": 64, "hidden": 64})
    assert cfg.model.classifier.position_std == 0.3 and cfg.model.classifier.vision_config["kernel_size"] == 2
    nested = load_config("configs/demo_classifier_patch.yaml", ["model={classifier: {image_size: 64, hidden: 64}}"])
    assert nested.model == cfg.model and nested.model.family == "classifier"
    top = load_config("configs/demo_classifier_patch.yaml", ["train={epochs: 2}"])
    assert top.train == base.train.model_copy(update={"epochs": 2.0})
    # a dict-valued field (not a section) is replaced whole: another model_type's keys must not mix in
    resnet = load_config("configs/demo_classifier_patch.yaml", ["model.classifier.vision_config={model_type: resnet}"])
    assert resnet.model.classifier.vision_config == {"model_type": "resnet"}
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.classifier\.imagesize'"):
        load_config("configs/demo_classifier_patch.yaml", ["model.classifier={imagesize: 64}"])
