"""The prediction files between the stages: append-only JSONL per fold and split that `predict` writes and `cv`,
`tune` and `ensemble` read (strictly: a damaged, incomplete or foreign file is one line naming it), joined to the
ground truth (`oof_frame`).

    python -c "from competition.predictions import COLUMNS; print(COLUMNS)"

One row per question x prompt x decoding: id, fold, split, prompt, decoding, raw, answer, logprob, and
alternatives: [raw, logprob] of the next most likely answers where the model scores every answer.
A killed run resumes after its last complete line and never writes a row twice; a finished file
is rewritten in canonical order (prompt, decoding, id), so shards merge to the one-process file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from competition.config import Config, top_k
from competition.data import ANSWER, ID, QTYPE, QUESTION, Competition
from competition.errors import ConfigError, DataError
from competition.folds import fold_rows
from competition.io import atomic_write_json, atomic_write_text, is_number, read_jsonl
from competition.metrics import credit, exact_matches, gold_cells, types_of
from competition.normalize import AnswerNormalizer

COLUMNS = [ID, "fold", "split", "prompt", "decoding", "raw", ANSWER, "logprob", "alternatives"]
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


class PredictionLog:
    """An append-only JSONL of prediction rows that knows which rows it already holds."""

    def __init__(self, path: Path, config_hash: str) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and (read_meta(path) or {}).get("config_hash", config_hash) != config_hash:
            raise DataError(f"{path}: written under another config (hash differs); move it away or use another experiment")
        self._repair()
        atomic_write_json({"config_hash": config_hash, "complete": False}, meta_path(path))
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
        return {(r[ID], r["prompt"], r["decoding"]) for _, r in read_rows(self.path)}

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
    rows = rows.sort_values(["prompt", "decoding", ID], kind="stable")[COLUMNS]
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in rows.to_dict("records"))
    atomic_write_text(path, "".join(lines))


TEXT_FIELDS = (ID, "split", "prompt", "decoding", "raw", ANSWER)  # every row has these and fold and logprob


def read_meta(path: Path) -> dict[str, Any] | None:
    """A prediction file's sidecar (config hash, completeness); None without one."""
    meta = meta_path(path)
    if not meta.is_file():
        return None
    try:
        m = json.loads(meta.read_bytes())
    except ValueError:
        m = None
    if not isinstance(m, dict) or not isinstance(m.get("complete"), bool) or not isinstance(m.get("config_hash"), str):
        raise DataError(f"{meta}: not a prediction sidecar (JSON with config_hash and complete); delete it and rerun "
                        f"`predict`")  # fmt: skip
    return m


def check_fields(row: Any, where: str) -> None:
    """Refuse a row that is not an object of the prediction fields with their types (`where`: file and line)."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object of {', '.join(COLUMNS)}")
    missing = [k for k in (*TEXT_FIELDS, "fold", "logprob") if k not in row]
    if missing:
        raise DataError(f"{where}: no '{missing[0]}' field")
    bad = next((k for k in TEXT_FIELDS if not isinstance(row[k], str)), None)
    if bad:
        raise DataError(f"{where}, '{bad}': expected a string, got {row[bad]!r}")
    if not isinstance(row["fold"], int) or isinstance(row["fold"], bool):
        raise DataError(f"{where}, 'fold': expected a whole number, got {row['fold']!r}")
    if not is_number(row["logprob"]):
        raise DataError(f"{where}, 'logprob': expected a finite number, got {row['logprob']!r}")
    alts = row.get("alternatives")
    if alts is not None and not (isinstance(alts, list) and all(
            isinstance(a, list) and len(a) == 2 and isinstance(a[0], str) and is_number(a[1]) for a in alts)):  # fmt: skip
        raise DataError(f"{where}, 'alternatives': expected a list of [answer, finite logprob] pairs, got {alts!r:.80}")


def read_rows(path: Path, fold: int | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of every line of a prediction file, each checked; a killed run's partial last line is
    skipped (predict redoes it), or refused when `fold` is given (a finished file has none)."""
    rows = read_jsonl(path, fold is not None, f"rerun `predict --fold {fold}`")
    for n, row in rows:
        check_fields(row, f"{path}: line {n}")
    return [(n, {**{k: row.get(k) for k in COLUMNS}, "alternatives": row.get("alternatives") or []}) for n, row in rows]


def read_predictions(path: Path) -> pd.DataFrame:
    """Rows of a prediction file, a killed run's partial last line left out (answers stay strings: 'none' is an
    answer)."""
    rows = [r for _, r in read_rows(path)] if path.exists() else []
    return pd.DataFrame(rows, columns=COLUMNS)


def finished_rows(path: Path, fold: int, split: str, expected: set[str] | None) -> list[dict[str, Any]]:
    """The rows of a prediction file that `predict` finished; a DataError names the file and line of a damaged,
    misplaced, unknown (not in `expected`) or repeated row, and a member that lacks questions."""
    meta = read_meta(path)
    if meta is not None and not meta["complete"]:
        raise DataError(f"{path}: unfinished ({meta_path(path).name} says complete: false): `predict --fold {fold}` "
                        f"was stopped or is still running; let it finish or rerun it")  # fmt: skip
    rows = read_rows(path, fold)
    if not rows:
        said = f", though {meta_path(path).name} says complete" if meta else ""
        raise DataError(f"{path}: no rows{said}; delete it and rerun `predict --fold {fold}`")
    first: dict[tuple[str, str, str], int] = {}
    for n, r in rows:
        if (r["fold"], r["split"]) != (fold, split):
            raise DataError(f"{path}: line {n}: a row of fold {r['fold']}'s {r['split']} split in fold {fold}'s {split} file")
        if expected is not None and r[ID] not in expected:
            what = "a test question" if split == "test" else f"a validation question of fold {fold} (folds.csv)"
            raise DataError(f"{path}: line {n}, 'id': '{r['id']}' is not {what}")
        key = (r[ID], r["prompt"], r["decoding"])
        if key in first:
            raise DataError(f"{path}: line {n}: duplicate row of '{key[0]}' for {key[1]}/{key[2]} (first on line {first[key]})")
        first[key] = n
    if expected is not None:
        check_coverage(path, fold, first, expected)
    return [r for _, r in rows]


def check_coverage(path: Path, fold: int, keys: Iterable[tuple[str, str, str]], expected: set[str]) -> None:
    """Refuse a member (prompt/decoding) of the file that does not answer every expected question, naming which."""
    answered: dict[str, set[str]] = {}
    for qid, prompt, decoding in keys:
        answered.setdefault(f"{prompt}/{decoding}", set()).add(qid)
    for member, ids in answered.items():
        missing = sorted(expected - ids)
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise DataError(f"{path}: {member} answers {len(ids)} of {len(expected)} questions (none for "
                            f"'{missing[0]}'{more}); rerun `predict --fold {fold}`")  # fmt: skip


def check_same_members(cfg: Config, split: str, parts: dict[int, list[dict[str, Any]]]) -> None:
    """Refuse a fold's file that lacks a member (prompt/decoding) another fold's file has."""
    members = {f: {f"{r['prompt']}/{r['decoding']}" for r in rows} for f, rows in parts.items()}
    for f, have in members.items():
        for g, theirs in members.items():
            if theirs - have:
                raise DataError(f"{file_for(cfg, f, split)}: no rows of {sorted(theirs - have)[0]}, which fold {g}'s "
                                f"file has; rerun `predict --fold {f}`")  # fmt: skip


def read_split(cfg: Config, split: str, expected: dict[int, set[str]] | None = None) -> pd.DataFrame:
    """Every fold's rows of one split ('oof' or 'test'), each file checked (with `expected`: fold -> the ids its
    file answers); a DataError when there are none yet or a trained fold has none, a warning for untrained folds."""
    from competition.console import warn

    parts, untrained = {}, []
    for f in sorted(expected) if expected is not None else range(cfg.folds.k):
        path = file_for(cfg, f, split)
        if path.is_file():
            parts[f] = finished_rows(path, f, split, None if expected is None else expected[f])
        elif cfg.fold_trained(f):
            raise DataError(f"{path}: not found, though fold {f} is trained; run `predict --fold {f}`")
        else:
            untrained.append(f)
    if not parts:
        raise DataError(f"{cfg.exp_dir}: no {split} predictions yet; run `predict` first")
    check_same_members(cfg, split, parts)
    if untrained:
        warn(f"warning: {cfg.experiment}: {split} predictions of fold {', '.join(map(str, parts))} only (fold "
             f"{', '.join(map(str, untrained))} not trained yet)")  # fmt: skip
    return pd.DataFrame([r for rows in parts.values() for r in rows], columns=COLUMNS)


def expected_ids(comp: Competition, folds: pd.DataFrame, split: str) -> dict[int, set[str]]:
    """Per fold of folds.csv: the ids its `split` file answers (its validation questions, or every test question)."""
    test = set(comp.test[ID])
    return {int(f): set(fold_rows(comp, folds, f, "val")[ID]) if split == "oof" else test
            for f in sorted(folds["fold"].unique())}  # fmt: skip


def merge_shards(cfg: Config, fold: int, split: str, n: int) -> Path | None:
    """Merge complete shard files of one config into <split>.jsonl; None while a shard is unfinished."""
    parts = [file_for(cfg, fold, split, (i, n)) for i in range(n)]
    metas = [read_meta(p) for p in parts]
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
    """A ConfigError unless experiment `other` is another one (named once), exists, shares cfg's folds and has every
    fold's finished `split` predictions."""
    name = other.experiment
    if name == cfg.experiment or cfg.ensemble.experiments.count(name) > 1:
        twice = "is this experiment" if name == cfg.experiment else "is named twice"
        raise ConfigError(f"ensemble.experiments: '{name}' {twice}: its members would count twice")
    if not other.exp_dir.is_dir():
        raise ConfigError(f"ensemble.experiments: unknown experiment '{name}' (no {other.exp_dir})")
    mine, theirs = cfg.exp_dir / "folds.csv", other.exp_dir / "folds.csv"
    if not theirs.is_file() or theirs.read_bytes() != mine.read_bytes():
        raise ConfigError(f"ensemble.experiments: '{name}' was not trained on the folds of '{cfg.experiment}' "
                          f"({theirs} differs from {mine}); blend experiments that share folds.csv")  # fmt: skip
    for f in range(cfg.folds.k):
        path = file_for(other, f, split)
        if not path.is_file() or not (read_meta(path) or {"complete": True})["complete"]:
            raise ConfigError(f"ensemble.experiments: '{name}' lacks fold {f}'s {split} predictions ({path}); "
                              f"run `predict` for it")  # fmt: skip


def experiment_of(member: str) -> str:
    """The experiment a member name comes from: '' for the config's own, else its '<experiment>:' prefix."""
    return member.split(EXPERIMENT_MARK)[0] if EXPERIMENT_MARK in member else ""


def member_rows(cfg: Config, normalizer: AnswerNormalizer, split: str, expected: dict[int, set[str]] | None = None
                ) -> pd.DataFrame:  # fmt: skip
    """A split's rows of this experiment and of every experiment in ensemble.experiments, whose prompts read
    '<experiment>:<prompt>' and whose raw answers are normalized by this config's rules (everyone's alternatives too);
    `expected` (fold -> ids) checks each file's questions."""
    frames = [read_split(cfg, split, expected)]
    for name in cfg.ensemble.experiments:
        other = cfg.model_copy(update={"experiment": name})
        check_joinable(cfg, other, split)
        rows = read_split(other, split, expected)
        rows[ANSWER] = normalizer(rows["raw"].astype(str)).to_numpy()
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


def ranked_guesses(rows: pd.DataFrame, k: int) -> list[Any]:
    """Each row's answer; under MAP@k (k > 1) the tuple of its answer and next alternatives, k distinct at most."""
    if k == 1:
        return rows[ANSWER].tolist()
    ranked = ([a, *(alt for alt, _ in alts)] for a, alts in zip(rows[ANSWER], rows["alternatives"], strict=True))
    return [tuple(dict.fromkeys(r))[:k] for r in ranked]


def oof_frame(cfg: Config, comp: Competition, folds: pd.DataFrame) -> pd.DataFrame:
    """All folds' OOF rows of every member (ensemble.experiments too) joined to their question, gold (normalized:
    metrics.gold_cells), question type and 'correct', their credit under the config's metric."""
    normalizer = AnswerNormalizer.of(cfg, comp)
    rows = member_rows(cfg, normalizer, "oof", expected_ids(comp, folds, "oof"))
    given = [QTYPE] if QTYPE in comp.train else []
    gold = comp.train[[ID, QUESTION, ANSWER, *given]].rename(columns={ANSWER: "gold_raw"})
    gold["gold"] = gold_cells(comp.train, normalizer)
    df = rows.merge(gold, on=ID, how="left", validate="many_to_one")
    df["qtype"] = types_of(df).to_numpy()
    df["member"] = df["prompt"] + "/" + df["decoding"]
    df["correct"] = credit(cfg.metric, ranked_guesses(df, top_k(cfg.metric)), df["gold"])
    df["exact"] = exact_matches(df["raw"], df["gold_raw"])
    return df
