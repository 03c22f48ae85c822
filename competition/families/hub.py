"""Checkpoints read from disk only, never downloaded: their configs and tokenizers, for planning a run.

    python -c "from competition.families.hub import local_config; print(local_config('no/such-model'))"
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoTokenizer

from competition.errors import ConfigError


def local_config(name: str) -> Any | None:
    """The config of a local folder or of the HF cache, never downloaded; None if absent."""
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        return None


def tokenizer_line(name: str | None) -> str:
    """Load a checkpoint's tokenizer from disk (no download): a line for the plan, or a ConfigError."""
    if local_config(name or "") is None:
        return f"tokenizer: {name} is not on disk; not checked"
    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as e:  # transformers raises many kinds here (ImportError for a missing sentencepiece)
        raise ConfigError(f"{name}: tokenizer does not load: {str(e).splitlines()[0]}") from None
    pad = "" if tok.pad_token is not None else "; no pad token (unk or eos will pad)"
    return f"tokenizer: {type(tok).__name__}, {len(tok):,} tokens{pad}"
