"""Which tensors a training run saves and loads: the parameters that train and the persistent buffers (BatchNorm's
running statistics), in checkpoints and beside adapters, loaded back strictly.

    python -c "from competition.weights import trained_tensors; import torch; print(list(trained_tensors(torch.nn.BatchNorm1d(2))))"
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from competition.errors import ConfigError

TRAINABLE_FILE = "trainable.safetensors"  # a checkpoint's (or a vlm projector run's) trained tensors
BUFFERS_FILE = "buffers.safetensors"  # beside an adapter or a projector: the model's persistent buffers


def persistent_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The buffers the model's state_dict holds (BatchNorm's running statistics), by their state_dict names."""
    found = {}
    for prefix, module in model.named_modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in module._non_persistent_buffers_set:
                found[f"{prefix}.{name}" if prefix else name] = buffer
    return found


def trained_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor training can change: the parameters that train and the persistent buffers."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return {**params, **persistent_buffers(model)}


def save_trainable(model: torch.nn.Module, folder: Path) -> None:
    """Write every tensor training can change (trained_tensors) to folder/TRAINABLE_FILE."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {n: t.detach().contiguous().cpu() for n, t in trained_tensors(model).items()}
    save_file(weights, str(folder / TRAINABLE_FILE))


def load_trainable(model: torch.nn.Module, folder: Path) -> None:
    """Load folder/TRAINABLE_FILE into the model's trained tensors; names and shapes must match exactly."""
    saved = load_file(str(folder / TRAINABLE_FILE))
    load_exactly(model, trained_tensors(model), saved, folder)


def save_buffers(model: torch.nn.Module, folder: Path) -> None:
    """The persistent buffers of a model saved as an adapter or a projector, beside it (none: no file)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    buffers = {n: b.detach().contiguous().cpu() for n, b in persistent_buffers(base).items()}
    if buffers:
        save_file(buffers, str(folder / BUFFERS_FILE))


def load_buffers(model: torch.nn.Module, folder: Path) -> None:
    """What save_buffers wrote, back into the (merged) model; every buffer, or an error."""
    if (folder / BUFFERS_FILE).is_file():
        load_exactly(model, persistent_buffers(model), load_file(str(folder / BUFFERS_FILE)), folder)


def load_exactly(model: torch.nn.Module, tensors: dict[str, torch.Tensor], saved: dict[str, torch.Tensor],
                 folder: Path) -> None:  # fmt: skip
    """Copy `saved` into the model's `tensors`; the names and shapes must match exactly."""
    missing, unexpected = sorted(tensors.keys() - saved.keys()), sorted(saved.keys() - tensors.keys())
    wrong = sorted(n for n in tensors.keys() & saved.keys() if tensors[n].shape != saved[n].shape)
    if missing or unexpected or wrong:
        raise ConfigError(
            f"{folder}: saved tensors do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"other shape {wrong[:3]}); was it written under another config?"
        )
    with torch.no_grad():
        for n, t in tensors.items():
            t.copy_(saved[n])
