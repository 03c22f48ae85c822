"""The projector between the vision tower and the language model: LLaVA v1's single linear map or
LLaVA-1.5's two-layer MLP, and the import of a projector trained by the original LLaVA code.

    python -c "from competition.projector import LinearProjector; print(LinearProjector.__doc__)"
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import LlavaConfig, LlavaForConditionalGeneration
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from competition.errors import ConfigError


class LinearProjector(nn.Module):
    """LLaVA v1's `linear` projector: one nn.Linear from vision features to the LM's embeddings."""

    def __init__(self, config: LlavaConfig) -> None:
        super().__init__()
        layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        v, t = config.vision_config.hidden_size, config.text_config.hidden_size
        self.linear_1 = nn.Linear(v * layers, t, bias=config.multimodal_projector_bias)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_1(image_features)


def new_projector(config: LlavaConfig) -> nn.Module:
    """The projector of a config: one linear map when mm_projector_type is 'linear', else transformers' MLP."""
    if getattr(config, "mm_projector_type", None) == "linear":
        return LinearProjector(config)
    return LlavaMultiModalProjector(config)


def restore_projector(model: LlavaForConditionalGeneration) -> LlavaForConditionalGeneration:
    """After from_pretrained: a linear-projector model gets its single nn.Linear back (linear_1 keeps its weights)."""
    proj = model.model.multi_modal_projector
    if getattr(model.config, "mm_projector_type", None) == "linear" and not isinstance(proj, LinearProjector):
        linear = LinearProjector(model.config)
        linear.linear_1 = proj.linear_1
        model.model.multi_modal_projector = linear
    return model


def import_llava_projector(model: LlavaForConditionalGeneration, path: Path, projector_type: str) -> None:
    """Load an original-LLaVA `mm_projector.bin` (keys model.mm_projector.*) into the projector.

    `linear` files hold weight/bias; `mlp2x_gelu` files hold 0.* and 2.* (nn.Sequential indices).
    Embedding rows saved beside it (model.embed_tokens.weight) are loaded into the LM.
    """
    if not path.is_file():
        raise ConfigError(f"{path}: projector file not found (model.projector)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    proj = {k.split("mm_projector.", 1)[1]: v for k, v in state.items() if "mm_projector." in k}
    if not proj:
        raise ConfigError(f"{path}: no 'model.mm_projector.*' keys (found: {', '.join(list(state)[:5])})")
    layers = {"weight": "linear_1.weight", "bias": "linear_1.bias"}
    if projector_type != "linear":
        layers = {f"{i}.{k}": f"linear_{n}.{k}" for i, n in (("0", 1), ("2", 2)) for k in ("weight", "bias")}
    target = model.model.multi_modal_projector
    expected = {k: tuple(target.state_dict()[v].shape) for k, v in layers.items()}
    found = {k: tuple(v.shape) for k, v in proj.items()}
    if found != expected:
        raise ConfigError(
            f"{path}: projector keys {found} do not fit model.projector_type={projector_type}, which expects {expected}"
        )
    dtype = target.linear_1.weight.dtype
    target.load_state_dict({layers[k]: v.to(dtype) for k, v in proj.items()})
    emb = next((v for k, v in state.items() if k.endswith("embed_tokens.weight")), None)
    if emb is not None:
        table = model.get_input_embeddings().weight
        rows = min(emb.shape[0], table.shape[0])
        with torch.no_grad():
            table[:rows] = emb[:rows].to(table.dtype)
