"""The command line behind `python -m competition …` and the Makefile.

python -m competition --help
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

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

from competition.config import Config, load_config
from competition.errors import CompetitionError, ConfigError


def quiet_transformers() -> None:
    """Keep library warnings and weight-loading bars out of the command's output."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


quiet_transformers()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="VQA competition toolkit: data to ranked submission.",
)
console = Console(stderr=True)


@app.callback()
def check_installed() -> None:
    """Refuse to start on library versions the toolkit was not tested with (one line, exit 2)."""
    from competition.versions import check_versions

    fails_cleanly(check_versions)()

out = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: key.sub=value (repeatable)")]


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


def progress_bar() -> Progress:
    """A rich progress bar with count, rate-friendly columns and ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


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
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    """Print a warning line to stderr (above any progress bar)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def leaderboard_table(df: Any) -> Table:
    """The leaderboard's key columns as a rich table."""
    cols = [c for c in ("rank", "name", "cv", "public", "gap", "method") if c in df.columns]
    return table("leaderboard (ranked by local CV)", df[cols].to_dict("records"))


def config_from(config: Path | None, overrides: list[str] | None) -> Config:
    """Load the config named on the command line with its --set overrides."""
    return load_config(config, overrides or [])


def stage_inputs(cfg: Config) -> tuple[Any, Any]:
    """The competition and its folds; a missing folds.csv is written first (deterministic, never overwritten)."""
    from competition.data import load_competition
    from competition.folds import read_folds, write_folds

    comp = load_competition(cfg.data)
    if not (cfg.exp_dir / "folds.csv").is_file():
        path, _ = write_folds(cfg, comp.train)
        cfg.save()
        say(f"wrote {path} ({cfg.folds.k} folds, seed {cfg.split_seed}): it was missing")
    return comp, read_folds(cfg)


@app.command()
@fails_cleanly
def data(
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the demo competition into")],
    train_images: Annotated[int, typer.Option(help="training images")] = 3000,
    test_images: Annotated[int, typer.Option(help="test images")] = 300,
    questions_per_image: Annotated[int, typer.Option(help="questions per image")] = 4,
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
) -> None:
    """Write the synthetic demo data set in the competition's layout."""
    from competition.synthetic import generate

    counts = generate(out_dir, train_images, test_images, questions_per_image, seed)
    out.print(
        f"wrote {out_dir}: {counts['train']} train / {counts['test']} test questions on "
        f"{counts['train_images']} / {counts['test_images']} images"
    )


@app.command()
@fails_cleanly
def validate(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Validate the tables and decode every image (full scan)."""
    from competition.data import load_competition, scan_images

    cfg = config_from(config, set_)
    comp = load_competition(cfg.data)
    with progress_bar() as bar:
        task = bar.add_task("decoding images", total=None)

        def track(items: list, total: int) -> Any:
            bar.update(task, total=total)
            for x in items:
                yield x
                bar.advance(task)

        n = scan_images(comp, track)
    out.print(f"ok: {len(comp.train)} train questions, {len(comp.test)} test questions, {n} images")


@app.command()
@fails_cleanly
def folds(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Write experiments/<exp>/folds.csv: grouped by image, stratified by answer."""
    from competition.data import load_competition
    from competition.folds import write_folds

    cfg = config_from(config, set_)
    comp = load_competition(cfg.data)
    path, report = write_folds(cfg, comp.train)
    cfg.save()
    out.print(table(f"{cfg.folds.k} folds (seed {cfg.split_seed})", report.to_dict("records")))
    out.print(f"wrote {path}")


@app.command()
@fails_cleanly
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fold: Annotated[int, typer.Option("--fold", "-f", min=0, help="fold to train (its questions are held out)")] = 0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the resolved plan; build nothing, download nothing")
    ] = False,
) -> None:
    """Fine-tune LLaVA on one fold (resumes from experiments/<exp>/fold<k>/trainer/)."""
    cfg = config_from(config, set_)
    if dry_run:
        from competition.train import dry_run_plan

        for line in dry_run_plan(cfg, fold):
            say(line)
        return
    from competition.train import train_fold

    comp, folds = stage_inputs(cfg)
    cfg.save()
    metrics, _ = train_fold(cfg, comp, folds, fold, log=say)
    say(
        f"fold {fold}: loss {metrics['loss']:.4f} after {metrics['steps']} steps "
        f"({metrics['train_seconds']:.0f} s); model in {cfg.fold_dir(fold) / 'model'}"
    )


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard '{text}': expected i/n, e.g. 0/2") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard '{text}': need 0 <= i < n")
    return i, n


@app.command()
@fails_cleanly
def predict(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fold: Annotated[int, typer.Option("--fold", "-f", min=0, help="fold whose model answers")] = 0,
    split: Annotated[str, typer.Option(help="oof (the fold's validation questions), test, or both")] = "both",
    shard: Annotated[str, typer.Option(help="i/n: this process takes image group i of n")] = "0/1",
) -> None:
    """Answer OOF and/or test questions with every prompt x decoding; resumable and shardable."""
    from competition.predict import predict_fold

    cfg = config_from(config, set_)
    if split not in ("oof", "test", "both"):
        raise ConfigError(f"--split '{split}': expected oof, test or both")
    splits = ("oof", "test") if split == "both" else (split,)
    comp, folds = stage_inputs(cfg)
    with rate_bar() as bar:
        files = predict_fold(cfg, comp, folds, fold, splits, parse_shard(shard), tracker(bar), warn)
    for f in files:
        say(f"wrote {f}")


class RateColumn(ProgressColumn):
    """Items per second of a task."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:.1f} q/s")


def tracker(bar: Progress) -> Callable[[str, int], Callable[[int], None]]:
    """A factory of progress callbacks: one task of the bar per (name, total)."""

    def track(name: str, total: int) -> Callable[[int], None]:
        task = bar.add_task(name, total=total)
        return lambda n: bar.advance(task, n)

    return track


def rate_bar() -> Progress:
    """A progress bar with count, questions/s and ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


@app.command()
@fails_cleanly
def cv(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Score all out-of-fold predictions: per member, fold and question type; cv.json/md/png."""
    from competition.cv import run_cv
    from competition.data import load_competition
    from competition.folds import read_folds

    cfg = config_from(config, set_)
    tables = run_cv(cfg, load_competition(cfg.data), read_folds(cfg))
    out.print(table(f"local CV (baseline {tables['baseline']:.4f})", tables["members"]))
    out.print(table("per question type", tables["per_type"]))
    say(f"wrote {cfg.exp_dir / 'cv.json'}, cv.md, cv.png")


@app.command()
@fails_cleanly
def ensemble(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    name: Annotated[str, typer.Option(help="submission name")] = "ensemble",
) -> None:
    """Vote all members into a submission (method chosen on OOF) and rank it on the leaderboard."""
    from competition.data import load_competition
    from competition.ensemble import run_ensemble
    from competition.folds import read_folds
    from competition.submit import leaderboard

    cfg = config_from(config, set_)
    comp = load_competition(cfg.data)
    res = run_ensemble(cfg, comp, read_folds(cfg), name)
    say(
        f"vote: {res['method']} (threshold {res['threshold']}), OOF accuracy {res['cv']:.4f}; "
        f"best single member {max(res['members'].values()):.4f}"
    )
    for file, accuracy in res["holdout"].items():
        say(f"held-out accuracy of {file}: {accuracy:.4f}")
    say(f"wrote {res['submission']}")
    out.print(leaderboard_table(leaderboard(cfg.submissions_dir)))


submit_app = typer.Typer(help="Validate submissions, show the leaderboard, record public scores.", no_args_is_help=True)
app.add_typer(submit_app, name="submit")


@submit_app.command("validate")
@fails_cleanly
def submit_validate(file: Path, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Check a submission against sample_submission.csv: IDs, order, columns, answers."""
    from competition.submit import validate_file

    cfg = config_from(config, set_)
    d = cfg.data
    sub = validate_file(file, d.root / d.sample_submission_csv, d.id_col, d.answer_col)
    say(f"ok: {file} ({len(sub)} rows)")


@submit_app.command("leaderboard")
@fails_cleanly
def submit_leaderboard(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Rebuild and print submissions/leaderboard.md|csv, ranked by local CV."""
    from competition.submit import write_leaderboard

    cfg = config_from(config, set_)
    out.print(leaderboard_table(write_leaderboard(cfg.submissions_dir)))


@submit_app.command("record")
@fails_cleanly
def submit_record(
    file: Path,
    public: Annotated[float, typer.Option("--public", help="public leaderboard score")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Store a submission's public leaderboard score; the leaderboard shows the CV-public gap."""
    from competition.submit import record_public, write_leaderboard

    cfg = config_from(config, set_)
    record_public(file, public)
    out.print(leaderboard_table(write_leaderboard(cfg.submissions_dir)))


@app.command()
@fails_cleanly
def tune(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    study: Annotated[
        str, typer.Option(help="decoding (prompt + decoding on a fold's validation), prompts (same), or vote (OOF)")
    ] = "decoding",
    trials: Annotated[
        int | None, typer.Option(help="trials to add (default tune.trials), shared by the workers")
    ] = None,
    workers: Annotated[int, typer.Option(help="worker processes sharing the study through its storage")] = 1,
) -> None:
    """Optuna study on local validation; best parameters go to experiments/<exp>/tuned.yaml."""
    import subprocess

    from competition.data import load_competition
    from competition.folds import read_folds
    from competition.tune import objective_for, run_study

    cfg = config_from(config, set_)
    kind = {"prompts": "decoding"}.get(study, study)
    if kind not in ("decoding", "vote"):
        raise ConfigError(f"--study '{study}': expected decoding, prompts or vote")
    comp, folds = load_competition(cfg.data), read_folds(cfg)
    objective = objective_for(cfg, comp, folds, kind)  # refuses bad input before any worker or storage exists
    total = trials or cfg.tune.trials
    shares = [total // workers + (i < total % workers) for i in range(workers)]
    base = [sys.executable, "-m", "competition", "tune", "--study", kind, "--workers", "1"]
    base += (["-c", str(config)] if config else []) + [x for s in set_ or [] for x in ("--set", s)]
    helpers = [subprocess.Popen([*base, "--trials", str(n)]) for n in shares[1:] if n]
    s, path = run_study(cfg, comp, folds, kind, shares[0], objective)
    if any(h.wait() for h in helpers):
        raise ConfigError("a tuning worker failed; its error is printed above")
    if helpers:
        s, path = run_study(cfg, comp, folds, kind, 0, objective)
    done = [t for t in s.trials if t.state.name == "COMPLETE"]
    say(
        f"study {s.study_name}: {len(s.trials)} trials ({len(done)} complete); best {s.best_value:.4f} with {s.best_params}"
    )
    say(f"wrote {path}")


@app.command()
@fails_cleanly
def demo(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Every stage in order, skipping what is done: data, folds, train and predict each fold, cv, tune, ensemble."""
    from competition.cv import run_cv
    from competition.data import load_competition
    from competition.folds import read_folds, write_folds
    from competition.predict import predict_fold
    from competition.synthetic import generate
    from competition.train import train_fold
    from competition.tune import run_study
    from competition.tuned import load_tuned

    cfg = config_from(config, set_)
    if not (cfg.data.root / cfg.data.train_csv).is_file():
        say(f"[data] writing the demo data set to {cfg.data.root}")
        generate(cfg.data.root, seed=cfg.seed)
    comp = load_competition(cfg.data)
    if not (cfg.exp_dir / "folds.csv").is_file():
        write_folds(cfg, comp.train)
    cfg.save()
    folds = read_folds(cfg)

    def predict_all() -> None:
        with rate_bar() as bar:
            for k in range(cfg.folds.k):
                predict_fold(cfg, comp, folds, k, ("oof", "test"), progress=tracker(bar), warn=warn)

    for k in range(cfg.folds.k):
        if (cfg.fold_dir(k) / "train_metrics.json").is_file():
            say(f"[train] fold {k}: done")
            continue
        say(f"[train] fold {k}")
        metrics, _ = train_fold(cfg, comp, folds, k, log=say)
        say(f"[train] fold {k}: loss {metrics['loss']:.4f}, {metrics['steps']} steps, {metrics['train_seconds']:.0f} s")
    say("[predict] every fold, every prompt x decoding")
    predict_all()
    tables = run_cv(cfg, comp, folds)
    out.print(table(f"local CV (baseline {tables['baseline']:.4f})", tables["members"]))
    if "decoding" not in load_tuned(cfg):
        say(f"[tune] decoding study on fold {cfg.tune.fold}'s validation questions")
        run_study(cfg, comp, folds, "decoding", cfg.tune.trials)
        say("[predict] the tuned decoding")
        predict_all()
        run_cv(cfg, comp, folds)
    if "vote" not in load_tuned(cfg):
        say("[tune] vote study on out-of-fold predictions")
        run_study(cfg, comp, folds, "vote", 4 * cfg.tune.trials)
    ensemble(config, set_)


def main() -> None:
    """The entry point: a usage error (unknown option, bad value) is one line on stderr and exit status 2."""
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
