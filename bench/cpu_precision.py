"""Training steps of the glimpses recipe's classifier on the CPU in fp32 and under bf16 autocast, side by side.

    python bench/cpu_precision.py [-c configs/demo_classifier_glimpses.yaml] [--steps 20] [--threads 1]

What `train.precision: auto` picks on this CPU, then the seconds per optimizer step (batch and picture size of the
recipe, random pictures and questions) of each precision, the two alternated `--rounds` times so that a busy moment
weighs on both alike, best round kept, and their ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from competition.classifier import build_classifier
from competition.config import load_config
from competition.modeling import cpu_computes_bf16, resolve_precision

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["What color is the circle?", "How many squares are there?", "Is there a red star?", "Where is the cross?"]


def batch(model: torch.nn.Module, tokenizer: Any, size: int, pixels: int) -> dict[str, torch.Tensor]:
    """Random pictures and the recipe's kind of questions, one answer index each."""
    ids = tokenizer([QUESTIONS[i % len(QUESTIONS)] for i in range(size)], padding=True, return_tensors="pt")
    return {"pixel_values": torch.rand(size, 3, pixels, pixels), "input_ids": ids["input_ids"],
            "attention_mask": ids["attention_mask"], "labels": torch.randint(0, len(model.answers), (size,))}  # fmt: skip


def seconds_per_step(model: torch.nn.Module, inputs: dict, bf16: bool, steps: int) -> float:
    """Forward, backward and an AdamW step, `steps` times; the mean seconds."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", type=Path, default=REPO / "configs" / "demo_classifier_glimpses.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, ["data.root=/nonexistent"])
    c = cfg.model.classifier
    model, processor = build_classifier(c, QUESTIONS, [str(i) for i in range(40)], cfg.seed)
    model.train()
    pixels = c.image_size if isinstance(c.image_size, int) else 96  # "data": the suite's nominal size
    inputs = batch(model, processor.tokenizer, cfg.train.per_device_batch_size, pixels)
    print(f"this CPU computes bf16: {cpu_computes_bf16()}; train.precision auto -> {resolve_precision('auto')}")
    best = {False: float("inf"), True: float("inf")}
    for _ in range(args.rounds):
        for bf16 in (False, True):
            seconds_per_step(model, inputs, bf16, 2)  # warm-up: oneDNN picks its kernels
            best[bf16] = min(best[bf16], seconds_per_step(model, inputs, bf16, args.steps))
    print(f"{args.config.name}, batch {len(inputs['labels'])} (a question a picture), {pixels} px, {args.threads} thread(s):")
    print(f"  fp32 {best[False]:.3f} s/step, bf16 autocast {best[True]:.3f} s/step: bf16/fp32 = {best[True] / best[False]:.2f}")


if __name__ == "__main__":
    main()
