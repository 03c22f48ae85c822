"""The predict stage: a fold's model answers its OOF and test questions with every prompt x decoding.

    python -m competition predict -c configs/demo.yaml --fold 0 [--split oof|test|both] [--shard 1/2]

Its files (append-only, resumable, shards merged) are the prediction store of competition/predictions.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from competition.augment import row_views, swap_sides, viewed
from competition.config import Config
from competition.data import ANSWER, CHOICES, ID, IMAGE, QUESTION, Competition
from competition.errors import ConfigError
from competition.folds import fold_rows
from competition.normalize import AnswerNormalizer, normalize_lists, snap_to_vocab
from competition.predictions import LOGPROB_DIGITS, PredictionLog, file_for, merge_shards

if TYPE_CHECKING:
    from competition.engine import Answer


def predict_hash(cfg: Config, fold: int) -> str:
    """Hash of everything that decides the predictions of a fold (not where they go, nor batching speed)."""
    keys = {k: cfg.to_dict()[k] for k in ("model", "train", "predict", "normalize", "seed")}
    for speed_only in ("batch_size", "prefix_cache"):
        keys["predict"].pop(speed_only)
    keys["fold"], keys["data"] = fold, str(cfg.data.root)
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]


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
    return {ID: qid, "fold": fold, "split": split, "prompt": prompt, "decoding": decoding, "raw": a.text,
            ANSWER: answer, "logprob": round(a.logprob, LOGPROB_DIGITS),
            "alternatives": [[text, round(lp, LOGPROB_DIGITS)] for text, lp in a.alternatives]}  # fmt: skip


def within_choices(a: Answer, answer: str, ranked: list[str], choices: tuple[str, ...]) -> tuple[Answer, str]:
    """The answer restricted to its row's (normalized) choices: its best-ranked answer that is one (a classifier's or
    rank decoding's head masked to them), else the choice nearest its text (rapidfuzz); alternatives kept where they
    are choices. `ranked`: the normalized texts of the answer and its alternatives."""
    logprobs = [a.logprob, *(lp for _, lp in a.alternatives)]
    kept = dict((text, lp) for text, lp in reversed(list(zip(ranked, logprobs, strict=True))) if text in choices)
    kept = sorted(kept.items(), key=lambda item: ranked.index(item[0]))
    if not kept:
        return a._replace(alternatives=()), snap_to_vocab([answer], choices, cutoff=0)[0]
    return a._replace(logprob=kept[0][1], alternatives=tuple(kept[1:])), kept[0][0]


def normalized_choices(rows: pd.DataFrame, normalizer: AnswerNormalizer) -> list[tuple[str, ...]] | None:
    """Each row's choices, normalized as the answers are; None without a choices column."""
    if CHOICES not in rows:
        return None
    return normalize_lists(rows[CHOICES], normalizer)


def answered_rows(batch: list[Answer], normalizer: AnswerNormalizer, choices: list[tuple[str, ...]] | None
                  ) -> list[tuple[Answer, str]]:  # fmt: skip
    """Each Answer with its normalized answer; with choices, both restricted to the row's choices."""
    answers = normalizer(pd.Series([a.text for a in batch], dtype=str)).tolist()
    if choices is None:
        return list(zip(batch, answers, strict=True))
    ranked = normalize_lists(([a.text, *(t for t, _ in a.alternatives)] for a in batch), normalizer)
    return [within_choices(a, ans, list(texts), choices[a.row])
            for a, ans, texts in zip(batch, answers, ranked, strict=True)]  # fmt: skip


def seen_as_is(a: Answer, view: str) -> Answer:
    """An answer given of a flipped picture as it reads of the picture itself (a flip undoes itself)."""
    if not view:
        return a
    return a._replace(text=swap_sides(a.text, view), alternatives=tuple((swap_sides(t, view), lp) for t, lp in a.alternatives))


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
        choices = normalized_choices(rows, normalizer)
        jobs = [(pr, d) for pr in p.prompts for d in p.decodings] + ([tuned] if tuned else [])
        todo = {(pr, d.name): [i for i in range(len(ids)) if (ids[i], pr, d.name) not in done] for pr, d in jobs}
        tick = progress(f"fold {fold} {split}", sum(map(len, todo.values()))) if progress else None
        for prompt, d in jobs:
            cut_before = engine.cut_answers
            views = row_views(questions, d.view, cfg.train.flip_keep)
            if choices is not None and hasattr(engine, "choices"):  # rank decoding scores each row's choices as seen
                engine.choices = [[swap_sides(c, v) for c in row] for row, v in zip(rows[CHOICES], views, strict=True)]
            for batch in engine.answer(prompt, d, *viewed(questions, images, views), todo[(prompt, d.name)], tick):
                batch = [seen_as_is(a, views[a.row]) for a in batch]
                log.append([prediction_row(ids[a.row], fold, split, prompt, d.name, a, ans)
                            for a, ans in answered_rows(batch, normalizer, choices)])  # fmt: skip
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
