"""Atomic file writes (every file the toolkit writes goes to a temporary name, then is renamed) and line-checked
JSON Lines reads."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pandas as pd
import yaml

from competition.errors import DataError


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A fresh sibling folder to fill; it replaces `path` only if the block succeeds."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """Write a DataFrame as CSV (no index) atomically."""
    with atomic_open(path, "w") as f:
        df.to_csv(f, index=False)


def atomic_write_json(obj: Any, path: str | Path) -> None:
    """Write JSON (indented, UTF-8) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_yaml(obj: Any, path: str | Path) -> None:
    """Write YAML atomically, keys in insertion order."""
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def markdown_table(df: pd.DataFrame) -> str:
    """`df` as a GitHub markdown table: floats to 4 decimals, missing values blank."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4f}"
        return str(v).replace("|", "\\|")

    rows = [" | ".join(map(str, df.columns)), " | ".join("---" for _ in df.columns)]
    rows += [" | ".join(cell(v) for v in r) for r in df.itertuples(index=False)]
    return "".join(f"| {r} |\n" for r in rows)


def is_number(v: Any) -> bool:
    """A finite JSON number (not a bool, NaN or infinite)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def read_jsonl(path: Path, strict: bool = False, fix: str = "") -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSON Lines file; a DataError names the file and line of one
    that is not JSON. A last line without its line end (a killed writer's) is skipped, or refused when `strict`."""
    lines = path.read_bytes().split(b"\n")
    if lines.pop() and strict:
        raise DataError(f"{path}: line {len(lines) + 1}: cut short (no line end), its writer was killed{'; ' + fix if fix else ''}")
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except ValueError:
                raise DataError(f"{path}: line {n}: not JSON: {line[:60].decode('utf-8', 'replace')!r}") from None
    return rows
