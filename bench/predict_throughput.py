"""Inference throughput: the batched engine (with and without prefix reuse) vs a one-question-at-a-time loop.

    python bench/predict_throughput.py [--model experiments/demo/fold0/model] [--questions 400]
    python bench/predict_throughput.py --set model.tiny.patch_size=8      # 145 image tokens, as real LLaVA's prefix dominates

Same model, same questions, greedy decoding, all measured in one run; prints questions/s, the
ratios, and checks that every method gives the same answers (all of them in float32; in bf16/fp16 it reports
how many agree, since a batch's padding changes the rounding). Without --model a tiny model is
trained for a few steps on a generated data set so that answers have realistic lengths.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from competition.config import DecodingConfig, load_config
from competition.data import load_competition
from competition.dataset import pad
from competition.engine import Engine
from competition.folds import read_folds, write_folds
from competition.images import Images, ImageTransform
from competition.modeling import image_token_count, load_trained
from competition.synthetic import generate
from competition.train import train_fold


def one_at_a_time(engine: Engine, questions: list[str], images: list[str]) -> list[str]:
    """The seed's loop: per question, load the image, build the prompt, generate alone."""
    answers = []
    for q, img in zip(questions, images, strict=True):
        dev = engine.model.device
        pixels = engine.images.transform([engine.images.comp.load_image("train", img)]).to(dev, engine.model.dtype)
        enc = engine.encode("short_answer", [q], [img], [0])
        ids, mask = pad([enc.prefix + enc.suffixes[0]], engine.tok.pad_token_id, "left")
        with torch.inference_mode():
            out = engine.model.generate(
                input_ids=ids.to(dev), attention_mask=mask.to(dev), pixel_values=pixels, max_new_tokens=8, do_sample=False
            )
        answers.append(engine.tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


def batched(engine: Engine, questions: list[str], images: list[str]) -> list[str]:
    """The engine's greedy answers in row order."""
    got = {
        r: t for b in engine.answer("short_answer", DecodingConfig(name="greedy"), questions, images) for r, t, *_ in b
    }
    return [got[i] for i in range(len(questions))]


def timed(fn, *args) -> tuple[list[str], float]:  # noqa: ANN001
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a trained model folder (fold<k>/model)")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--questions", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. model.tiny.patch_size=8")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate(root, train_images=300, test_images=10, seed=3)
        sets = [f"data.root={root}", f"workdir={tmp}", "train.max_steps=150", "train.save_steps=1000", *a.set]
        cfg = load_config(a.config, sets)
        comp = load_competition(cfg.data)
        write_folds(cfg, comp.train)
        model_dir = a.model
        if model_dir is None:
            train_fold(cfg, comp, read_folds(cfg), 0, log=lambda s: None)
            model_dir = cfg.fold_dir(0) / "model"
        model, processor = load_trained(model_dir, cfg.model)
        rows = comp.train.head(a.questions)
        questions, images = rows["question"].tolist(), rows["image_id"].tolist()
        transform = ImageTransform(processor, cfg.model.image_aspect_ratio)

        def engine(prefix: bool, bs: int) -> Engine:
            images = Images(comp, "train", transform, cache=False)
            return Engine(model, processor, images, batch_size=bs, prefix_cache=prefix, max_length=cfg.predict.max_length)

        seed_answers, t_seed = timed(one_at_a_time, engine(False, 1), questions, images)
        plain, t_plain = timed(batched, engine(False, a.batch_size), questions, images)
        cached, t_cached = timed(batched, engine(True, a.batch_size), questions, images)
    n = len(questions)
    print(
        f"{n} questions, greedy, batch {a.batch_size}, {torch.get_num_threads()} threads, "
        f"{image_token_count(model.config)} image tokens per question"
    )
    print(f"one at a time (seed style): {n / t_seed:8.1f} q/s")
    print(f"engine, no prefix reuse:    {n / t_plain:8.1f} q/s  ({t_seed / t_plain:.1f}x)")
    print(
        f"engine, prefix reuse:       {n / t_cached:8.1f} q/s  ({t_seed / t_cached:.1f}x; {t_plain / t_cached:.2f}x over no reuse)"
    )
    same = seed_answers == plain == cached
    print(f"identical answers: {same} ({sum(x == y for x, y in zip(seed_answers, cached, strict=True))}/{n})")
    if not same and model.dtype == torch.float32:  # in bf16/fp16 a batch's padding shifts rounding: near-ties may flip
        raise SystemExit(1)


if __name__ == "__main__":
    main()
