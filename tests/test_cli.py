"""The command line: usage errors and bad configs are one line; a missing folds.csv is made, never replaced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from competition.config import load_config
from competition.errors import ConfigError
from competition.folds import fold_rows
from competition.pipeline import stage_inputs


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "competition", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--fold", "abc"], "error: Invalid value for '--fold'"),
        (["train", "--fold", "-1"], "greater than or equal to 0"),
        (["train", "--bogus"], "error: No such option: --bogus"),
        (["bogus"], "error: No such command 'bogus'"),
    ],
)
@pytest.mark.e2e(minutes=0.1)
def test_usage_errors_are_one_line(args: list[str], message: str) -> None:
    res = cli(*args)
    assert res.returncode == 2 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.e2e(minutes=0.1)
def test_a_demo_of_experiments_sharing_a_name_is_refused_before_it_starts(tmp_path: Path) -> None:
    res = cli("demo", "-c", "configs/demo.yaml", "--with", "configs/demo.yaml", "--set", f"workdir={tmp_path}")
    assert res.returncode != 0 and "share an experiment name (demo, demo)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "experiments").exists()


def test_a_config_at_another_seed_is_its_own_experiment_on_the_same_folds() -> None:
    from competition.demo import config_at_seed

    base, other = config_at_seed("configs/demo_classifier_patch.yaml", []), config_at_seed("configs/demo_classifier_patch.yaml@7", [])
    assert (other.experiment, other.seed) == ("demo_classifier_patch_seed7", 7) and base.seed == 42
    assert other.folds == base.folds and other.model == base.model
    with pytest.raises(ConfigError, match=r"--with configs/demo.yaml@x: expected PATH or PATH@SEED"):
        config_at_seed("configs/demo.yaml@x", [])


def test_a_fold_that_folds_csv_lacks_is_refused(demo_root: Path, tmp_path: Path) -> None:
    cfg = load_config("configs/demo.yaml", [f"data.root={demo_root}", f"workdir={tmp_path}", "folds.k=3"])
    comp, folds = stage_inputs(cfg)
    with pytest.raises(ConfigError, match=r"--fold 4: folds.csv has folds 0, 1, 2"):
        fold_rows(comp, folds, 4, "train")
    assert len(fold_rows(comp, folds, 2, "val")) > 0


def test_a_missing_folds_csv_is_written_and_an_existing_one_kept(
    demo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sets = [f"data.root={demo_root}", f"workdir={tmp_path}"]
    _, folds = stage_inputs(load_config("configs/demo.yaml", [*sets, "folds.k=3"]))
    assert "folds.csv (3 folds, seed 42): it was missing" in capsys.readouterr().out
    path = tmp_path / "experiments" / "demo" / "folds.csv"
    before = path.read_bytes()
    _, again = stage_inputs(load_config("configs/demo.yaml", [*sets, "folds.k=5"]))
    assert path.read_bytes() == before and sorted(again["fold"].unique()) == [0, 1, 2]
    assert "it was missing" not in capsys.readouterr().out


def test_make_train_on_a_fresh_clone_makes_the_demo_data_first(tmp_path: Path) -> None:
    res = subprocess.run(["make", "-n", "fold=0", "train", f"DEMO_DATA={tmp_path}/demo"], capture_output=True, text=True)
    lines = res.stdout.splitlines()
    data = next(i for i, line in enumerate(lines) if f"competition data --out {tmp_path}/demo" in line)
    assert data < next(i for i, line in enumerate(lines) if "competition train -c configs/demo.yaml" in line)
    res = subprocess.run(["make", "-n", "fold=0", "train", "config=configs/llava15_7b_lora.yaml",
                          f"DEMO_DATA={tmp_path}/demo"], capture_output=True, text=True)  # fmt: skip
    assert "competition data" not in res.stdout


@pytest.mark.parametrize(
    "text,message",
    [
        ("experiment: x\ntrain:\n\tmode: full\n", r"line 3, column 1: invalid YAML: .*never tabs"),
        ("predict:\n  prompts: [a, b\n", r"line 3, column 1: invalid YAML: expected ',' or ']'"),
        ("- a\n- b\n", "expected a mapping at the top level"),
    ],
)
def test_config_errors_name_the_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_binary_config_or_a_file_as_workdir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match=r"c.yaml: not a UTF-8 text file"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "afile").write_text("")
    for workdir in ("afile", "afile/below"):
        with pytest.raises(ConfigError, match=r"'workdir': .*afile is a file, not a folder"):
            load_config("configs/demo.yaml", [f"workdir={tmp_path / workdir}"])


@pytest.mark.e2e(minutes=0.2)
def test_a_cpu_training_run_prints_no_deepspeed_device_warning(demo_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("deepspeed")
    sets = [f"data.root={demo_root}", f"workdir={tmp_path}", "train.max_steps=1", "train.eval_steps=0"]
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    res = subprocess.run([sys.executable, "-m", "competition", "train", "-c", "configs/demo.yaml", "--fold", "0",
                          *[x for s in sets for x in ("--set", s)]], capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Setting accelerator" not in res.stdout + res.stderr


def test_the_config_command_lists_every_key_with_its_value_and_meaning() -> None:
    from typer.testing import CliRunner

    from competition.cli import app
    from competition.docs import key_table

    res = CliRunner().invoke(app, ["config", "-c", "configs/demo.yaml", "--set", "folds.k=7"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert any(line.startswith("folds.k=7  # ") and "folds" in line.split("#", 1)[1] for line in lines)
    keys = [r.split("`")[1] for r in key_table() if "[]" not in r.split("`")[1]]
    missing = [k for k in keys if not any(line.startswith(f"{k}=") for line in lines)]
    assert not missing, missing
