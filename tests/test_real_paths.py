"""The real paths of the other families: hub-format image processors and backbones, real-size dry runs that
stay offline and small, and one-line refusals of what cannot work here (nothing written)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from competition.cli import app
from competition.config import DecodingConfig, load_config
from competition.errors import ConfigError
from competition.model_config import ClassifierConfig

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]
# preprocessor_config.json as the hub holds them (openai/clip-vit-large-patch14-336, llava-hf/llava-1.5-7b-hf,
# google/siglip-so400m-patch14-384, google/vit-base-patch16-224 in both its old and new forms,
# microsoft/beit-base-patch16-224-pt22k-ft22k, facebook/convnext-base-224), and the (height, width) each yields
HUB_PROCESSORS: dict[str, tuple[dict, tuple[int, int]]] = {
    "clip": ({"crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
              "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
              "resample": 3, "size": 336}, (336, 336)),
    "llava-hf": ({"crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_convert_rgb": True,
                  "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": CLIP_MEAN,
                  "image_processor_type": "CLIPImageProcessor", "image_std": CLIP_STD, "processor_class": "LlavaProcessor",
                  "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336}}, (336, 336)),
    "siglip": ({"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": HALF,
                "image_processor_type": "SiglipImageProcessor", "image_std": HALF, "processor_class": "SiglipProcessor",
                "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"height": 384, "width": 384}}, (384, 384)),
    "vit": ({"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": HALF,
             "image_processor_type": "ViTImageProcessor", "image_std": HALF, "resample": 2,
             "rescale_factor": 0.00392156862745098, "size": {"height": 224, "width": 224}}, (224, 224)),
    "vit-old": ({"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
                 "image_mean": HALF, "image_std": HALF, "resample": 2, "size": 224}, (224, 224)),
    "beit": ({"crop_size": 224, "do_center_crop": False, "do_normalize": True, "do_resize": True,
              "feature_extractor_type": "BeitFeatureExtractor", "image_mean": HALF, "image_std": HALF, "resample": 2,
              "size": 224}, (224, 224)),
    "convnext": ({"crop_pct": 0.875, "do_normalize": True, "do_resize": True,
                  "feature_extractor_type": "ConvNextFeatureExtractor", "image_mean": [0.485, 0.456, 0.406],
                  "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 224}, (224, 224)),
}  # fmt: skip
ODD_SHAPES = [(37, 23), (23, 41), (50, 50), (401, 99)]


def write_json(folder: Path, name: str, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data, indent=2))
    return folder


@pytest.mark.parametrize("aspect", ["pad", "resize", "crop"])
@pytest.mark.parametrize("name", list(HUB_PROCESSORS))
def test_the_image_transform_reads_every_hub_image_processor(name: str, aspect: str, tmp_path: Path) -> None:
    from transformers import AutoImageProcessor

    from competition.images import ImageTransform

    fields, (h, w) = HUB_PROCESSORS[name]
    processor = AutoImageProcessor.from_pretrained(write_json(tmp_path, "preprocessor_config.json", fields))
    transform = ImageTransform(SimpleNamespace(image_processor=processor), aspect)
    images = [Image.new("RGB", size, (200, 30, 90)) for size in ODD_SHAPES]
    px = transform(images)
    assert tuple(px.shape) == (len(images), 3, h, w)
    assert torch.isfinite(px).all()


def bert_folder(folder: Path, texts: list[str]) -> Path:
    """google-bert/bert-base-uncased as the hub lays it out (config, weights, vocab.txt, tokenizer_config.json), tiny."""
    from transformers import BertConfig, BertModel

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2)).save_pretrained(folder)  # fmt: skip
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return write_json(folder, "tokenizer_config.json", {"do_lower_case": True, "model_max_length": 512})


def siglip_folder(folder: Path) -> Path:
    """google/siglip-so400m-patch14-384 as the hub lays it out (a SiglipModel, its image processor), tiny."""
    from transformers import SiglipConfig, SiglipModel

    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    SiglipModel(SiglipConfig(vision_config={**small, "image_size": 32, "patch_size": 8},
                             text_config={**small, "vocab_size": 99})).save_pretrained(folder)  # fmt: skip
    fields = {**HUB_PROCESSORS["siglip"][0], "size": {"height": 32, "width": 32}}
    return write_json(folder, "preprocessor_config.json", fields)


def siglip_sets(demo_root: Path, tmp_path: Path) -> list[str]:
    from competition.data import load_competition
    from competition.families import tokenizer_texts

    comp = load_competition(load_config(None, [f"data.root={demo_root}"]).data)
    vision, text = siglip_folder(tmp_path / "siglip"), bert_folder(tmp_path / "bert", tokenizer_texts(comp))
    return [f"data.root={demo_root}", f"workdir={tmp_path / 'work'}", "folds.k=3", f"model.classifier.vision={vision}",
            f"model.classifier.text={text}", "model.classifier.hidden=32", "model.classifier.fusion_heads=2",
            "model.classifier.fusion_layers=1", "train.max_steps=3", "train.per_device_batch_size=4",
            "train.eval_steps=0", "train.save_steps=1000", "predict.batch_size=16"]  # fmt: skip


@pytest.mark.train
def test_classifier_siglip_trains_predicts_and_reloads_from_hub_format_folders(demo_root: Path, tmp_path: Path) -> None:
    from competition.families import family_for, fold_engine
    from competition.pipeline import stage_inputs
    from competition.plan import dry_run_plan
    from competition.predict import predict_fold
    from competition.predictions import read_split
    from competition.train import train_fold

    cfg = load_config(ROOT / "configs/classifier_siglip.yaml", siglip_sets(demo_root, tmp_path))
    plan = dry_run_plan(cfg, 0)
    assert not any(line.startswith("weights:") for line in plan)  # both on disk: planned from their folders
    comp, folds = stage_inputs(cfg)
    metrics, model = train_fold(cfg, comp, folds, 0, log=lambda s: None)
    assert metrics["steps"] == 3
    predict_fold(cfg, comp, folds, 0, ("oof",))
    saved = read_split(cfg, "oof").set_index("id")["raw"]
    loaded, processor = family_for(cfg).load(cfg.fold_dir(0) / "model")
    assert type(loaded.vision_tower).__name__ == "SiglipVisionModel"
    engine = fold_engine(cfg, comp, folds, 0, "train", loaded=(model.eval(), processor))
    rows = folds[folds["fold"] == 0].merge(comp.train, on=["id", "image_id"])
    answers = [a for b in engine.answer("short_answer", DecodingConfig(), rows["question"].tolist(),
                                        rows["image_id"].tolist()) for a in b]  # fmt: skip
    assert [a.text for a in answers] == saved.loc[rows["id"]].tolist()
    ids = processor.tokenizer(rows["question"].head(4).tolist(), padding=True, return_tensors="pt")
    px = engine.images(rows["image_id"].head(4).tolist())
    with torch.no_grad():
        same = [m(pixel_values=px, input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits
                for m in (model, loaded)]  # fmt: skip
    assert torch.allclose(*same, atol=1e-5)


def child_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI subprocess: online mode (HF_HUB_OFFLINE unset), an empty HF cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}


def peak_rss_mb(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float, int]:
    """Like run_cli, waiting on the child with wait4 for its own peak memory."""
    start = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "competition", *args], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out, err = p.stdout.read(), p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    res = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return res, time.perf_counter() - start, usage.ru_maxrss // 1024


@pytest.mark.e2e(minutes=0.15)
def test_the_llava_7b_shapes_dry_run_plans_on_the_meta_device_in_seconds(tmp_path: Path) -> None:
    args = ["train", "-c", "configs/llava15_7b_shapes.yaml", "--fold", "0", "--dry-run", "--set", f"workdir={tmp_path / 'w'}"]
    res, seconds, mb = peak_rss_mb(args, child_env(tmp_path))
    assert res.returncode == 0, res.stderr
    total = int(re.search(r"trainable parameters [\d,]+ of ([\d,]+)", res.stdout).group(1).replace(",", ""))
    assert 6.5e9 < total < 7.5e9, res.stdout
    assert seconds < 60 and mb < 3000, (seconds, mb)  # 7 B float32 weights would be 28 GB
    assert not (tmp_path / "w").exists()


@pytest.mark.e2e(minutes=0.15)
def test_classifier_siglip_dry_run_without_the_weights_says_so_quickly_and_offline(tmp_path: Path) -> None:
    args = ["train", "-c", "configs/classifier_siglip.yaml", "--fold", "0", "--dry-run", "--set", f"workdir={tmp_path / 'w'}"]
    res, seconds, _ = peak_rss_mb(args, child_env(tmp_path))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any("google/siglip-so400m-patch14-384" in ln and "trainable parameters" not in ln for ln in lines)
    notes = [ln for ln in lines if ln.startswith("weights:")]
    assert len(notes) == 1 and "not on disk" in notes[0] and "google-bert/bert-base-uncased" in notes[0], res.stdout
    assert any(re.search(r"trainable parameters [\d,]+ of [\d,]+", ln) for ln in lines)
    assert seconds < 20, seconds  # the hub's retries took 30 s and more
    assert not (tmp_path / "w").exists()


def test_an_unknown_backbone_not_on_disk_is_one_line_in_the_dry_run(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "-c", "configs/classifier_siglip.yaml", "--dry-run",
                              "--set", f"model.classifier.vision={tmp_path / 'nowhere'}"])  # fmt: skip
    assert_one_line(res, [f"model.classifier.vision={tmp_path / 'nowhere'}: not on disk (no such folder", "planned offline"])


needs_no_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None,
                                          reason="the refusal is for a machine without torchvision")  # fmt: skip
TORCHVISION = ["Qwen2VLProcessor needs torchvision", "pip install torchvision", "pip install -e '.[gpu]'"]


@needs_no_torchvision
def test_qwen2_vl_without_torchvision_is_one_line_naming_it(tmp_path: Path) -> None:
    from transformers import Qwen2VLConfig

    from competition.model_config import ModelConfig
    from competition.vlm import load_vlm

    Qwen2VLConfig(text_config={"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                               "num_key_value_heads": 2, "vocab_size": 99},
                  vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2}).save_pretrained(tmp_path)  # fmt: skip
    with pytest.raises(ConfigError) as e:
        load_vlm(ModelConfig(family="vlm", name_or_path=str(tmp_path)))
    assert "\n" not in str(e.value) and str(e.value).startswith(f"model.name_or_path={tmp_path}: ")
    assert all(n in str(e.value) for n in TORCHVISION), str(e.value)
    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert any(d.startswith("torchvision") for d in gpu)


@needs_no_torchvision
def test_the_qwen2_vl_dry_run_plans_with_a_torchvision_line_and_train_refuses_before_writing(tmp_path: Path) -> None:
    from competition.plan import check_model, dry_run_plan

    cfg = load_config(ROOT / "configs/qwen2vl_2b_lora.yaml", [f"workdir={tmp_path / 'w'}"])
    plan = dry_run_plan(cfg, 0)
    lines = [ln for ln in plan if "torchvision" in ln]
    assert len(lines) == 1 and all(n in lines[0] for n in TORCHVISION) and lines[0].startswith("processor: ")
    assert any("trainable parameters" in ln for ln in plan)
    with pytest.raises(ConfigError, match=r"^model\.name_or_path=Qwen/Qwen2-VL-2B-Instruct: Qwen2VLProcessor needs"):
        check_model(cfg)
    assert not (tmp_path / "w").exists()


def assert_one_line(res, needles: list[str]) -> str:
    """A CLI refusal: exit status 2 and one line on stderr holding every needle."""
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
BAD_BACKBONES = {  # the --set, and what its one line holds
    "negative size": ("model.classifier.vision_config={model_type: conv_stem, hidden_sizes: [-8, 16], strides: [2, 2]}",
                      ["model.classifier.vision_config.hidden_sizes=[-8, 16]", "negative"]),
    "lists of different lengths": ("model.classifier.vision_config={model_type: conv_stem, hidden_sizes: [8, 16], strides: [2]}",
                                   ["model.classifier.vision_config:", "2 hidden_sizes but 1 strides"]),
    "a text model as the vision model": (f"model.classifier.vision_config={json.dumps({'model_type': 'bert', **SMALL})}",
                                         ["model.classifier.vision_config:", "bert is not a vision model"]),
    "a vision model as the text model": ("model.classifier.text_config={model_type: conv_stem}",
                                         ["model.classifier.text_config:", "conv_stem is not a text model"]),
    "a ViT patch larger than the image": (
        f"model.classifier.vision_config={json.dumps({'model_type': 'vit', **SMALL, 'image_size': 48, 'patch_size': 64})}",
        ["model.classifier.vision_config:", "cannot read 48 x 48 images", "Kernel size"]),
    "more image tokens than positions": ("model.classifier.vision_config={model_type: conv_stem, hidden_sizes: [8], strides: [1]}",
                                         ["model.classifier.vision_config:", "2,304 image tokens", "1,024"]),
    "an unknown model_type": ("model.classifier.vision_config={model_type: vitt, hidden_size: 32}",
                              ["model.classifier.vision_config.model_type='vitt'", "did you mean", "vit"]),
    "LoRA": ("train.mode=lora", ["train.mode=lora", "model.family=classifier"]),
}  # fmt: skip


def classifier_args(demo_root: Path, work: Path, bad: str, *extra: str) -> list[str]:
    sets = [f"data.root={demo_root}", f"workdir={work}", "folds.k=3", bad]
    return ["train", "-c", "configs/demo_classifier.yaml", *extra, *[x for s in sets for x in ("--set", s)]]


@pytest.mark.parametrize("case", list(BAD_BACKBONES))
def test_a_classifier_that_cannot_work_is_refused_in_one_line_when_planned(case: str, demo_root: Path, tmp_path: Path) -> None:
    from competition.plan import check_model

    bad, needles = BAD_BACKBONES[case]
    work = tmp_path / "work"
    line = assert_one_line(runner.invoke(app, classifier_args(demo_root, work, bad, "--dry-run")), needles)
    assert len(line) < 400, line
    cfg = load_config(ROOT / "configs/demo_classifier.yaml", [f"data.root={demo_root}", f"workdir={work}", bad])
    with pytest.raises(ConfigError) as e:
        check_model(cfg)  # what a run calls before it writes anything
    assert f"error: {e.value}" == line
    assert not work.exists()


@pytest.mark.parametrize("case", ["an unknown model_type", "LoRA"])
def test_a_train_run_of_a_classifier_that_cannot_work_writes_nothing(case: str, demo_root: Path, tmp_path: Path) -> None:
    bad, needles = BAD_BACKBONES[case]
    assert_one_line(runner.invoke(app, classifier_args(demo_root, tmp_path / "work", bad)), needles)
    assert not (tmp_path / "work").exists()


def test_predict_of_a_classifier_fold_without_a_model_is_one_line(demo_root: Path, tmp_path: Path) -> None:
    sets = [f"data.root={demo_root}", f"workdir={tmp_path}", "folds.k=3"]
    res = runner.invoke(app, ["predict", "-c", "configs/demo_classifier.yaml", *[x for s in sets for x in ("--set", s)]])
    model = tmp_path / "experiments" / "demo_classifier" / "fold0" / "model"
    line = assert_one_line(res, [f"{model}: no trained model here (missing classifier.json); run `train` first"])
    assert line == f"error: {model}: no trained model here (missing classifier.json); run `train` first"
    assert not (model.parent / "predictions").exists()


def test_backbone_configs_that_build_are_not_refused() -> None:
    from competition.families.classifier import plan_classifier

    vit = {"model_type": "vit", **SMALL, "image_size": 48, "patch_size": 8}
    for c in (ClassifierConfig(image_size=48), ClassifierConfig(image_size=48, vision_config=vit)):
        model, absent = plan_classifier(c)
        assert absent == [] and next(model.parameters()).device.type == "meta"
