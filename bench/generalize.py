"""One recipe on every synthetic competition kind: held-out accuracy per kind and per question type.

    python bench/generalize.py [-c configs/demo_classifier_glimpses.yaml] [--with OTHER.yaml ...] [--set key=value ...]
        [--kinds object,count] [--train-images 3000] [--test-images 300] [--fold N] [--jobs 1] [--work /tmp/generalize]

For each kind, from scratch: writes its data to <work>/<kind>/data, then runs folds, train-all, predict-all and cv
through `python -m competition` with workdir <work>/<kind> (each stage's output in <work>/<kind>/log.txt), the same
for each --with recipe on the same folds, then the ensemble of them all, and scores its submission against the
data's solution.csv: per question type, beside the majority baseline (the type's most common training answer) and
the best member's out-of-fold accuracy from the recipes' cv.json.
--fold N trains and predicts only fold N of each recipe and scores its validation questions (out-of-fold, about a
third of the pictures, each type beside its majority) instead of the blend's held-out submission: recipes compared
over the whole suite in about a third of the time.
--jobs runs that many kinds side by side, sharing the CPU threads. A kind that fails prints its stage and the end of
its log; the others go on.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from competition.ballots import vote_rows
from competition.config import load_config
from competition.data import ANSWER, ID
from competition.metrics import credit, exact_matches, majority_baseline, question_types
from competition.pipeline import stage_inputs
from competition.predictions import oof_frame
from competition.submit import leaderboard
from competition.synthetic import KINDS, generate
from competition.vote import vote

REPO = Path(__file__).resolve().parents[1]
MEMBER_STAGES = ("train-all", "predict-all", "cv")  # each recipe's, after the main recipe's folds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", type=Path, default=REPO / "configs" / "demo_classifier_glimpses.yaml")
    p.add_argument("--with", dest="others", type=Path, action="append", default=[],
                   help="another recipe trained on the same folds and blended (repeatable)")
    p.add_argument("--set", dest="sets", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    p.add_argument("--train-images", type=int, default=3000)
    p.add_argument("--test-images", type=int, default=300)
    p.add_argument("--fold", type=int, default=None, help="only this fold of each recipe, scored on its validation "
                   "questions (no blend, no held-out)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="kinds run side by side")
    p.add_argument("--work", type=Path, default=Path("/tmp/generalize"), help="a folder per kind is made here")
    args = p.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        p.error(f"--kinds: unknown {', '.join(unknown)} (expected some of {', '.join(KINDS)})")
    if args.jobs < 1:
        p.error("--jobs must be at least 1")
    args.config, args.others = args.config.resolve(), [o.resolve() for o in args.others]
    return args


def overrides(args: argparse.Namespace, kind: str) -> list[str]:
    """The user's --set overrides, then this kind's data folder and workdir."""
    folder = (args.work / kind).resolve()
    return [*args.sets, f"data.root={folder / 'data'}", f"workdir={folder}"]


def stage_commands(args: argparse.Namespace, kind: str) -> list[list[str]]:
    """`python -m competition` command lines: the main recipe's folds, every recipe's members, the blend."""
    sets = [x for s in overrides(args, kind) for x in ("--set", s)]
    names = [load_config(o, overrides(args, kind)).experiment for o in args.others]

    def stage(name: str, *extra: str, config: Path = args.config) -> list[str]:
        return [sys.executable, "-m", "competition", name, "-c", str(config), *sets, *extra]

    if args.fold is not None:
        one = ("--fold", str(args.fold))
        steps = [(c, ("train", *one), ("predict", *one, "--split", "oof"), ("cv",)) for c in (args.config, *args.others)]
        return [stage("folds"), *(stage(*step, config=c) for c, *rest in steps for step in rest)]
    members = [stage(name, config=c) for c in (args.config, *args.others) for name in MEMBER_STAGES]
    return [stage("folds"), *members, stage("ensemble", *(x for n in names for x in ("--with", n)))]


def run_stages(args: argparse.Namespace, kind: str, threads: int) -> str | None:
    """Every stage of the flow in its own process, logged; None when all pass, else the failed stage."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with (args.work / kind / "log.txt").open("w") as log:
        for cmd in stage_commands(args, kind):
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            if subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                return f"{cmd[3]} of {Path(cmd[5]).name}"
    return None


def submission(args: argparse.Namespace, kind: str) -> Path:
    """The submission the kind's leaderboard ranks first (by local CV): the blend, or its best member when the blend
    does not beat it."""
    cfg = load_config(args.config, overrides(args, kind))
    board = leaderboard(cfg.submissions_dir)
    if board.empty:
        raise FileNotFoundError(f"no ranked submission in {cfg.submissions_dir}")
    return cfg.submissions_dir / board["file"].iloc[0]


def oof_by_type(args: argparse.Namespace, kind: str) -> pd.Series:
    """The best member's out-of-fold accuracy per question type and overall ('all'), over every recipe's cv.json
    (empty when none is there)."""
    found = []
    for config in (args.config, *args.others):
        path = load_config(config, overrides(args, kind)).exp_dir / "cv.json"
        if path.is_file():
            tables = json.loads(path.read_text())
            per_type = pd.DataFrame(tables["per_type"]).set_index("qtype").drop(columns=["n", "baseline"]).max(axis=1)
            per_type.loc["all"] = max(m["accuracy"] for m in tables["members"])
            found.append(per_type)
    return pd.concat(found, axis=1).max(axis=1) if found else pd.Series(dtype=float)


def read(path: Path) -> pd.DataFrame:
    """A CSV as text, nothing read as missing."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def score(args: argparse.Namespace, kind: str) -> pd.DataFrame:
    """Per question type (and 'all'): questions, held-out accuracy, majority baseline, best member's OOF."""
    data = args.work / kind / "data"
    train, test = read(data / "train.csv"), read(data / "test.csv")
    gold = read(data / "solution.csv").set_index("ID")["answer"].reindex(test["ID"]).to_numpy()
    pred = read(submission(args, kind)).set_index("ID")["answer"].reindex(test["ID"]).fillna("").to_numpy()
    df = pd.DataFrame({
        "qtype": question_types(test["question"]).to_numpy(),
        "held_out": exact_matches(pred, gold),
        "baseline": exact_matches(majority_baseline(train, test).to_numpy(), gold),
    })  # fmt: skip
    table = df.groupby("qtype").agg(
        n=("held_out", "size"), held_out=("held_out", "mean"), baseline=("baseline", "mean")
    )
    table.loc["all"] = [len(df), df["held_out"].mean(), df["baseline"].mean()]
    table["oof"] = oof_by_type(args, kind).reindex(table.index)
    return table


def fold_score(args: argparse.Namespace, kind: str) -> pd.DataFrame:
    """--fold: per question type (and 'all'): the fold's validation questions, the majority baseline, the best
    member's accuracy over the recipes (their cv.json, written from that fold alone) and, with several members
    (views, recipes), their soft vote at equal weights (nothing fitted)."""
    cfg = load_config(args.config, overrides(args, kind))
    cv = json.loads((cfg.exp_dir / "cv.json").read_text())
    table = pd.DataFrame(cv["per_type"]).set_index("qtype")[["n", "baseline"]]
    table.loc["all"] = [cv["best"]["n"], cv["baseline"]]
    table["oof"] = oof_by_type(args, kind).reindex(table.index)
    comp, folds = stage_inputs(cfg, make_folds=False)
    frames = [oof_frame(load_config(c, overrides(args, kind)), comp, folds) for c in (args.config, *args.others)]
    oof = pd.concat([f.assign(member=f"{i}/" + f["member"]) for i, f in enumerate(frames)], ignore_index=True)
    if oof["member"].nunique() > 1:
        voted = vote(vote_rows(oof), "soft").set_index(ID)[ANSWER]
        asked = oof.drop_duplicates(ID).set_index(ID).reindex(voted.index)  # each question's gold and type
        correct = pd.Series(credit(cfg.metric, voted.to_list(), asked["gold"].to_list()), voted.index)
        table["voted"] = correct.groupby(asked["qtype"]).mean().reindex(table.index)
        table.loc["all", "voted"] = correct.mean()
    return table


def run_kind(args: argparse.Namespace, kind: str, threads: int) -> dict:
    """Data, flow and scores of one kind: {'kind', 'minutes', 'table'} or with 'error'."""
    start, folder = time.time(), args.work / kind
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    generate(folder / "data", args.train_images, args.test_images, kind=kind)
    failed = run_stages(args, kind, threads)
    result = {"kind": kind, "minutes": (time.time() - start) / 60}
    if failed:
        tail = (folder / "log.txt").read_text().splitlines()[-15:]
        return {**result, "error": f"stage '{failed}' failed; end of {folder / 'log.txt'}:\n" + "\n".join(tail)}
    return {**result, "table": score(args, kind) if args.fold is None else fold_score(args, kind)}


def report(result: dict) -> str:
    """One kind's table as text."""
    head = f"== {result['kind']} ({result['minutes']:.1f} min)"
    if "error" in result:
        return f"{head}\n{result['error']}"
    t = result["table"]
    lines = [head, f"{'question type':<22}{'n':>6}{'held-out':>10}{'majority':>10}{'oof':>8}{'voted':>8}"]
    for qtype, row in t.iterrows():
        held_out, oof, voted = (f"{row[k]:.3f}" if k in row and not pd.isna(row[k]) else ""
                                for k in ("held_out", "oof", "voted"))  # fmt: skip
        lines.append(f"{qtype:<22}{int(row['n']):>6}{held_out:>10}{row['baseline']:>10.3f}{oof:>8}{voted:>8}")
    return "\n".join(lines)


def summary(results: list[dict]) -> str:
    """Every kind on one line: held-out accuracy, majority baseline, minutes."""
    tables = [r["table"] for r in results if "table" in r]
    scored = "oof" if tables and "held_out" not in tables[0] else "held_out"  # --fold: the fold's validation questions
    voted = scored == "oof" and any("voted" in t for t in tables)  # --fold with several members: their soft vote too
    lines = [f"{'kind':<10}{scored.replace('_', '-'):>10}{'voted' if voted else '':>8}{'majority':>10}{'minutes':>9}"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['kind']:<10}{'failed':>10}{'':>8}{'':>10}{r['minutes']:>9.1f}")
        else:
            row = r["table"].loc["all"]
            vote_text = f"{row['voted']:.3f}" if voted and "voted" in row else ""
            lines.append(f"{r['kind']:<10}{row[scored]:>10.3f}{vote_text:>8}{row['baseline']:>10.3f}{r['minutes']:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the recipe on each kind, print a table per kind and a summary; 1 when a kind failed."""
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_kind, args, kind, threads) for kind in args.kinds]
        results = []
        for f in futures:
            results.append(f.result())
            print(report(results[-1]) + "\n", flush=True)
    print(summary(results))
    return int(any("error" in r for r in results))


if __name__ == "__main__":
    sys.exit(main())
