"""Batched inference: left padding, questions grouped by image, one prompt and decoding per call.

    python -m competition predict -c configs/demo.yaml --fold 0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from competition.dataset import Images, encode_prompts, expand_image_tokens
from competition.modeling import image_token_count


@torch.inference_mode()
def generate_answers(
    model: Any,
    processor: Any,
    rows: pd.DataFrame,
    images: Images,
    prompt: str,
    question_col: str,
    image_col: str,
    max_length: int = 128,
    batch_size: int = 32,
    max_new_tokens: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers for `rows`, in row order; batches hold consecutive questions of sorted images."""
    tok = processor.tokenizer
    cfg = model.config
    n_image = image_token_count(cfg)
    prompts = encode_prompts(processor, prompt, rows[question_col].tolist(), max_length)
    order = sorted(range(len(rows)), key=lambda i: (rows[image_col].iat[i], len(prompts[i])))
    answers: list[str] = [""] * len(rows)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids = [expand_image_tokens(prompts[i], cfg.image_token_id, n_image) for i in idx]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, x in enumerate(ids):
            input_ids[r, width - len(x) :] = torch.tensor(x)
            mask[r, width - len(x) :] = 1
        pixels = images([rows[image_col].iat[i] for i in idx]).to(model.device, model.dtype)
        out = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=mask.to(model.device),
            pixel_values=pixels,
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
        for i, text in zip(idx, tok.batch_decode(out[:, width:], skip_special_tokens=True), strict=True):
            answers[i] = text.strip()
        if progress:
            progress(len(idx))
    return answers
