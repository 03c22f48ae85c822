"""The predict stage: a fold's model answers its OOF and test questions with every prompt x decoding.

    python -m competition predict -c configs/demo.yaml --fold 0 [--split oof|test|both] [--shard 1/2]

Prediction files are append-only JSONL that resume, shard files merge, and readers join them to the
ground truth (`oof_frame`) for CV, tuning and ensembling.

One row per question x prompt x decoding: id, fold, split, prompt, decoding, raw, answer, logprob, and
alternatives: [raw, logprob] of the next most likely answers where the model scores every answer.
A killed run resumes after its last complete line and never writes a row twice; a finished file
is rewritten in canonical order (prompt, decoding, id), so shards merge to the one-process file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from competition.config import Config
from competition.data import ANSWER, ID, IMAGE, QUESTION, Competition
from competition.errors import ConfigError, DataError
from competition.folds import fold_rows
from competition.io import atomic_write_json, atomic_write_text
from competition.metrics import exact_matches, question_types
from competition.normalize import AnswerNormalizer

COLUMNS = ["id", "fold", "split", "prompt", "decoding", "raw", "answer", "logprob", "alternatives"]
SPLITS = ("oof", "test")
LOGPROB_DIGITS = 4  # batch composition moves float sums in the 7th digit; shards and resumes must match

EXPERIMENT_MARK = ":"  # another experiment's members read "<experiment>:<prompt>/<decoding>"


def file_for(cfg: Config, fold: int, split: str, shard: tuple[int, int] = (0, 1)) -> Path:
    """fold<k>/predictions/<split>.jsonl, or <split>.shard-<i>-of-<n>.jsonl for a shard."""
    i, n = shard
    name = f"{split}.jsonl" if n == 1 else f"{split}.shard-{i}-of-{n}.jsonl"
    return cfg.fold_dir(fold) / "predictions" / name


def meta_path(path: Path) -> Path:
    """The sidecar of a prediction file: config hash and completeness."""
    return path.with_suffix(".meta.json")


def predict_hash(cfg: Config, fold: int) -> str:
    """Hash of everything that decides the predictions of a fold (not where they go, nor batching speed)."""
    import hashlib

    keys = {k: cfg.to_dict()[k] for k in ("model", "train", "predict", "normalize", "seed")}
    for speed_only in ("batch_size", "prefix_cache"):
        keys["predict"].pop(speed_only)
    keys["fold"], keys["data"] = fold, str(cfg.data.root)
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]


class PredictionLog:
    """An append-only JSONL of prediction rows that knows which rows it already holds."""

    def __init__(self, path: Path, config_hash: str) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = meta_path(path)
        if path.exists() and meta.exists() and json.loads(meta.read_text())["config_hash"] != config_hash:
            raise DataError(
                f"{path}: written under another config (hash differs); move it away or use another experiment"
            )
        self._repair()
        atomic_write_json({"config_hash": config_hash, "complete": False}, meta)
        self.config_hash = config_hash

    def _repair(self) -> None:
        """Drop a partial last line left by a killed run."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with self.path.open("r+b") as f:
                f.truncate(end)

    def done(self) -> set[tuple[str, str, str]]:
        """(id, prompt, decoding) of every row already written."""
        if not self.path.exists():
            return set()
        with self.path.open() as f:
            return {(r["id"], r["prompt"], r["decoding"]) for r in map(json.loads, f)}

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows durably (flushed and synced before returning)."""
        with self.path.open("a") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())

    def finish(self) -> None:
        """Rewrite in canonical order and mark complete."""
        rows = read_predictions(self.path)
        write_canonical(rows, self.path)
        atomic_write_json({"config_hash": self.config_hash, "complete": True}, meta_path(self.path))


def write_canonical(rows: pd.DataFrame, path: Path) -> None:
    """Write rows sorted by (prompt, decoding, id) as JSONL, atomically."""
    rows = rows.sort_values(["prompt", "decoding", "id"], kind="stable")[COLUMNS]
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in rows.to_dict("records"))
    atomic_write_text(path, "".join(lines))


def read_predictions(path: Path) -> pd.DataFrame:
    """Rows of a prediction file (answers stay strings: 'none' is an answer)."""
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    with path.open() as f:
        rows = [json.loads(line) for line in f if line.endswith("\n")]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["alternatives"] = [a if isinstance(a, list) else [] for a in df["alternatives"]]  # files from before them
    return df


def read_split(cfg: Config, split: str) -> pd.DataFrame:
    """Every fold's rows of one split ('oof' or 'test'); a DataError when there are none yet."""
    parts = [p for p in (read_predictions(file_for(cfg, f, split)) for f in range(cfg.folds.k)) if len(p)]
    if not parts:
        raise DataError(f"{cfg.exp_dir}: no {split} predictions yet; run `predict` first")
    return pd.concat(parts, ignore_index=True)


def merge_shards(cfg: Config, fold: int, split: str, n: int) -> Path | None:
    """Merge complete shard files of one config into <split>.jsonl; None while a shard is unfinished."""
    parts = [file_for(cfg, fold, split, (i, n)) for i in range(n)]
    metas = [json.loads(meta_path(p).read_text()) if meta_path(p).exists() else None for p in parts]
    if any(m is None or not m["complete"] for m in metas):
        return None
    hashes = {m["config_hash"] for m in metas}
    if len(hashes) > 1:
        raise DataError(
            f"{parts[0].parent}: shards of {split} were made with different configs ({', '.join(sorted(hashes))})"
        )
    out = file_for(cfg, fold, split)
    write_canonical(pd.concat([read_predictions(p) for p in parts], ignore_index=True), out)
    atomic_write_json({"config_hash": hashes.pop(), "complete": True}, meta_path(out))
    return out


def check_joinable(cfg: Config, other: Config, split: str) -> None:
    """A ConfigError unless experiment `other` exists, shares cfg's folds and has every fold's `split` predictions."""
    name = other.experiment
    if not other.exp_dir.is_dir():
        raise ConfigError(f"ensemble.experiments: unknown experiment '{name}' (no {other.exp_dir})")
    mine, theirs = cfg.exp_dir / "folds.csv", other.exp_dir / "folds.csv"
    if not theirs.is_file() or theirs.read_bytes() != mine.read_bytes():
        raise ConfigError(f"ensemble.experiments: '{name}' was not trained on the folds of '{cfg.experiment}' "
                          f"({theirs} differs from {mine}); blend experiments that share folds.csv")  # fmt: skip
    for f in range(cfg.folds.k):
        path = file_for(other, f, split)
        meta = meta_path(path)
        if not path.is_file() or (meta.is_file() and not json.loads(meta.read_text()).get("complete")):
            raise ConfigError(f"ensemble.experiments: '{name}' lacks fold {f}'s {split} predictions ({path}); "
                              f"run `predict` for it")  # fmt: skip


def experiment_of(member: str) -> str:
    """The experiment a member name comes from: '' for the config's own, else its '<experiment>:' prefix."""
    return member.split(EXPERIMENT_MARK)[0] if EXPERIMENT_MARK in member else ""


def member_rows(cfg: Config, normalizer: AnswerNormalizer, split: str) -> pd.DataFrame:
    """A split's rows of this experiment and of every experiment in ensemble.experiments, whose prompts read
    '<experiment>:<prompt>' and whose raw answers are normalized by this config's rules (everyone's alternatives too)."""
    frames = [read_split(cfg, split)]
    for name in cfg.ensemble.experiments:
        other = cfg.model_copy(update={"experiment": name})
        check_joinable(cfg, other, split)
        rows = read_split(other, split)
        rows["answer"] = normalizer(rows["raw"].astype(str)).to_numpy()
        rows["prompt"] = name + EXPERIMENT_MARK + rows["prompt"]
        frames.append(rows)
    rows = pd.concat(frames, ignore_index=True)
    rows["alternatives"] = normalized_alternatives(rows["alternatives"], normalizer)
    return rows


def normalized_alternatives(alternatives: pd.Series, normalizer: AnswerNormalizer) -> list[list[tuple[str, float]]]:
    """Each row's [raw, logprob] alternatives as (normalized answer, logprob); each distinct text normalized once."""
    texts = sorted({raw for a in alternatives for raw, _ in a})
    normal = dict(zip(texts, normalizer(pd.Series(texts, dtype=str)).tolist(), strict=True))
    return [[(normal[raw], float(lp)) for raw, lp in a] for a in alternatives]


def oof_frame(cfg: Config, comp: Competition, folds: pd.DataFrame) -> pd.DataFrame:
    """All folds' OOF rows of every member (ensemble.experiments too) joined to their question, gold answer
    (normalized) and question type."""
    normalizer = AnswerNormalizer.of(cfg, comp)
    rows = member_rows(cfg, normalizer, "oof")
    gold = comp.train[[ID, QUESTION, ANSWER]].rename(columns={ANSWER: "gold_raw"})
    df = rows.merge(gold, on="id", how="left", validate="many_to_one")
    df["gold"] = normalizer(df["gold_raw"]).to_numpy()
    df["qtype"] = question_types(df["question"]).to_numpy()
    df["member"] = df["prompt"] + "/" + df["decoding"]
    df["correct"] = df["answer"] == df["gold"]
    df["exact"] = exact_matches(df["raw"], df["gold_raw"])
    return df

def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard '{text}': expected i/n, e.g. 0/2") from None
    if not 0 <= i < n:
        raise ConfigError(f"--shard '{text}': need 0 <= i < n")
    return i, n


def split_rows(comp: Competition, folds: pd.DataFrame, fold: int, split: str) -> tuple[pd.DataFrame, str]:
    """The questions of a split ('oof': the fold's validation questions) and their image folder."""
    if split == "oof":
        return fold_rows(comp, folds, fold, "val"), "train"
    return comp.test, "test"


def prediction_row(qid: str, fold: int, split: str, prompt: str, decoding: str, a: Any, answer: str) -> dict:
    """One line of a prediction file (COLUMNS) for an engine Answer and its normalized answer."""
    return {"id": qid, "fold": fold, "split": split, "prompt": prompt, "decoding": decoding, "raw": a.text,
            "answer": answer, "logprob": round(a.logprob, LOGPROB_DIGITS),
            "alternatives": [[text, round(lp, LOGPROB_DIGITS)] for text, lp in a.alternatives]}  # fmt: skip


def predict_fold(
    cfg: Config,
    comp: Competition,
    folds: pd.DataFrame,
    fold: int,
    splits: tuple[str, ...],
    shard: tuple[int, int] = (0, 1),
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    warn: Callable[[str], None] = print,
) -> list[Path]:
    """Run every prompt x decoding of the config on the fold's splits; returns the finished files."""
    from competition.engine import shard_rows
    from competition.families import family_for, fold_engine
    from competition.tuned import tuned_job

    loaded = family_for(cfg).load(cfg.fold_dir(fold) / "model")
    normalizer = AnswerNormalizer.of(cfg, comp)
    p = cfg.predict
    tuned = tuned_job(cfg)
    written = []
    for split in splits:
        rows, image_split = split_rows(comp, folds, fold, split)
        rows = rows[shard_rows(rows[IMAGE], *shard).to_numpy()].reset_index(drop=True)
        log = PredictionLog(file_for(cfg, fold, split, shard), predict_hash(cfg, fold))
        done = log.done()
        engine = fold_engine(cfg, comp, folds, fold, image_split, loaded=loaded)
        ids, questions, images = rows[ID].tolist(), rows[QUESTION].tolist(), rows[IMAGE].tolist()
        jobs = [(pr, d) for pr in p.prompts for d in p.decodings] + ([tuned] if tuned else [])
        todo = {(pr, d.name): [i for i in range(len(ids)) if (ids[i], pr, d.name) not in done] for pr, d in jobs}
        tick = progress(f"fold {fold} {split}", sum(map(len, todo.values()))) if progress else None
        for prompt, d in jobs:
            cut_before = engine.cut_answers
            for batch in engine.answer(prompt, d, questions, images, todo[(prompt, d.name)], tick):
                answers = normalizer(pd.Series([a.text for a in batch], dtype=str)).tolist()
                log.append([prediction_row(ids[a.row], fold, split, prompt, d.name, a, ans)
                            for a, ans in zip(batch, answers, strict=True)])  # fmt: skip
            if engine.cut_answers > cut_before:
                warn(
                    f"warning: fold {fold} {split} {prompt}/{d.name}: {engine.cut_answers - cut_before} answers stopped "
                    f"at max_new_tokens={engine.max_new_tokens(d)} before EOS (raise it in predict.decodings)"
                )
        log.finish()
        written.append(log.path)
        if shard[1] > 1:
            merged = merge_shards(cfg, fold, split, shard[1])
            if merged:
                written.append(merged)
    return written
