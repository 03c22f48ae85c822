"""Random-init vision backbones of our own, registered with transformers' Auto classes so that they build, save
and load like any other (`AutoModel.from_config`, `from_pretrained`): the classifier's and the tiny LLaVA's
`conv_stem`.

    python -c "from competition.backbones import ConvStemConfig; print(ConvStemConfig())"
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput

DOWNSAMPLING = ("stride", "max")  # a strided conv, or a conv at full resolution then max pooling (VGG's way)


class ConvStemConfig(PretrainedConfig):
    """A plain convolutional stack: one conv + BatchNorm + ReLU per entry of `hidden_sizes`, with its stride; 3x3
    convs by default (padded: cells overlap and see the image's edge), 2x2 for a patch stem (each cell exactly its
    own patch, as a ViT's). `coord_channels` appends each pixel's x and y (-1 to 1) to its colours (CoordConv), so
    every cell sees where it lies. `downsample: max` convolves at full resolution and max-pools by the stride: each
    cell keeps its strongest response, whatever the object's exact place, size or rotation; BatchNorm and ReLU then
    work on the pooled map (a quarter of the cells), the same function class at about 0.8x the stem's time."""

    model_type = "conv_stem"

    def __init__(self, num_channels: int = 3, hidden_sizes: list[int] | None = None, strides: list[int] | None = None,
                 kernel_size: int = 3, coord_channels: bool = False, downsample: str = "stride", **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.num_channels, self.kernel_size, self.coord_channels = num_channels, kernel_size, coord_channels
        if downsample not in DOWNSAMPLING:
            raise ValueError(f"downsample={downsample!r}: expected one of {', '.join(DOWNSAMPLING)}")
        self.downsample = downsample
        self.hidden_sizes = list(hidden_sizes or [32, 64, 128, 128])
        self.strides = list(strides or [2, 2, 2, 2])  # 16x smaller: a 3 x 3 map of a 48 px image
        if len(self.strides) != len(self.hidden_sizes):
            raise ValueError(f"{len(self.hidden_sizes)} hidden_sizes but {len(self.strides)} strides")

    @property
    def hidden_size(self) -> int:
        """Channels of the last map: the width of each image token (what LLaVA's projector reads)."""
        return self.hidden_sizes[-1]

    @property
    def reduction(self) -> int:
        """How many pixels of the input one cell of the last map spans (the product of the strides)."""
        return math.prod(self.strides)


class ConvStemModel(PreTrainedModel):
    """A random-init backbone that learns small images fast from scratch: no stem pooling, no shortcuts, and with
    every conv strided each map cell sees little beyond its own patch (a 31 px receptive field for 16 px cells),
    so the model can tell where an object is. Measured on the demo: ResNet, RegNet and MobileNet stems, and this
    stem with stride-1 layers between (a 59 px field), placed objects worse and learned slower.

    `last_hidden_state` is the last map (B, C, H, W), as ResNet gives it; `hidden_states` are every block's map as
    tokens (B, H*W, C), as ViTs give them, so LLaVA reads them like a CLIP tower's."""

    config_class = ConvStemConfig
    main_input_name = "pixel_values"
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = True  # no attention: any choice applies

    def __init__(self, config: ConvStemConfig) -> None:
        super().__init__(config)
        layers: list[nn.Module] = []
        channels = config.num_channels + 2 * config.coord_channels
        for size, stride in zip(config.hidden_sizes, config.strides, strict=True):
            k, pooled = config.kernel_size, config.downsample == "max"
            conv = nn.Conv2d(channels, size, k, 1 if pooled else stride, (k - 1) // 2, bias=False)
            pool = nn.MaxPool2d(stride) if pooled and stride > 1 else nn.Identity()
            layers.append(nn.Sequential(conv, pool, nn.BatchNorm2d(size), nn.ReLU()))
            channels = size
        self.layers = nn.Sequential(*layers)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's own initialisation of each layer, through transformers' `initialization`, which leaves alone
        what a checkpoint loaded (`reset_parameters` would also wipe BatchNorm's loaded running statistics)."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)

    def train(self, mode: bool = True) -> ConvStemModel:
        """A frozen stem (LoRA and projector modes) keeps its BatchNorm statistics too: they are weights."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d) and not module.weight.requires_grad:
                module.eval()
        return self

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs: Any) -> BaseModelOutput:
        x, maps = pixel_values.to(self.layers[0][0].weight.dtype), []  # as CLIP's patch embedding: bf16 weights, bf16 input
        if self.config.coord_channels:
            x = torch.cat([x, coordinates(x)], 1)
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's and cuDNN's faster layout for convolutions
        for block in self.layers:
            x = block(x)
            maps.append(x)
        tokens = tuple(m.flatten(2).transpose(1, 2) for m in maps) if output_hidden_states else None
        return BaseModelOutput(last_hidden_state=x, hidden_states=tokens)


def coordinates(images: torch.Tensor) -> torch.Tensor:
    """Each pixel's x and y, from -1 at the left and top edges to 1 at the right and bottom: (B, 2, H, W)."""
    b, _, h, w = images.shape
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.stack([x, y]).to(images).expand(b, 2, h, w)


AutoConfig.register(ConvStemConfig.model_type, ConvStemConfig, exist_ok=True)
AutoModel.register(ConvStemConfig, ConvStemModel, exist_ok=True)
