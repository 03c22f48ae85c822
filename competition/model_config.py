"""The model sections of the config: which family, which backbones, how images are shaped (competition.config
holds them under `model`).

python -m competition train -c configs/demo_classifier.yaml --fold 0 --set model.classifier.fusion_layers=0
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from competition.section import Section


class TinyModelConfig(Section):
    """A random-init LLaVA small enough to train on CPU (used when model.source is 'tiny')."""

    vision: Literal["clip", "conv_stem"] = Field("clip", description="clip: a ViT; conv_stem: vision_layers strided 3x3 "
        "convs, widths doubling from 32 to vision_hidden, a token per cell of the last map: (image_size / 2^layers)^2")  # fmt: skip
    image_size: int = Field(64, ge=8, description="square input resolution of the vision tower")
    patch_size: int = Field(8, ge=1, description="clip: patch size; image tokens = (image_size / patch_size)^2")
    vision_hidden: int = Field(128, description="vision tower width")
    vision_intermediate: int = Field(256, description="clip: vision tower MLP width")
    vision_layers: int = Field(2, description="vision tower depth")
    vision_heads: int = Field(4, description="clip: vision tower attention heads")
    text_hidden: int = Field(128, description="language model width")
    text_intermediate: int = Field(256, description="language model MLP width")
    text_layers: int = Field(2, description="language model depth")
    text_heads: int = Field(4, description="language model attention heads")


class ClassifierConfig(Section):
    """model.family=classifier: a vision backbone and a question encoder from transformers (pretrained by name, else
    random-init from their configs), their tokens fused in one transformer, a head over the top training answers."""

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ClassifierConfig:
        if self.hidden % self.fusion_heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of fusion_heads ({self.fusion_heads})")
        return self

    @model_validator(mode="after")
    def _glimpses_under_the_notebook_head(self) -> ClassifierConfig:
        if self.glimpses and self.fusion_layers:
            raise ValueError(f"glimpses ({self.glimpses}) reads the image only under fusion_layers 0 (not {self.fusion_layers})")
        return self

    vision: str | None = Field(None, description="pretrained vision backbone (AutoModel): hub id or folder; None: vision_config")
    text: str | None = Field(None, description="pretrained question encoder (AutoModel + AutoTokenizer); None: text_config")
    vision_config: dict[str, Any] = Field(
        {"model_type": "conv_stem", "hidden_sizes": [32, 64, 128, 128], "strides": [2, 2, 2, 2]},
        description="random-init vision backbone: any transformers vision config (model_type + its fields), or "
        "conv_stem (3x3 conv, its max pooling with downsample: max, BatchNorm and ReLU per hidden size, with its stride)",
    )  # fmt: skip
    text_config: dict[str, Any] = Field(
        {"model_type": "bert", "hidden_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 256},
        description="random-init question encoder: any transformers text config, over a tokenizer trained on the data")  # fmt: skip
    hidden: int = Field(128, ge=8, description="width of the fusion transformer and the head")
    fusion_layers: int = Field(2, ge=0, description="layers of the fusion transformer over image and question tokens; 0: their means through an MLP")
    glimpses: int = Field(0, ge=0, description="fusion_layers=0: the image seen as this many question-guided attention "
                          "averages over its cells (a stacked-attention VQA baseline), each beside its product with the "
                          "question, instead of their plain mean; 0: the mean")
    glimpse_fit: bool = Field(True, description="glimpses: each also hands the head how well its best cell fits the "
                              "question (its attention score's maximum over the cells), whether the asked thing is there")
    fusion_heads: int = Field(4, ge=1, description="attention heads of the fusion transformer (hidden must divide by it)")
    image_size: Annotated[int, Field(ge=8)] | Literal["data"] = Field(96, description="random-init backbone: square "
        "input side in pixels; data: the training pictures' median longer side, rounded up to the stem's reduction, at "
        "most images.DATA_SIDE_CAP (the run's plan says which)")  # fmt: skip
    position_std: float = Field(0.02, ge=0, description="initial spread of the image tokens' learned positions: a stem "
                                "without padding (patch stem) learns where things are only from these (0.3 there)")
    summary_token: bool = Field(False, description="the fusion's first token (the head reads it) starts as the mean "
                                "image token plus the question's mean word, as the notebook head's inputs, not as zeros")
    pooled_token: bool = Field(False, description="one more image token: the last map's maximum over its cells (whole objects)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout before the answer layer")
    loss: Literal["ce", "bce"] = Field("ce", description="ce: cross-entropy over the answers; bce: VQA's sigmoid per answer")
    answer_weights: Literal["none", "balanced"] = Field("none", description="balanced: each training question weighs "
        "as its answer's balanced class weight within its question type (n / (answers x count), sklearn's), so a "
        "75/25 yes/no type counts its two answers alike and its prior is no longer a minimum of the loss")  # fmt: skip
    max_answers: int = Field(3129, ge=2, description="answers the head scores: the fold's most common (VQA's 3,129)")


FAMILY_NAMES = {"llava", "classifier", "vlm"}  # the built-in families; competition.families.register adds others


class ModelConfig(Section):
    """Which model to build or load, and how images are shaped for it."""

    family: str = Field("llava", description="llava: a generative LLaVA (source picks which); classifier: an "
        "answer-vocabulary classifier; vlm: any image-text-to-text model of transformers from name_or_path (Qwen2.5-VL, "
        "SmolVLM, PaliGemma, ...); or any family registered with competition.families.register")  # fmt: skip
    source: Literal["tiny", "pretrained", "from_parts"] = Field("tiny", description="tiny: random-init offline model; "
                                                               "pretrained: llava-hf id/path; from_parts: vision + LM")  # fmt: skip
    name_or_path: str | None = Field(None, description="pretrained llava, vlm: hub id or folder of the checkpoint")
    processor_kwargs: dict[str, Any] = Field({}, description="vlm: AutoProcessor.from_pretrained keywords (max_pixels)")
    vision_tower: str | None = Field(None, description="from_parts: CLIP vision model id or folder")
    language_model: str | None = Field(None, description="from_parts: causal LM id or folder (e.g. Vicuna-7B)")
    projector: str | None = Field(None, description="from_parts: original-LLaVA mm_projector.bin to import")
    projector_type: Literal["mlp2x_gelu", "linear"] = Field("mlp2x_gelu", description="from_parts projector shape")
    vision_feature_layer: int = Field(-2, description="vision hidden layer fed to the projector")
    vision_feature_select_strategy: Literal["default", "full"] = Field("default", description="default drops CLS")
    image_aspect_ratio: Literal["pad", "resize", "crop"] = Field("pad", description="pad: square with the mean "
        "colour, then resize (LLaVA-1.5); resize: stretch; crop: centre crop")  # fmt: skip
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="storage dtype of the weights "
        "that stay frozen (trainable ones are float32); auto: bfloat16 on a CUDA card that has it, float16 on older CUDA "
        "cards, float32 on CPU")  # fmt: skip
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto: flash_attention_2 when flash-attn is installed, else sdpa")  # fmt: skip
    tiny: TinyModelConfig = TinyModelConfig()
    classifier: ClassifierConfig = ClassifierConfig()

    @field_validator("family")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in FAMILY_NAMES:
            raise ValueError(f"not a registered family; one of {', '.join(sorted(FAMILY_NAMES))}")
        return name
