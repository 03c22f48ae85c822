"""Shared fixtures: a small generated competition folder, copied per test when a test edits it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from competition.config import load_config
from competition.data import load_competition
from competition.folds import read_folds, write_folds
from competition.synthetic import generate
from competition.train import train_fold

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs `pytest -n auto`: one thread per worker and core
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


TIERS = ("e2e", "train")  # marked by hand; every other test is a unit test (no training, seconds)


def minutes(item: pytest.Item) -> float:
    """A test's rough cost on one core: `minutes=N` of its tier mark (`train` 0.1, `e2e` 1 unless given), 0 for a
    unit test."""
    for tier, default in zip(TIERS, (1.0, 0.1), strict=True):
        if mark := item.get_closest_marker(tier):
            return mark.kwargs.get("minutes", default)
    return 0.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tiers: a test that uses the `trained` fixture is a `train` test, an unmarked one a `unit` test. Then the
    longest tests first, so that parallel workers start on them and finish together on the short ones.
    `--dist worksteal` hands each worker a contiguous share of this order (and steals from the shares' ends), so
    the tests are dealt round-robin into one share per worker: each share starts with its own long tests."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()) and not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(pytest.mark.train)
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(pytest.mark.unit)
    items.sort(key=minutes, reverse=True)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    items[:] = [test for share in range(workers) for test in items[share::workers]]


@pytest.fixture(autouse=True)
def unit_tests_do_not_train(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that starts HF Trainer fails: it belongs to the `train` tier (mark it)."""
    if request.node.get_closest_marker("unit"):
        from transformers import Trainer

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("a unit test trains a model: mark it @pytest.mark.train (or e2e)")

        monkeypatch.setattr(Trainer, "train", refuse)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo data set shared read-only by the whole session."""
    root = tmp_path_factory.mktemp("demo") / "data"
    generate(root, train_images=60, test_images=15, q_per_image=4, seed=1)
    return root


@pytest.fixture
def data_copy(demo_root: Path, tmp_path: Path) -> Path:
    """A private copy of the demo data set that a test may break."""
    dst = tmp_path / "data"
    shutil.copytree(demo_root, dst)
    return dst


BASE = [
    "folds.k=3",
    "train.per_device_batch_size=16",
    "train.learning_rate=3e-4",
    "train.max_steps=120",
    "train.warmup_ratio=0",
    "train.save_steps=1000",
    "train.eval_steps=0",
    "train.cache_images=true",
    "predict.batch_size=8",
    "predict.prompts=[short_answer, plain]",
    "predict.decodings=[{name: greedy}, {name: beam2, num_beams: 2}, {name: vocab, constrained: true}]",
]


@pytest.fixture(scope="session")
def trained(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """A workdir with fold 0 of the tiny model trained; returns (config overrides, workdir)."""
    work = tmp_path_factory.mktemp("trained")
    sets = [f"data.root={demo_root}", f"workdir={work}", *BASE]
    cfg = load_config("configs/demo.yaml", sets)
    comp = load_competition(cfg.data)
    write_folds(cfg, comp.train)
    train_fold(cfg, comp, read_folds(cfg), 0, log=lambda s: None)
    return sets, work
