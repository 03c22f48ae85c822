"""Pins of the config and the folds: every numeric bound at its limit, experiment names, the config hash, load_config's
messages; fold_rows' parts, read_folds' refusals."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel

from competition.config import Config, load_config
from competition.data import Competition
from competition.errors import ConfigError, DataError
from competition.folds import fold_rows, make_folds, read_folds, strata, write_folds

# The items a bound inside a list of sections is tried on (the other keys an item needs).
LIST_ITEMS: dict[str, dict[str, Any]] = {"predict.decodings": {"name": "x"}, "ensemble.external": {"path": "x.csv", "name": "e"},
                                         "auto.portfolio": {"name": "r", "ranges": {"train.learning_rate": [1e-4, 1e-3]}}}


def section_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the section a field holds, whether as the items of a list)."""
    is_list = getattr(annotation, "__origin__", None) is list
    item = annotation.__args__[0] if is_list else annotation
    return (item if isinstance(item, type) and issubclass(item, BaseModel) else None), is_list


def bounds(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, float, bool]]:
    """(dotted key, 'ge'|'gt'|'le'|'lt', limit, whole numbers) of every numeric bound of the config's fields."""
    out = []
    for name, field in model.model_fields.items():
        section, is_list = section_of(field.annotation)
        if section is not None:
            out += bounds(section, f"{prefix}{name}{'[]' if is_list else ''}.")
        whole = "int" in str(field.annotation) and "float" not in str(field.annotation)
        for m in field.metadata:
            for kind in (Ge, Gt, Le, Lt):
                if isinstance(m, kind):
                    out.append((prefix + name, kind.__name__.lower(), getattr(m, kind.__name__.lower()), whole))
    return out


BOUNDS = bounds()


def override(key: str, value: float) -> tuple[str, str]:
    """The --set that gives `key` the value, and the key an error names."""
    if "[]." not in key:
        return f"{key}={value}", key
    field, _, name = key.partition("[].")
    return f"{field}=[{json.dumps({**LIST_ITEMS[field], name: value})}]", f"{field}.0.{name}"


def test_every_bound_of_the_config_is_found() -> None:
    keys = {k for k, *_ in BOUNDS}
    assert len(BOUNDS) >= 45
    assert {"folds.k", "train.max_steps", "train.effective_batch_size", "predict.decodings[].top_p",
            "ensemble.external[].weight", "model.classifier.dropout", "tune.max_questions"} <= keys  # fmt: skip


@pytest.mark.parametrize(("key", "kind", "limit", "whole"), BOUNDS, ids=[f"{k}-{b}" for k, b, *_ in BOUNDS])
def test_each_bound_refuses_beyond_its_limit_and_accepts_at_it(key: str, kind: str, limit: float, whole: bool) -> None:
    step = 1 if whole else 1e-6
    inside, outside = {"ge": (limit, limit - step), "le": (limit, limit + step), "gt": (limit + step, limit),
                       "lt": (limit - step, limit)}[kind]  # fmt: skip
    text, named = override(key, outside)
    with pytest.raises(ConfigError, match=rf"^config with --set: bad value for '{re.escape(named)}': .*{kind[0]}"):
        load_config(None, [text])
    text, _ = override(key, inside)
    cfg = load_config(None, [text]).to_dict()
    for part in key.replace("[]", ".0").split("."):
        cfg = cfg[int(part)] if part.isdigit() else cfg[part]
    assert cfg == inside


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", "..", ".", "...", "", "a b", "x\\y", "~"])
def test_an_experiment_name_outside_experiments_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"bad value for 'experiment': not one folder name under experiments/"):
        load_config(None, [f"experiment='{name}'"])
    with pytest.raises(ConfigError, match=r"bad value for 'ensemble.experiments.0': not one folder name"):
        load_config(None, [f"ensemble.experiments=['{name}']"])


@pytest.mark.parametrize("name", ["a", "a.b-c_1", ".x", "x..", "A9", "X"])
def test_an_experiment_name_is_one_folder_under_experiments(name: str, tmp_path: Path) -> None:
    cfg = load_config(None, [f"experiment={name}", f"workdir={tmp_path}", f"ensemble.experiments=[{name}]"])
    assert cfg.exp_dir == tmp_path / "experiments" / name and cfg.exp_dir.parent == tmp_path / "experiments"
    assert cfg.fold_dir(2) == cfg.exp_dir / "fold2" and cfg.submissions_dir == tmp_path / "submissions"


@pytest.mark.parametrize(
    ("setting", "key"),
    [("predict.decodings=[]", "predict.decodings"), ("predict.prompts=[]", "predict.prompts"),
     ("train.effective_batch_size=0", "train.effective_batch_size"), ("train.max_steps=0", "train.max_steps"),
     ("model.classifier.hidden=130", "model.classifier"), ("predict.decodings=[{name: 'a b'}]", "predict.decodings.0.name")],
)  # fmt: skip
def test_an_empty_list_or_a_value_that_does_nothing_is_refused(setting: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^config with --set: bad value for '{re.escape(key)}': "):
        load_config(None, [setting])


def test_a_bad_value_for_a_key_of_two_kinds_names_the_key_and_both_kinds() -> None:
    with pytest.raises(ConfigError, match=r"^config with --set: bad value for 'model.classifier.image_size': Input "
                       r"should be a valid integer.* or Input should be 'data' \(got 'foo'\)$"):  # fmt: skip
        load_config(None, ["model.classifier.image_size=foo"])


def test_the_prompts_default_to_the_training_prompt() -> None:
    assert load_config(None, ["train.prompt=plain"]).predict.prompts == ["plain"]
    assert load_config(None, ["train.prompt=plain", "predict.prompts=[one_word]"]).predict.prompts == ["one_word"]
    assert load_config(None, ["model.classifier.hidden=132", "model.classifier.fusion_heads=4"]).model.classifier.hidden == 132


def test_the_config_hash_is_pinned() -> None:
    cfg = load_config("configs/demo.yaml")
    digest = cfg.hash()
    assert re.fullmatch(r"[0-9a-f]{12}", digest)
    assert digest == hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    assert load_config("configs/demo.yaml").hash() == digest == cfg.hash()  # stable across calls and loads
    assert load_config("configs/demo.yaml", ["seed=43"]).hash() != digest
    assert load_config("configs/demo.yaml", ["predict.decodings=[{name: greedy}]"]).hash() != digest
    one, two = load_config(None, ["seed=1", "folds.k=3"]), load_config(None, ["folds.k=3", "seed=1"])
    assert one.hash() == two.hash() != load_config().hash()
    assert isinstance(cfg.to_dict()["workdir"], str) and cfg.to_dict()["data"]["root"] == "data/demo"


def test_load_configs_messages_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'none.yaml'}: config file not found$"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'list.yaml'}: expected a mapping at the top level$"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "c.yaml").write_text("folds: {k: 1}\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'c.yaml'}: bad value for 'folds.k': Input should be greater "
                       r"than or equal to 2 \(got 1\)$"):  # fmt: skip
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'c.yaml'} with --set: bad value for 'folds.k'"):
        load_config(tmp_path / "c.yaml", ["seed=3"])
    with pytest.raises(ConfigError, match=r"^--set: unknown config key 'folds.kk' \(valid keys: folds.k, folds.seed, "
                       r"folds.max_strata\)$"):  # fmt: skip
        load_config(None, ["folds.kk=3"])
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == load_config()


# Folds: fold_rows' two parts, and a folds.csv that does not fit

TRAIN = pd.DataFrame({"id": [f"T{i}" for i in range(9)], "image_id": list("aabbccdde"), "question": ["q?"] * 9,
                      "answer": list("xyxyxyxyx")})  # fmt: skip
FOLDS = pd.DataFrame({"id": TRAIN["id"], "image_id": TRAIN["image_id"], "fold": [1, 1, 0, 0, 2, 2, 0, 0, 1]})


def competition(train: pd.DataFrame = TRAIN) -> Competition:
    cfg = load_config(None)
    return Competition(train, train.iloc[:0], train[["id", "answer"]].iloc[:0], {}, {}, cfg.data)


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_fold_rows_splits_the_table_into_disjoint_complete_parts(fold: int) -> None:
    comp = competition()
    train, val = fold_rows(comp, FOLDS, fold, "train"), fold_rows(comp, FOLDS, fold, "val")
    assert val["id"].tolist() == FOLDS["id"][FOLDS["fold"] == fold].tolist()  # the table's order
    assert train["id"].tolist() == FOLDS["id"][FOLDS["fold"] != fold].tolist()
    assert set(train["id"]).isdisjoint(val["id"]) and len(train) + len(val) == len(TRAIN)
    assert list(val.index) == list(range(len(val))) and list(train.columns) == list(TRAIN.columns)


def test_fold_rows_follows_the_ids_not_the_row_order() -> None:
    shuffled = FOLDS.iloc[::-1].reset_index(drop=True)
    assert fold_rows(competition(), shuffled, 2, "val")["id"].tolist() == ["T4", "T5"]


def test_a_training_id_that_folds_csv_lacks_is_refused_not_dropped() -> None:
    with pytest.raises(ConfigError, match=r"^folds.csv does not cover train.csv \(no fold for ID 'T3'\); rerun "
                       r"`python -m competition folds`$"):  # fmt: skip
        fold_rows(competition(), FOLDS.drop(index=3), 0, "train")
    with pytest.raises(ConfigError, match=r"^--fold 3: folds.csv has folds 0, 1, 2; pick one of them \(or rerun "
                       r"`folds` after changing folds.k\)$"):  # fmt: skip
        fold_rows(competition(), FOLDS, 3, "val")


@pytest.mark.parametrize(
    ("text", "message"),
    [("ID,image_id,fold\nT0,a,0\n", "columns are 'ID,image_id,fold', not 'id,image_id,fold'; rerun `folds`"),
     ("id,image_id\nT0,a\n", "columns are 'id,image_id', not 'id,image_id,fold'; rerun `folds`"),
     ("id,image_id,fold,x\nT0,a,0,1\n", "columns are 'id,image_id,fold,x', not 'id,image_id,fold'; rerun `folds`"),
     ("id,image_id,fold\nT0,a,0\nT1,a,one\n", "line 3, column 'fold': 'one' is not a fold number; rerun `folds`"),
     ("id,image_id,fold\nT0,a,0\nT1,a,-1\n", "line 3, column 'fold': '-1' is not a fold number; rerun `folds`"),
     ("id,image_id,fold\nT0,a,0\nT1,a,1\nT0,b,1\n", "line 4, column 'id': 'T0' repeats an ID; rerun `folds`"),
     ("", "cannot parse CSV: No columns to parse from file; rerun `folds`")],
)  # fmt: skip
def test_a_folds_csv_that_does_not_fit_is_refused(text: str, message: str, tmp_path: Path) -> None:
    cfg = load_config(None, [f"workdir={tmp_path}"])
    path = cfg.exp_dir / "folds.csv"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(DataError, match=f"^{re.escape(f'{path}: {message}')}$"):
        read_folds(cfg)


def test_read_folds_gives_whole_fold_numbers_and_string_ids(tmp_path: Path) -> None:
    cfg = load_config(None, [f"workdir={tmp_path}", "folds.k=3"])
    path, report = write_folds(cfg, TRAIN.assign(id=["NA", "001", *TRAIN["id"][2:]]))
    folds = read_folds(cfg)
    assert path == tmp_path / "experiments" / "demo" / "folds.csv"
    assert folds["id"].tolist()[:2] == ["NA", "001"] and folds["fold"].dtype == "int64"
    assert folds.equals(make_folds(TRAIN.assign(id=["NA", "001", *TRAIN["id"][2:]]), 3, cfg.folds.seed, 64))
    assert report["questions"].sum() == len(TRAIN) and report["fold"].tolist() == [0, 1, 2]


def test_strata_without_a_common_answer_is_one_stratum() -> None:
    assert strata(pd.Series(["x", "y"]), 5, 3).tolist() == [0, 0]  # fewer rare rows than k, and no answer to join
