"""The inference engine behind `predict` and the decoding study: batched answering, grouped by image.

    python bench/predict_throughput.py      # the engine against a one-question-at-a-time loop

Each image's questions share a prefix (system text + image tokens): it is encoded once per image
and its key/value cache reused for every question (greedy and sampling; beam search runs the
plain path). Free, constrained (a trie of the training answers) and ranked decoding; an
out-of-memory batch is halved and retried.

A row's answer depends on the row alone, never on its batch: sampling draws each row's noise from a
generator keyed by the decoding's seed, the row's image and question (see `RowSampler`).
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd
import torch
from transformers import LlavaForConditionalGeneration, LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

from competition.config import DecodingConfig
from competition.dataset import encode_prompts, expand_image_tokens, pad
from competition.images import Images
from competition.modeling import image_token_count

# transformers renamed `past_key_values` to `cache` (inputs and outputs); speak whichever it knows.
CACHE = "cache" if "cache" in inspect.signature(LlavaForConditionalGeneration.forward).parameters else "past_key_values"

# Generated tokens at most when max_new_tokens is unset and there is no training vocabulary to measure.
FALLBACK_MAX_NEW_TOKENS = 16


class Answer(NamedTuple):
    """One answered question: its row, the raw generated text and the model's log-probability of it; with a model
    that scores every answer (a classifier, rank decoding), the next most likely answers and theirs, best first."""

    row: int
    text: str
    logprob: float
    alternatives: tuple[tuple[str, float], ...] = ()


def ranked_answers(rows: list[int], logprobs: torch.Tensor, answers: list[str], alternatives: int) -> list[Answer]:
    """Each row's best answer of the (rows, answers) log-probabilities, with its next `alternatives` best."""
    top = logprobs.float().topk(min(1 + alternatives, logprobs.shape[1]), -1)
    return [Answer(r, answers[idx[0]], lps[0], tuple(zip((answers[i] for i in idx[1:]), lps[1:], strict=True)))
            for r, idx, lps in zip(rows, top.indices.tolist(), top.values.tolist(), strict=True)]  # fmt: skip


class AnswerTrie:
    """Prefix tree of tokenized answers (each ending in EOS): the tokens allowed after a prefix."""

    def __init__(self, answers: list[list[int]]) -> None:
        self.root: dict[int, dict] = {}
        for ids in answers:
            node = self.root
            for t in ids:
                node = node.setdefault(t, {})

    def allowed(self, prefix: list[int]) -> list[int]:
        """Tokens that continue `prefix` towards some answer (empty once an answer is complete)."""
        node = self.root
        for t in prefix:
            node = node.get(t)
            if node is None:
                return []
        return list(node)


class RowSampler(LogitsProcessor):
    """Sampling as greedy search: argmax(top-p(logits / T) + Gumbel noise) draws from softmax(logits / T) after
    top-p; each row's noise comes from its own generator (one draw per step), so no other row can change it."""

    def __init__(self, d: DecodingConfig, keys: list[str]) -> None:
        self.temperature, self.top_p = d.temperature, TopPLogitsWarper(d.top_p)
        self.generators = [torch.Generator().manual_seed(zlib.crc32(f"{d.seed}\0{k}".encode())) for k in keys]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators])
        gumbel = -(-uniform.clamp_min(torch.finfo(torch.float32).tiny).log()).log()
        return self.top_p(input_ids, scores.float() / self.temperature) + gumbel.to(scores.device)


def token_logprobs(logits: tuple[torch.Tensor, ...], tokens: torch.Tensor) -> torch.Tensor:
    """The model's own log-probability of each generated token, from the raw logits of each step."""
    return torch.stack(
        [step.float().log_softmax(-1).gather(-1, tokens[:, k, None])[:, 0] for k, step in enumerate(logits)], 1
    )


@dataclass
class Encoded:
    """A batch's questions split at the end of the image tokens."""

    prefix: list[int]
    suffixes: list[list[int]]
    rows: list[int]
    images: list[str]
    row_image: list[int]


def batches(image_ids: list[str], batch_size: int) -> Iterator[list[int]]:
    """Row indices in batches of whole images (sorted by image id), about `batch_size` questions each."""
    order = sorted(range(len(image_ids)), key=lambda i: (image_ids[i], i))
    batch: list[int] = []
    for pos, i in enumerate(order):
        batch.append(i)
        last_of_image = pos + 1 == len(order) or image_ids[order[pos + 1]] != image_ids[i]
        if last_of_image and len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def shard_rows(image_ids: pd.Series, shard: int, n_shards: int) -> pd.Series:
    """Mask of the rows whose image falls in shard i of n (images dealt round-robin in sorted order)."""
    codes = {img: k for k, img in enumerate(sorted(image_ids.unique()))}
    return image_ids.map(codes) % n_shards == shard


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class Engine:
    """Answers questions with one model: plain or prefix-cached generation, constrained, or ranked."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        images: Images,
        *,
        batch_size: int = 32,
        prefix_cache: bool | str = "auto",
        max_length: int = 128,
        vocabulary: list[str] | None = None,
        alternatives: int = 0,
    ) -> None:
        self.model, self.processor, self.images = model, processor, images
        self.alternatives = alternatives  # next most likely answers kept per row where every answer is scored
        self.tok = processor.tokenizer
        self.batch_size, self.prefix_cache, self.max_length = batch_size, prefix_cache, max_length
        self.vocabulary = vocabulary or []
        self._answer_ids = (
            [ids + [self.tok.eos_token_id] for ids in self.tok(self.vocabulary, add_special_tokens=False)["input_ids"]]
            if self.vocabulary
            else []
        )
        self.trie = AnswerTrie(self._answer_ids)
        self.default_max_new_tokens = max(map(len, self._answer_ids), default=FALLBACK_MAX_NEW_TOKENS)
        self.cut_answers = 0  # rows whose generation hit max_new_tokens before EOS, since the engine was made
        self.choices: list[tuple[str, ...]] | None = None  # per question: its choices (rank decoding scores those)

    def encode(self, prompt: str, questions: list[str], image_ids: list[str], rows: list[int]) -> Encoded:
        """Expanded prompts of `rows`, split after the image tokens."""
        ids = encode_prompts(self.processor, prompt, [questions[i] for i in rows], self.max_length)
        image_token, n_image = self.model.config.image_token_id, image_token_count(self.model.config)
        full = [expand_image_tokens(x, image_token, n_image) for x in ids]
        cut = full[0].index(image_token) + n_image
        images = sorted({image_ids[i] for i in rows})
        where = {img: k for k, img in enumerate(images)}
        return Encoded(full[0][:cut], [x[cut:] for x in full], rows, images, [where[image_ids[i]] for i in rows])

    def answer(
        self,
        prompt: str,
        decoding: DecodingConfig,
        questions: list[str],
        image_ids: list[str],
        rows: list[int] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[list[Answer]]:
        """An Answer for each row, yielded one batch at a time."""
        rows = list(range(len(questions))) if rows is None else rows
        sub_images = [image_ids[i] for i in rows]
        for batch in batches(sub_images, self.batch_size):
            result = self._with_oom_retry(
                [rows[i] for i in batch], lambda b: self._batch(prompt, decoding, questions, image_ids, b)
            )
            if progress:
                progress(len(batch))
            yield result

    def _with_oom_retry(self, batch: list[int], run: Callable[[list[int]], list]) -> list:
        """Run a batch; on out-of-memory, halve it and retry the halves."""
        try:
            return run(batch)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(batch) // 2
            return self._with_oom_retry(batch[:half], run) + self._with_oom_retry(batch[half:], run)

    def max_new_tokens(self, d: DecodingConfig) -> int:
        """d.max_new_tokens, else the longest vocabulary answer + EOS; constrained decoding gets at least the
        latter, so every row reaches the end of its trie path and no answer is cut to a prefix."""
        limit = d.max_new_tokens or self.default_max_new_tokens
        return max(limit, self.default_max_new_tokens) if d.constrained else limit

    @torch.inference_mode()
    def _batch(
        self, prompt: str, d: DecodingConfig, questions: list[str], image_ids: list[str], rows: list[int]
    ) -> list[Answer]:
        """Answer one batch of rows."""
        enc = self.encode(prompt, questions, image_ids, rows)
        dev, dtype = self.model.device, self.model.dtype
        pixels = self.images(enc.images).to(dev, dtype)
        if d.search == "rank":
            return self._rank(enc, pixels, d.rank)
        inputs: dict[str, Any] = {}
        if self.use_prefix_cache(enc) and d.num_beams == 1:
            ids, mask, inputs[CACHE] = self._cached_inputs(enc, pixels)
        else:
            ids, mask = pad([enc.prefix + s for s in enc.suffixes], self.tok.pad_token_id, "left")
            inputs["pixel_values"] = pixels[enc.row_image]
        keys = [f"{image_ids[r]}\0{questions[r]}" for r in enc.rows]
        return self.generate(d, enc.rows, keys, ids.to(dev), mask.to(dev), inputs)

    def generate(self, d: DecodingConfig, rows: list[int], keys: list[str], ids: torch.Tensor, mask: torch.Tensor,
                 inputs: dict[str, Any]) -> list[Answer]:  # fmt: skip
        """Generate the answers of left-padded prompts `ids` (+ the model's other `inputs`) with decoding d;
        `keys` seed each row's sampling."""
        kwargs: dict[str, Any] = dict(
            max_new_tokens=self.max_new_tokens(d),
            do_sample=False,
            num_beams=d.num_beams,
            length_penalty=d.length_penalty,
            output_scores=d.num_beams > 1,
            output_logits=d.num_beams == 1,
            return_dict_in_generate=True,
        )
        if d.search == "sample":
            kwargs["logits_processor"] = LogitsProcessorList([RowSampler(d, keys)])
        width = ids.shape[1]
        if d.constrained:
            kwargs["prefix_allowed_tokens_fn"] = lambda b, x: (
                self.trie.allowed(x[width:].tolist()) or [self.tok.eos_token_id]
            )
        out = self.model.generate(input_ids=ids, attention_mask=mask, **inputs, **kwargs)
        new = out.sequences[:, width:]
        self.cut_answers += int((new != self.tok.eos_token_id).all(-1).sum())
        texts = self.tok.batch_decode(new, skip_special_tokens=True)
        return [Answer(r, t.strip(), lp) for r, t, lp in zip(rows, texts, self._logprobs(out, new), strict=True)]

    def _logprobs(self, out: Any, new: torch.Tensor) -> list[float]:
        """Each row's summed log-probability up to its EOS: the model's own, or the beam scores of beam search."""
        if out.logits is not None:
            scores = token_logprobs(out.logits, new)
        else:
            scores = self.model.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
        live = torch.ones_like(new, dtype=torch.bool)
        if new.shape[1] > 1:
            live[:, 1:] = (new[:, :-1] != self.tok.eos_token_id).cumprod(-1).bool()
        return scores.masked_fill(~live[:, : scores.shape[1]], 0).sum(-1).float().cpu().tolist()

    def use_prefix_cache(self, enc: Encoded) -> bool:
        """On when asked; 'auto': when the shared prefix is at least twice the longest question (real image tokens)."""
        if self.prefix_cache == "auto":
            return len(enc.prefix) >= 2 * max(map(len, enc.suffixes))
        return bool(self.prefix_cache)

    def _cached_inputs(self, enc: Encoded, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Encode each image's prefix once; rows = prefix + gap + right-aligned question, with its cache."""
        p = len(enc.prefix)
        prefix_ids = torch.tensor([enc.prefix] * len(enc.images), device=self.model.device)
        cache = getattr(self.model(input_ids=prefix_ids, pixel_values=pixels, use_cache=True), CACHE)
        cache.batch_select_indices(torch.tensor(enc.row_image, device=self.model.device))
        suffix, suffix_mask = pad(enc.suffixes, self.tok.pad_token_id, "left")
        ids = torch.cat([torch.tensor([enc.prefix] * len(enc.rows)), suffix], dim=1)
        return ids, torch.cat([torch.ones(len(enc.rows), p, dtype=torch.long), suffix_mask], dim=1), cache

    def _rank(self, enc: Encoded, pixels: torch.Tensor, top: int) -> list[Answer]:
        """Score the `top` vocabulary answers (multiple choice: every choice of the batch's questions) by
        log-likelihood given each prompt; return the best, and the rest ranked where alternatives are kept."""
        texts, cands = self._candidates(enc.rows, top)
        dev = self.model.device
        ids, mask = pad([enc.prefix + s for s in enc.suffixes], self.tok.pad_token_id, "left")
        ids, mask = ids.to(dev), mask.to(dev)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions(mask),
            pixel_values=pixels[enc.row_image],
            use_cache=True,
        )
        first = out.logits[:, -1].float().log_softmax(-1)
        length = max(map(len, cands))
        cand, cmask = (t.to(dev) for t in pad(cands, self.tok.pad_token_id))
        n, c = len(enc.rows), len(cands)
        total = first[:, cand[:, 0]].clone()
        if length > 1:
            cache = getattr(out, CACHE)
            cache.batch_repeat_interleave(c)
            inp = cand[:, :-1].repeat(n, 1)
            full_mask = torch.cat([mask.repeat_interleave(c, 0), cmask[:, :-1].repeat(n, 1)], dim=1)
            step = (
                self.model(
                    input_ids=inp,
                    attention_mask=full_mask,
                    position_ids=positions(full_mask)[:, -inp.shape[1] :],
                    **{CACHE: cache},
                )
                .logits.float()
                .log_softmax(-1)
            )
            target = cand[:, 1:].repeat(n, 1)
            tok_lp = step.gather(-1, target.unsqueeze(-1)).squeeze(-1) * cmask[:, 1:].repeat(n, 1)
            total += tok_lp.sum(-1).view(n, c)
        return ranked_answers(enc.rows, total, texts, self.alternatives)

    def _candidates(self, rows: list[int], top: int) -> tuple[list[str], list[list[int]]]:
        """The answers rank decoding scores for `rows` and their token ids (EOS-terminated): the `top` most common
        training answers, or with choices every choice of these rows."""
        if self.choices is None:
            if not self._answer_ids:
                raise ValueError("rank decoding needs the training answer vocabulary")
            return self.vocabulary[:top], self._answer_ids[:top]
        texts = sorted({c for r in rows for c in self.choices[r]})
        ids = self.tok(texts, add_special_tokens=False)["input_ids"]
        return texts, [x + [self.tok.eos_token_id] for x in ids]
