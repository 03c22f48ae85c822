"""Shared fixtures: a small generated competition folder, copied per test when a test edits it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from competition.synthetic import generate


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
