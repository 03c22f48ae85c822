"""Typed run configuration: YAML file + `--set a.b=c` overrides, unknown keys refused.

python -m competition folds -c configs/demo.yaml --set folds.k=3 --set workdir=/tmp/run
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator

from competition.errors import ConfigError
from competition.io import atomic_write_yaml
from competition.model_config import ModelConfig
from competition.overrides import apply_overrides, bad_value, check_keys, read_yaml
from competition.section import ExperimentName, Section

VoteMethod = Literal["majority", "weighted", "fuzzy", "soft"]  # the ensemble's vote methods (competition.vote)

FLIP_KEEP = (r"\b(?:word|words|letters?|text|written|writing|reads?|says?|signs?|spell\w*|numbers?|digits?|title|"
             r"brand|logo|label|name)\b")  # questions about text to read: a mirrored text is not the same text

METRICS: tuple[str, ...] = ("exact", "vqa", "anls", "relaxed", "choice", "map@k")  # competition.metrics scores them


def check_metric(name: str) -> str:
    """The metric's name if known ('map@k' with a whole k >= 1), else a ValueError listing the valid ones."""
    base, _, k = name.partition("@")
    if name in METRICS[:-1] or (base == "map" and k.isdigit() and int(k) >= 1):
        return name
    raise ValueError(f"unknown metric '{name}' (valid: {', '.join(METRICS)}, e.g. map@3)")


def top_k(metric: str) -> int:
    """How many ranked answers a submission carries: k for 'map@k', else 1."""
    return int(metric.partition("@")[2]) if metric.startswith("map@") else 1


class DataConfig(Section):
    """Where the competition files are and what their columns are called."""

    root: Path = Field(Path("data/demo"), description="competition folder")
    train_csv: str = Field("train.csv", description="training table, relative to root")
    test_csv: str = Field("test.csv", description="test table, relative to root")
    sample_submission_csv: str = Field("sample_submission.csv", description="sample submission, relative to root")
    train_images: str = Field("image/train", description="training image folder, relative to root")
    test_images: str = Field("image/test", description="test image folder, relative to root")
    id_col: str = Field("ID", description="question id column (train, test, sample submission)")
    image_col: str = Field("image_id", description="image id column: the file stem under the image folders")
    question_col: str = Field("question", description="question text column")
    answer_col: str = Field("answer", description="answer column (train, sample submission, submissions); in train "
                            "optional when answers_col is set (then its most frequent answer)")  # fmt: skip
    answers_col: str | None = Field(None, description="train column of every annotator's answer (a JSON list, or "
                                    "split at list_sep), scored by metrics that read several answers")  # fmt: skip
    choices_col: str | None = Field(None, description="column of each question's answer choices (train and test; a "
                                    "JSON list, or split at list_sep), for metric: choice")  # fmt: skip
    list_sep: str | None = Field(None, description="separator of answers_col and choices_col cells; none: JSON lists")
    type_col: str | None = Field(None, description="train (and optionally test) column of each question's type for the "
                                                   "per-type tables (VQA v2: question_type); none: the longest VQA v2 "
                                                   "question type its first words spell")  # fmt: skip
    submission_format: Literal["csv", "vqa_json"] = Field("csv", description="csv: the sample submission's table (MAP@k: "
                                                          "top k answers space-separated); vqa_json: also VQA results "
                                                          "[{question_id, answer}] as <submission>.vqa.json")  # fmt: skip
    image_extensions: list[str] = Field([".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"],
                                        description="extensions tried when resolving an image id")


class FoldsConfig(Section):
    """Grouped, answer-stratified K-fold split."""

    k: int = Field(5, ge=2, le=50, description="number of folds")
    seed: int = Field(42, description="split seed, apart from the run seed: runs of other seeds share the folds")
    max_strata: int = Field(64, ge=2, description="most frequent answers kept as their own stratum; rest share one")


class LoraSettings(Section):
    """PEFT LoRA on the language model (train.mode: lora); the projector trains fully."""

    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA branch")
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                      description="language-model linear layers that get LoRA adapters")  # fmt: skip


class TrainConfig(Section):
    """One fold's fine-tuning on HF Trainer."""

    mode: Literal["projector", "lora", "full"] = Field("full", description="what trains")
    prompt: str = Field("short_answer", description="prompt template the model is trained on")
    epochs: float = Field(1.0, gt=0, description="passes over the fold's training questions")
    max_steps: int = Field(-1, ge=-1, description="stop after this many optimizer steps (-1: epochs decide)")
    learning_rate: float = Field(2e-3, gt=0, description="language model (and default) learning rate")
    vision_lr: float | None = Field(None, description="vision tower learning rate (default: learning_rate)")
    projector_lr: float | None = Field(None, description="projector learning rate (default: learning_rate)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not on biases and norms)")
    max_grad_norm: float = Field(1.0, ge=0, description="gradients clipped to this norm each step (0: never clipped)")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="fraction of the optimizer steps spent warming up")
    scheduler: str = Field("cosine", description="transformers lr_scheduler_type")
    per_device_batch_size: int = Field(16, ge=1, description="training conversations per device per step")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps (ignored if effective_batch_size set)")
    effective_batch_size: int | None = Field(None, ge=1, description="batch x accumulation x processes; sets accumulation")
    max_length: int = Field(128, ge=8, description="text tokens of a training conversation (questions + answers, all "
                            "turns); image tokens on top")  # fmt: skip
    pack_questions: int = Field(1, ge=1, description="questions of one image per training conversation (multi-turn)")
    answers: Literal["most_frequent", "each"] = Field("most_frequent", description="with several answers a question "
                                                      "(data.answers_col), what a generative model trains on: the most "
                                                      "frequent, or each annotator's answer as its own example (the "
                                                      "classifier learns their soft scores either way)")  # fmt: skip
    flips: Literal["none", "horizontal", "both"] = Field("none", description="question-aware augmentation: each "
        "epoch trains on one view of each example drawn at random, the picture as it is or flipped (horizontal: "
        "mirrored; both: mirrored, upside down or both), left/right and top/bottom swapped in its question and answer")
    flip_keep: str = Field(FLIP_KEEP, description="regex of questions whose picture never flips (case-insensitive): "
                           "text to read is no longer the same text mirrored")  # fmt: skip
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="mixed precision of the forward/"
        "backward pass (trained weights stay float32); auto: bf16 on a CUDA card or CPU (AVX512-BF16, AMX) that has "
        "it, fp16 on older CUDA cards, else fp32. TF32 matmuls are on wherever the card has them")  # fmt: skip
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward: less memory, slower")
    group_by_length: bool = Field(True, description="batch examples of similar length (less padding)")
    cache_images: bool = Field(False, description="keep preprocessed images in memory (small data sets)")
    eval_steps: int | None = Field(None, ge=0, description="optimizer steps between in-training evaluations (greedy "
        "answers scored like the competition), each of which writes a checkpoint; None: every epoch; 0: never (no early "
        "stopping, no best checkpoint)")  # fmt: skip
    eval_split: Literal["inner", "val"] = Field("inner", description="what the in-training evaluation answers: inner, "
        "a share of the fold's training images kept out of training (OOF stays honest); val, the fold's validation "
        "questions (optimistic: they choose the step)")  # fmt: skip
    eval_fraction: float = Field(0.05, gt=0, lt=0.5, description="inner split: share of the fold's training images held out")
    eval_questions: int = Field(400, ge=1, description="questions answered per in-training evaluation (a fixed sample)")
    patience: int | None = Field(5, ge=1, description="evaluations without a gain over min_delta before training "
                                 "stops; None: never early")  # fmt: skip
    min_delta: float = Field(0.0, ge=0, description="held-out accuracy gain that resets the patience count")
    max_minutes: float | None = Field(None, gt=0, description="training minutes of one run at most; it stops cleanly "
                                      "and keeps the best checkpoint")  # fmt: skip
    save_steps: int = Field(500, ge=1, description="optimizer steps between checkpoints (resume points) when eval_steps=0")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept (the best one always); older ones are deleted")
    logging_steps: int = Field(10, ge=1, description="optimizer steps between train_log.jsonl lines")
    report_to: list[str] = Field([], description="e.g. [wandb] or [tensorboard]")
    deepspeed: str | None = Field(None, description="DeepSpeed JSON config (e.g. configs/deepspeed/zero2.json)")
    dataloader_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: the main process)")
    lora: LoraSettings = LoraSettings()

    @field_validator("flip_keep")
    @classmethod
    def _compiles(cls, v: str) -> str:
        """A regex that does not compile is refused at load, not when training starts."""
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return v

    @field_validator("max_steps")
    @classmethod
    def _steps_or_epochs(cls, steps: int) -> int:
        """0 would train nothing: HF Trainer reads it as -1 and trains every epoch instead."""
        if steps == 0:
            raise ValueError("0 steps trains nothing; -1 lets the epochs decide, else a positive step count")
        return steps

    @property
    def evaluates(self) -> bool:
        """Whether the run measures held-out accuracy while it trains (eval_steps=0 turns it off)."""
        return self.eval_steps != 0


class DecodingConfig(Section):
    """One decoding setting; every prompt is run with every decoding."""

    name: str = Field("greedy", pattern=r"^[A-Za-z0-9_.-]+$", description="tag of the prediction rows")
    num_beams: int = Field(1, ge=1, description="beam search width (1: greedy or sampling)")
    do_sample: bool = Field(False, description="sample each row's answer (seeded by the row and `seed`)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="sampling nucleus: the smallest token set of this probability")
    max_new_tokens: int | None = Field(None, ge=1, description="tokens at most; default: the longest training answer's + EOS")
    length_penalty: float = Field(1.0, description="beam search: exponent of the length normalisation")
    constrained: bool = Field(False, description="generate only answers of the fold's training vocabulary")
    rank: int = Field(0, ge=0, description="> 0: score the N most common training answers by likelihood, take the best")
    seed: int = Field(0, description="sampling seed")
    view: Literal["", "h", "v", "hv"] = Field("", description="test-time augmentation: the picture mirrored (h), upside "
                                              "down (v) or both, sides swapped in question and answer (not train.flip_keep's)")

    @property
    def search(self) -> Literal["rank", "beam", "sample", "greedy"]:
        """How an answer is found: ranking the training answers, beam search, sampling or greedy decoding
        (`constrained` limits the last three to the vocabulary)."""
        return "rank" if self.rank else "beam" if self.num_beams > 1 else "sample" if self.do_sample else "greedy"

    @model_validator(mode="after")
    def _one_search(self) -> DecodingConfig:
        """Sampling draws one path per row (no beam sampling); ranking generates nothing, so no search flag applies."""
        if self.do_sample and self.num_beams > 1:
            raise ValueError(f"decoding '{self.name}': do_sample needs num_beams=1")
        if self.rank and (self.num_beams > 1 or self.do_sample or self.constrained):
            raise ValueError(f"decoding '{self.name}': rank scores whole answers; drop num_beams, do_sample, constrained")
        return self


class NormalizeConfig(Section):
    """How raw answers become comparable answers (applied to predictions and to ground truth)."""

    rules: list[str] = Field(
        ["lowercase", "punctuation", "whitespace", "articles", "number_words", "contractions"],
        description="VQA-eval rules, applied in their fixed order",
    )
    protect: bool = Field(True, description="never merge two distinct training answers (e.g. 'none' and '0')")
    snap_cutoff: float | None = Field(None, ge=0, le=100, description="snap every prediction to the training answers "
                                      "at this rapidfuzz similarity, before scoring")  # fmt: skip


class PredictConfig(Section):
    """The inference engine: prompts x decodings, batching, prefix reuse."""

    prompts: list[str] | None = Field(None, min_length=1, description="prompt templates to run; default: [train.prompt], "
                                      "the one the model learned")  # fmt: skip
    decodings: list[DecodingConfig] = Field([DecodingConfig()], min_length=1, description="decodings, each with every prompt")
    batch_size: int = Field(32, ge=1, description="questions per batch (halved and retried on out-of-memory)")
    prefix_cache: bool | Literal["auto"] = Field("auto", description="reuse each image's prefix KV cache; auto: if long")
    max_length: int = Field(128, ge=8, description="text tokens of one inference prompt (a single question, no answer); "
                            "image tokens on top")  # fmt: skip
    alternatives: int = Field(4, ge=0, description="next most likely answers kept with their log-probabilities where the "
                              "model scores every answer (a classifier, rank decoding): the soft vote adds them up")


class ExternalMember(Section):
    """A prediction set from outside (a submission CSV or LLaVA result.jsonl) that joins the test vote."""

    path: Path = Field(description="a submission CSV or an original-LLaVA result.jsonl")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="member name in the vote and the submission record")
    weight: float = Field(1.0, ge=0, description="vote weight (not fitted: external members have no OOF)")


class EnsembleConfig(Section):
    """Voting: candidate methods scored on OOF; the best votes the test predictions."""

    methods: list[VoteMethod] = Field(list(get_args(VoteMethod)), description="vote methods scored on OOF; the best "
                                      "votes the test set (soft: each answer's probabilities summed, alternatives too)")
    thresholds: list[float] = Field([90.0, 80.0], description="fuzzy similarity thresholds (rapidfuzz ratio) tried")
    per_type: bool = Field(True, description="also try weights fitted per question type (scored by nested CV)")
    stack: bool = Field(True, description="also try logistic stackers over the members' answers and log-probabilities: "
                        "one for all questions, one with coefficients per question type")
    experiments: list[ExperimentName] = Field([], description="other experiments (same folds.csv) whose members join the blend")
    drop_subtracting: bool = Field(True, description="leave out, worst first, an experiment whose members take away from "
                                   "the blend's nested CV (the blend chosen and nested-scored again without them)")
    external: list[ExternalMember] = Field([], description="prediction sets from outside that join the test vote")
    snap_cutoff: float | None = Field(None, ge=0, le=100, description="snap only the submission's voted answers to "
                                      "the training answers (members stay as predicted)")


class TuneConfig(Section):
    """Optuna studies, stored in an RDB (SQLite file by default)."""

    storage: str | None = Field(None, description="RDB URL; default sqlite:///<exp>/optuna.db")
    grace_seconds: int = Field(60, ge=6, description="a running trial (or auto's unit) silent this long belongs to a dead "
                               "worker: it is failed (auto's goes back to the queue); alive, it beats every sixth of it")
    trials: int = Field(20, ge=1, description="trials per `tune` run (added to the stored study)")
    fold: int = Field(0, ge=0, description="fold whose validation questions the decoding study scores")
    max_questions: int = Field(400, ge=10, description="validation questions per decoding trial")
    prune_chunks: int = Field(4, ge=1, description="partial evaluations per trial reported to the pruner")
    min_gain: float = Field(0.01, ge=0, description="tuned training or decoding must beat the config's own by this "
                            "much, else it stays")  # fmt: skip


class Recipe(Section):
    """One recipe of `auto`'s portfolio: a config file (or this config) with overrides."""

    name: ExperimentName = Field(description="recipe name; it trains as experiment <experiment>-<name>")
    config: Path | None = Field(None, description="the recipe's config file; None: this config")
    set: list[str] = Field([], description="overrides on it, each key=value as with --set")
    ranges: dict[str, tuple[float, float]] = Field({}, description="float keys sampled for its variants, each "
                                                   "key: [low, high] on a log scale (e.g. train.learning_rate)")  # fmt: skip
    samples: int = Field(0, ge=0, description="variants of the recipe tried after the whole portfolio, each with "
                         "its ranges' keys at a scrambled Sobol point (deterministic by seed), as <name>_v<i>")  # fmt: skip

    @model_validator(mode="after")
    def _ranges_are_positive(self) -> Recipe:
        """Refuse a range that is not 0 < low <= high (log-scale sampling), or samples without ranges."""
        for name, (low, high) in self.ranges.items():
            if not 0 < low <= high:
                raise ValueError(f"ranges.{name}: need 0 < low <= high on a log scale, got [{low}, {high}]")
        if self.samples and not self.ranges:
            raise ValueError(f"recipe '{self.name}': samples={self.samples} needs ranges to sample")
        return self


class AutoConfig(Section):
    """`auto`: the portfolio tried on fold tune.fold (the weak stopped early), the best trained on every fold and
    blended, within --minutes."""

    portfolio: list[Recipe] = Field([], description="recipes in the order they are tried; empty: this config alone")
    search_share: float = Field(0.5, gt=0, le=1, description="share of the minutes the trials run in (one running then is cut)")
    top: int = Field(4, ge=1, description="recipes trained on every fold and blended at most (fewer when the minutes "
                     "run short); the search never stops a recipe while fewer than this many beat it")  # fmt: skip
    rungs: list[float] = Field([0.25, 0.5], description="shares of its training at which a recipe's held-out accuracy "
                               "is compared with the others' at the same share (successive halving)")  # fmt: skip


class Config(Section):
    """The whole run: one YAML file."""

    experiment: ExperimentName = Field("demo", description="experiment name (folder under experiments/)")
    workdir: Path = Field(Path("."), description="experiments/ and submissions/ are created under it")

    @field_validator("workdir")
    @classmethod
    def _writable_folder(cls, path: Path) -> Path:
        """An existing file, or a folder this process cannot write, cannot hold experiments."""
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise ValueError(f"{existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{existing} is not writable")
        return path

    seed: int = Field(42, description="run seed: model init, data order, sampling (not the folds)")
    metric: str = Field("exact", description="how the competition scores an answer: exact (after normalization), "
                        "vqa (10 annotators' answers), anls, relaxed (numbers within 5 %), choice, map@k (k ranked "
                        "answers); used by cv, probes, studies, votes and the leaderboard")  # fmt: skip

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, name: str) -> str:
        """One of the metrics competition.metrics implements."""
        return check_metric(name)

    data: DataConfig = DataConfig()
    folds: FoldsConfig = FoldsConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    tune: TuneConfig = TuneConfig()
    auto: AutoConfig = AutoConfig()

    @property
    def exp_dir(self) -> Path:
        """experiments/<experiment> under the workdir."""
        return self.workdir / "experiments" / self.experiment

    @property
    def submissions_dir(self) -> Path:
        """submissions/ under the workdir."""
        return self.workdir / "submissions"

    @model_validator(mode="after")
    def _predict_with_the_training_prompt(self) -> Config:
        """predict.prompts defaults to the prompt the model was trained on."""
        if self.predict.prompts is None:
            self.predict.prompts = [self.train.prompt]
        return self

    def fold_dir(self, fold: int) -> Path:
        """experiments/<experiment>/fold<k>."""
        return self.exp_dir / f"fold{fold}"

    def fold_trained(self, fold: int) -> bool:
        """Whether the fold's model is complete: train_metrics.json is written after model/."""
        return (self.fold_dir(fold) / "model").is_dir() and (self.fold_dir(fold) / "train_metrics.json").is_file()

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe dict of the resolved config."""
        return json.loads(self.model_dump_json())

    def hash(self) -> str:
        """Short, stable hash of the resolved config."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def save(self) -> Path:
        """Write the resolved config to experiments/<exp>/config.yaml."""
        path = self.exp_dir / "config.yaml"
        atomic_write_yaml(self.to_dict(), path)
        return path


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config, apply overrides, validate; ConfigError names the offending key."""
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        raw = read_yaml(path)
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    check_keys(raw, Config, "", source)
    if overrides:
        raw = apply_overrides(raw, overrides, Config)
        check_keys(raw, Config, "", "--set")
        source = f"{source} with --set"
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise bad_value(e, source) from None
