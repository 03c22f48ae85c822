"""What the commands print: plain lines, warnings, tables and progress bars (rich).

python -c "from competition.console import say; say('hello')"
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from competition.errors import CompetitionError

console = Console(stderr=True)
out = Console()
BESIDE = {"name": ""}  # set by beside_others: this process shares the terminal with others running side by side


def beside_others(name: str) -> None:
    """From now on this process draws no progress bars and starts each line with `[name]`."""
    BESIDE["name"] = name


def progress_bar(rate: bool = False) -> Progress:
    """A transient rich progress bar: count, elapsed time and ETA; with `rate`, questions per second too."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *([RateColumn()] if rate else [])]
    return Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                    disable=bool(BESIDE["name"]))  # fmt: skip


def tagged(text: str) -> str:
    return f"[{BESIDE['name']}] {text}" if BESIDE["name"] else text


def walk_with_bar(description: str) -> Callable[[Iterable, int], Iterator]:
    """A `progress(items, total)` callable that walks the items under a transient bar."""

    def walk(items: Iterable, total: int) -> Iterator:
        with progress_bar() as bar:
            yield from bar.track(items, total=total, description=description)

    return walk


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    """A rich table of dict rows (floats to 4 digits)."""
    t = Table(title=title)
    for col in rows[0] if rows else []:
        t.add_column(str(col), justify="right")
    for r in rows:
        t.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()))
    return t


def say(text: str) -> None:
    """Print a plain line (no markup, no wrapping) to stdout."""
    out.print(tagged(text), markup=False, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    """Print a warning line to stderr (above any progress bar)."""
    console.print(tagged(text), markup=False, highlight=False, soft_wrap=True)


def leaderboard_table(df: Any) -> Table:
    """The leaderboard's key columns as a rich table that fits 80 columns: public and gap once a public score is
    recorded, held-out accuracy where known, a single member's method as 'member', the name last and whole."""
    shown = ["rank", "cv", *(["public", "gap"] if df["public"].notna().any() else []),
             *(["held_out"] if df["held_out"].notna().any() else []), "method", "name"]  # fmt: skip
    t = Table(title="leaderboard (ranked by local CV)")
    for col in shown:
        t.add_column(col, justify="left" if col == "name" else "right", overflow="fold")
    for r in df[shown].replace({"method": {"majority over folds": "member", "soft over folds": "member"}}).to_dict("records"):
        t.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()))
    return t


class RateColumn(ProgressColumn):
    """Items per second of a task."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:.1f} q/s")


def tracker(bar: Progress) -> Callable[[str, int], Callable[..., None]]:
    """A factory of progress callbacks: one task of the bar per (name, total); tick(n, status) advances it by n
    and shows `status` after the name."""

    def track(name: str, total: int) -> Callable[..., None]:
        task = bar.add_task(name, total=total)

        def tick(n: int, status: str = "") -> None:
            bar.update(task, advance=n, description=f"{name} {status}".strip())

        return tick

    return track




def quiet_libraries() -> None:
    """Keep library warnings and weight-loading bars out of the command's output."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def fails_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a CompetitionError into one line on stderr and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CompetitionError as e:
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(2) from None

    return wrapper


def run_app(app: Any) -> None:
    """Run a typer app: a usage error (unknown option, bad value) is one line on stderr and exit status 2."""
    from typer.exceptions import TyperException

    try:
        code = app(standalone_mode=False)
    except TyperException as e:  # typer's usage errors (its ClickException family)
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx else "python -m competition"
        print(f"error: {e.format_message()} (see {where} --help)", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
