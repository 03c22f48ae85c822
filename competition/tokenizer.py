"""The word-level tokenizer of random-init models, trained on the data's own questions and answers (offline: the
vocabulary of a small competition is a few hundred words).

    python -c "from competition.tokenizer import train_word_tokenizer; print(train_word_tokenizer(['red circle']))"
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from competition.prompts import IMAGE_TOKEN, vocabulary_text

BASE_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]


def train_word_tokenizer(texts: Iterable[str], specials: Iterable[str] = (IMAGE_TOKEN,),
                         extra_special_tokens: dict[str, str] | None = None) -> PreTrainedTokenizerFast:  # fmt: skip
    """Word-level tokenizer over the given texts and the prompt templates' words (BOS added); pad, unk, bos and
    eos are ids 0-3, then `specials` (by default LLaVA's image token)."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=[*BASE_SPECIALS, *specials], min_frequency=1)
    tok.train_from_iterator([*vocabulary_text(), *texts], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=extra_special_tokens or {"image_token": IMAGE_TOKEN},
        padding_side="left",
    )
