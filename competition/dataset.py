"""Questions as model inputs: prompt encoding with image-token expansion, images, collation.

    python -c "from competition.dataset import TRAIN_FIELDS; print(TRAIN_FIELDS)"

Text is tokenized once up front (cheap lengths for length-grouped batching); images are decoded
when a batch is built, once per image when `cache` is on.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from competition.augment import split_mark
from competition.data import ANSWER, IMAGE, QUESTION
from competition.errors import DataError
from competition.images import Images
from competition.prompts import render, render_followup

IGNORE = -100
KEEP_TAIL = 8
TRAIN_FIELDS = ("input_ids", "labels", "image_id")


def encode_prompts(processor: Any, prompt: str, questions: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each rendered prompt (one image placeholder), cut to `max_length` text tokens.

    Overlong prompts lose question tokens just after the image placeholder, never the placeholder
    nor the last KEEP_TAIL tokens (the answer cue).
    """
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids(tok.image_token if hasattr(tok, "image_token") else "<image>")
    texts = [render(prompt, q, processor) for q in questions]
    out = []
    for row, ids in enumerate(tok(texts, add_special_tokens=True)["input_ids"]):
        if ids.count(image_id) != 1:
            raise DataError(f"prompt '{prompt}' for question {row} has {ids.count(image_id)} image placeholders, not 1")
        over = len(ids) - max_length
        if over > 0:
            start = ids.index(image_id) + 1
            if len(ids) - KEEP_TAIL - start < over:
                raise DataError(f"max_length={max_length} leaves no room for the prompt '{prompt}' (question {row})")
            ids = ids[:start] + ids[start + over :]
        out.append(ids)
    return out


def encode_answers(processor: Any, answers: Sequence[str]) -> list[list[int]]:
    """Answer token ids followed by EOS."""
    tok = processor.tokenizer
    return [ids + [tok.eos_token_id] for ids in tok(list(answers), add_special_tokens=False)["input_ids"]]


class Examples(torch.utils.data.Dataset):
    """Training examples built up front, one dict each (a family's dataset fills `items`)."""

    items: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class Views(Examples):
    """One example per item of `dataset` as it was built from unflipped rows: each time it is read, that item or
    one of its flipped views (augment.flipped_rows' copies, the same image's k-th item), drawn from (seed, epoch,
    example) alone, so a resumed run reads the views an uninterrupted one would; an epoch is as long as without
    views."""

    def __init__(self, dataset: Examples, seed: int = 0) -> None:
        self.seed, self.epoch = seed, 0
        self.items, seen, groups = dataset.items, Counter(), {}
        for i, item in enumerate(self.items):
            base, _ = split_mark(item["image_id"])
            key = (base, seen[item["image_id"]])
            seen[item["image_id"]] += 1
            groups.setdefault(key, []).append(i)
        self.groups = list(groups.values())

    def __len__(self) -> int:
        return len(self.groups)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next reads belong to (train.PartsTrainer tells it at each epoch's start)."""
        self.epoch = epoch

    def __getitem__(self, g: int) -> dict[str, Any]:
        views = self.groups[g]
        return self.items[views[zlib.crc32(f"{self.seed}\0{self.epoch}\0{g}".encode()) % len(views)]]


def image_groups(images: Sequence[str], pack: int) -> list[tuple[str, list[int]]]:
    """Row indices of each image's questions, in order, in chunks of at most `pack`."""
    by_image: dict[str, list[int]] = {}
    for i, image in enumerate(images):
        by_image.setdefault(image, []).append(i)
    return [(image, idx[s : s + pack]) for image, idx in by_image.items() for s in range(0, len(idx), pack)]


class TrainSet(Examples):
    """Pre-tokenized conversations; labels mask everything but the answers and their EOS.

    With `pack` > 1, up to `pack` questions of one image form a multi-turn conversation (as LLaVA's
    training data does): the image is encoded once for all of them.
    """

    def __init__(
        self,
        processor: Any,
        prompt: str,
        rows: Any,
        max_length: int,
        pack: int = 1,
    ) -> None:
        questions, images = rows[QUESTION].tolist(), rows[IMAGE].tolist()
        prompts = encode_prompts(processor, prompt, questions, max_length - 2)  # room for one answer token + EOS
        answers = encode_answers(processor, rows[ANSWER].tolist())
        followups = followup_ids(processor, prompt, questions) if pack > 1 else prompts
        self.items: list[dict[str, Any]] = []
        for image, idx in image_groups(images, pack):
            self._add_conversation(image, idx, prompts, followups, answers, max_length)

    def _add_conversation(
        self, image: str, idx: list[int], prompts: list, followups: list, answers: list, max_length: int
    ) -> None:
        """One example: the first question with the image, later ones as follow-up turns."""
        ids: list[int] = []
        labels: list[int] = []
        for turn, i in enumerate(idx):
            p = prompts[i] if turn == 0 else followups[i]
            a = answers[i][: max(2, max_length - len(p))] if turn == 0 else answers[i]
            if turn and len(ids) + len(p) + len(a) > max_length:
                self.items.append({"input_ids": ids, "labels": labels, "image_id": image})
                ids, labels, p, a = [], [], prompts[i], answers[i][: max(2, max_length - len(prompts[i]))]
            ids += p + a
            labels += [IGNORE] * len(p) + a
        self.items.append({"input_ids": ids, "labels": labels, "image_id": image})


def followup_ids(processor: Any, prompt: str, questions: Sequence[str]) -> list[list[int]]:
    """Token ids of each question as a later turn of a conversation."""
    texts = [render_followup(prompt, q, processor) for q in questions]
    return processor.tokenizer(texts, add_special_tokens=False)["input_ids"]


def expand_image_tokens(ids: list[int], image_token_id: int, n: int) -> list[int]:
    """Replace the single image placeholder by the n image tokens the vision tower yields."""
    i = ids.index(image_token_id)
    return ids[:i] + [image_token_id] * n + ids[i + 1 :]


def pad(seqs: Sequence[Sequence[int]], value: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences padded with `value` to the longest on the `side` ('left' or 'right'), and their attention mask."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, x in enumerate(seqs):
        where = slice(width - len(x), width) if side == "left" else slice(0, len(x))
        ids[r, where] = torch.tensor(x, dtype=torch.long)
        mask[r, where] = 1
    return ids, mask


class TrainCollator:
    """Expand image tokens, pad on the right, attach pixel values."""

    def __init__(self, images: Images, image_token_id: int, n_image_tokens: int, pad_id: int) -> None:
        self.images, self.image_token_id, self.n, self.pad_id = images, image_token_id, n_image_tokens, pad_id

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [expand_image_tokens(b["input_ids"], self.image_token_id, self.n) for b in batch]
        labels = [[IGNORE] * (self.n - 1) + b["labels"] for b in batch]
        input_ids, mask = pad(ids, self.pad_id)
        label_t, _ = pad(labels, IGNORE)
        pixels = self.images([b["image_id"] for b in batch])
        return {"input_ids": input_ids, "attention_mask": mask, "labels": label_t, "pixel_values": pixels}
