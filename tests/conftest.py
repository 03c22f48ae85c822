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


def minutes(item: pytest.Item) -> float:
    """A test's rough cost: `@pytest.mark.slow(minutes=N)`, 1 for a plain slow mark, 0 unmarked."""
    mark = item.get_closest_marker("slow")
    return 0 if mark is None else mark.kwargs.get("minutes", 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first, so that parallel workers start on them and finish together on the short ones.
    `--dist worksteal` hands each worker a contiguous share of this order (and steals from the shares' ends), so
    the tests are dealt round-robin into one share per worker: each share starts with its own long tests."""
    items.sort(key=minutes, reverse=True)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    items[:] = [test for share in range(workers) for test in items[share::workers]]


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
