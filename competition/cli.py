"""The command line behind `python -m competition …` and the Makefile.

python -m competition --help
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from competition.config import Config, load_config
from competition.console import (
    fails_cleanly,
    leaderboard_table,
    out,
    quiet_libraries,
    run_app,
    say,
    table,
    walk_with_bar,
)

quiet_libraries()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="VQA competition toolkit: data to ranked submission.",
)


@app.callback()
@fails_cleanly
def check_installed() -> None:
    """Refuse to start on library versions the toolkit was not tested with (one line, exit 2)."""
    from competition.versions import check_versions

    check_versions()


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config key: key.sub=value (repeatable)")]


def config_from(config: Path | None, overrides: list[str] | None) -> Config:
    """Load the config named on the command line with its --set overrides."""
    return load_config(config, overrides or [])


@app.command()
@fails_cleanly
def data(
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write the competition into")],
    train_images: Annotated[int, typer.Option(help="training images")] = 3000,
    test_images: Annotated[int, typer.Option(help="test images")] = 300,
    questions_per_image: Annotated[int, typer.Option(help="questions per image")] = 4,
    seed: Annotated[int, typer.Option(help="generator seed")] = 0,
    kind: Annotated[str, typer.Option(help="grid (the demo), object, wide, exist, count, glyphs, lighting, or vqa (the grid with 10 annotators' answers per question)")] = "grid",
) -> None:
    """Write a synthetic competition in the competition's layout (--kind: which one of the suite)."""
    from competition.synthetic import generate

    n = generate(out_dir, train_images, test_images, questions_per_image, seed, kind=kind)
    say(f"wrote {out_dir}: {n['train']} / {n['test']} train / test questions on {n['train_images']} / {n['test_images']} images")


@app.command()
@fails_cleanly
def vqav2(
    train_questions: Annotated[Path, typer.Option(help="VQA v2 questions JSON of the training split")],
    train_annotations: Annotated[Path, typer.Option(help="VQA v2 annotations JSON of the training split")],
    test_questions: Annotated[Path, typer.Option(help="VQA v2 questions JSON of the split to answer")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write train.csv, test.csv, sample_submission.csv")],
) -> None:
    """Write the competition tables of a VQA v2 layout (questions and annotations JSON); images stay where they are."""
    from competition.vqav2 import convert

    n = convert(train_questions, train_annotations, test_questions, out_dir)
    say(f"wrote {out_dir}: {n['train']} / {n['test']} train / test questions (set data.answers_col: answers)")


@app.command()
@fails_cleanly
def validate(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Validate the tables and decode every image (full scan)."""
    from competition.data import load_competition, scan_images
    from competition.normalize import describe_merges

    cfg = config_from(config, set_)
    comp = load_competition(cfg.data)
    n = scan_images(comp, walk_with_bar("decoding images"))
    say(f"ok: {len(comp.train)} train questions, {len(comp.test)} test questions, {n} images")
    say(describe_merges(cfg, comp))


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
    out.print(table(f"{cfg.folds.k} folds (seed {cfg.folds.seed})", report.to_dict("records")))
    out.print(f"wrote {path}")


@app.command("config")
@fails_cleanly
def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Every config key with its value (the config file's, --set applied) and what it means."""
    from competition.docs import key_values

    for key, value, meaning in key_values(config_from(config, set_)):
        say(f"{key}={value}  # {meaning}")  # as --set takes it


@app.command()
@fails_cleanly
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    fold: Annotated[int, typer.Option("--fold", "-f", min=0, help="fold to train (its questions are held out)")] = 0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the resolved plan; build nothing, download nothing")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="retrain from scratch: remove the fold's checkpoints, model and predictions")
    ] = False,
) -> None:
    """Train one fold's model (resumes from experiments/<exp>/fold<k>/trainer/; a finished fold is left as it is)."""
    from competition.pipeline import train_one
    from competition.plan import dry_run_plan

    cfg = config_from(config, set_)
    for line in dry_run_plan(cfg, fold) if dry_run else train_one(cfg, fold, force):
        say(line)


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
    from competition.pipeline import predict_one

    for f in predict_one(config_from(config, set_), fold, split, shard):
        say(f"wrote {f}")


@app.command()
@fails_cleanly
def cv(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Score all out-of-fold predictions: per member, fold and question type; cv.json/md/png."""
    from competition.cv import run_cv
    from competition.pipeline import stage_inputs

    cfg = config_from(config, set_)
    tables = run_cv(cfg, *stage_inputs(cfg, make_folds=False))
    out.print(table(f"local CV (baseline {tables['baseline']:.4f}, oracle {tables['oracle']:.4f})", tables["members"]))
    out.print(table("per question type", tables["per_type"]))
    say(f"wrote {cfg.exp_dir / 'cv.json'}, cv.md, cv.png, members.png")


@app.command()
@fails_cleanly
def ensemble(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    name: Annotated[str, typer.Option(help="submission name")] = "ensemble",
    with_: Annotated[list[str] | None, typer.Option("--with", help="another experiment whose members join (repeatable)")] = None,
) -> None:
    """Vote all members into a submission (method chosen on OOF) and rank it on the leaderboard."""
    from competition.ensemble import run_ensemble, summary_lines
    from competition.pipeline import stage_inputs
    from competition.submit import leaderboard

    joined = [f"ensemble.experiments=[{', '.join(with_)}]"] if with_ else []
    cfg = config_from(config, [*(set_ or []), *joined])
    for line in summary_lines(run_ensemble(cfg, *stage_inputs(cfg, make_folds=False), name)):
        say(line)
    out.print(leaderboard_table(leaderboard(cfg.submissions_dir)))


submit_app = typer.Typer(help="Validate submissions, show the leaderboard, record public scores.", no_args_is_help=True)
app.add_typer(submit_app, name="submit")


@submit_app.command("validate")
@fails_cleanly
def submit_validate(file: Path, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Check a submission (CSV, or VQA results .json) against sample_submission.csv: IDs, order, columns, answers."""
    from competition.config import top_k
    from competition.submit import validate_file

    cfg = config_from(config, set_)
    d = cfg.data
    sub = validate_file(file, d.root / d.sample_submission_csv, d.id_col, d.answer_col, top_k(cfg.metric))
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
        str, typer.Option(help="train (training on a fold's inner split), decoding (prompt + decoding on a fold's "
                          "validation), prompts (same), or vote (OOF)")
    ] = "decoding",
    trials: Annotated[
        int | None, typer.Option(help="trials to add (default tune.trials), shared by the workers")
    ] = None,
    workers: Annotated[int, typer.Option(help="worker processes sharing the study through its storage")] = 1,
) -> None:
    """Optuna study on local validation; best parameters go to experiments/<exp>/tuned.yaml."""
    from competition.pipeline import stage_inputs
    from competition.tune import run_tune

    cfg = config_from(config, set_)
    for line in run_tune(cfg, *stage_inputs(cfg, make_folds=False), study, trials or cfg.tune.trials, workers):
        say(line)


@app.command()
@fails_cleanly
def demo(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    with_: Annotated[list[str] | None, typer.Option("--with", help="another experiment's config: it runs beside this "
                     "one and its members join the blend (repeatable); PATH@SEED trains it with run seed SEED as "
                     "experiment <name>_seed<SEED>, on the same folds")] = None,  # fmt: skip
    jobs: Annotated[int, typer.Option(min=1, help="folds (of every experiment) trained and predicted side by side, "
                                      "each in its own process with its share of the CPU threads (CPU; 1 on a GPU)")] = 1,  # fmt: skip
) -> None:
    """Every stage in order, skipping what is done: data, folds, train and predict each fold, cv, tune, ensemble;
    --set applies to every config."""
    from competition.demo import run

    others = run(config_from(config, set_), with_ or [], set_ or [], jobs)
    ensemble(config, set_, with_=[o.experiment for o in others])


@app.command()
@fails_cleanly
def auto(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    minutes: Annotated[float, typer.Option(min=1, help="the time budget, in minutes")] = 15,
    jobs: Annotated[int, typer.Option(min=1, help="workers on this machine, each with its share of the CPU threads")] = 1,
    worker: Annotated[bool, typer.Option(hidden=True, help="one of another auto's helper workers")] = False,
) -> None:
    """The portfolio (auto.portfolio) tried on one fold, the best recipes trained on every fold and blended, within
    --minutes; more workers join through tune.storage."""
    from competition.auto import run_auto, summary_lines
    from competition.submit import leaderboard

    res = run_auto(config, set_ or [], minutes, jobs, worker)
    for line in [] if worker else summary_lines(res):
        say(line)
    if not worker:
        out.print(leaderboard_table(leaderboard(res["search_cfg"].submissions_dir)))


@app.command("train-all")
@fails_cleanly
def train_every_fold(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Train every fold that has no finished model yet (one process; see Scaling out for more)."""
    from competition.pipeline import stage_inputs, train_all
    from competition.plan import check_model

    cfg = config_from(config, set_)
    check_model(cfg)
    train_all(cfg, *stage_inputs(cfg))


@app.command("predict-all")
@fails_cleanly
def predict_every_fold(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Every fold's OOF and test answers with every prompt x decoding; resumes row by row."""
    from competition.pipeline import predict_all, stage_inputs

    cfg = config_from(config, set_)
    predict_all(cfg, *stage_inputs(cfg))


def main() -> None:
    """The entry point of `python -m competition` and the `competition` script."""
    from competition.versions import tell_deepspeed_the_device

    tell_deepspeed_the_device()
    run_app(app)
