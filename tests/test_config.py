"""Config: YAML + overrides, coercion, unknown keys and bad values refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from competition.config import Config, DecodingConfig, load_config
from competition.errors import ConfigError
from competition.overrides import valid_keys


def test_overrides_are_coerced_to_field_types(tmp_path: Path) -> None:
    cfg = load_config("configs/demo.yaml", ["folds.k=4", f"workdir={tmp_path}", "data.image_extensions=[.jpg, .png]"])
    assert cfg.folds.k == 4 and isinstance(cfg.folds.k, int)
    assert cfg.workdir == tmp_path
    assert cfg.data.image_extensions == [".jpg", ".png"]
    assert cfg.exp_dir == tmp_path / "experiments" / "demo"


def test_unknown_override_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'folds\.kk'.*folds\.k\b"):
        load_config("configs/demo.yaml", ["folds.kk=3"])


def test_unknown_key_in_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"data": {"rooot": "x"}}))
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'data\.rooot'"):
        load_config(p)


def test_bad_value_names_key() -> None:
    with pytest.raises(ConfigError, match=r"'folds\.k'"):
        load_config("configs/demo.yaml", ["folds.k=many"])
    with pytest.raises(ConfigError, match=r"'folds\.k'"):
        load_config("configs/demo.yaml", ["folds.k=1"])


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config("configs/demo.yaml", [f"workdir={tmp_path}", "seed=7"])
    path = cfg.save()
    again = load_config(path)
    assert again == cfg and again.hash() == cfg.hash()
    assert "data.root" in valid_keys(Config) and "folds.k" in valid_keys(Config)


def test_the_gpu_configs_run_on_a_machine_without_bf16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from competition import modeling
    from competition.modeling import resolve_precision, tf32_available, torch_dtype
    from competition.train import training_arguments

    for cpu_bf16 in (False, True):  # a CPU without bfloat16 arithmetic trains in fp32, one with it autocasts to bf16
        monkeypatch.setattr(modeling, "cpu_computes_bf16", lambda cpu_bf16=cpu_bf16: cpu_bf16)
        for config in ("configs/seed_llava_vicuna7b.yaml", "configs/llava15_7b_lora.yaml"):
            args = training_arguments(load_config(config, ["data.root=/nonexistent"]), tmp_path)  # no traceback
            assert args.bf16 == args.use_cpu == cpu_bf16 and not args.fp16
        assert torch_dtype("auto") == torch.float32  # frozen weights stay float32 on any CPU
        assert resolve_precision("auto", "configs/deepspeed/zero3.json") == "fp32"  # DeepSpeed casts weights instead
    with pytest.raises(ConfigError, match="train.precision=fp16 needs a CUDA card"):
        resolve_precision("fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a T4: CUDA, no bf16, no TF32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    assert resolve_precision("auto") == "fp16" and torch_dtype("auto") == torch.float16 and not tf32_available()
    with pytest.raises(ConfigError, match="Tesla T4 has no bfloat16"):
        resolve_precision("bf16")


def test_a_warmup_ratio_read_as_a_step_count_is_refused() -> None:
    with pytest.raises(ConfigError, match="train.warmup_ratio"):
        load_config("configs/demo.yaml", ["train.warmup_ratio=1"])


@pytest.mark.parametrize(
    ("decoding", "search"),
    [({}, "greedy"), ({"num_beams": 3}, "beam"), ({"do_sample": True}, "sample"), ({"rank": 20}, "rank"),
     ({"constrained": True}, "greedy"), ({"constrained": True, "num_beams": 2}, "beam")],
)  # fmt: skip
def test_each_decoding_has_one_search(decoding: dict, search: str) -> None:
    assert DecodingConfig(**decoding).search == search


@pytest.mark.parametrize("flags", [{"num_beams": 2, "do_sample": True}, {"rank": 5, "num_beams": 2},
                                   {"rank": 5, "do_sample": True}, {"rank": 5, "constrained": True}])  # fmt: skip
def test_a_decoding_of_two_searches_is_refused(tmp_path: Path, flags: dict) -> None:
    sets = [f"predict.decodings=[{{name: x, {', '.join(f'{k}: {v}' for k, v in flags.items())}}}]"]
    with pytest.raises(ConfigError, match="predict.decodings"):
        load_config("configs/demo.yaml", sets)


def test_an_older_transformers_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from competition import versions
    from competition.cli import app

    real = versions.metadata.version
    monkeypatch.setattr(versions.metadata, "version", lambda name: "4.57.6" if name == "transformers" else real(name))
    with pytest.raises(ConfigError, match=r"transformers 4.57.6 is installed; this toolkit needs transformers>=5\.\d+"):
        versions.check_versions()
    res = CliRunner().invoke(app, ["cv", "-c", "configs/demo.yaml"])
    assert res.exit_code == 2 and "transformers 4.57.6 is installed" in res.output


def test_every_default_is_pinned() -> None:
    pinned = yaml.safe_load(Path("tests/config_defaults.yaml").read_text())
    assert load_config().to_dict() == pinned


def test_set_reaches_a_section_the_yaml_lacks(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("experiment: mini\n")
    cfg = load_config(tmp_path / "c.yaml", ["tune.trials=3", "model.tiny.image_size=32"])
    assert (cfg.experiment, cfg.tune.trials, cfg.model.tiny.image_size) == ("mini", 3, 32)
    assert cfg.folds.k == 5 and cfg.tune.fold == 0


def test_the_readme_key_table_is_the_one_the_fields_describe() -> None:
    from competition.docs import key_table

    readme = Path("README.md").read_text()
    table = readme.split("<!-- config-keys:start -->\n")[1].split("<!-- config-keys:end -->")[0]
    assert table.splitlines()[2:] == key_table(), "README key table is stale: run `make docs`"
    assert all(row.split(" | ")[2].strip(" |") for row in key_table()), "a config key without a description"


def test_set_inside_a_dict_field_changes_one_entry_of_its_default() -> None:
    cfg = load_config("configs/demo_classifier.yaml", ["model.classifier.text_config.num_hidden_layers=3"])
    default = load_config("configs/demo_classifier.yaml").model.classifier.text_config
    assert cfg.model.classifier.text_config == {**default, "num_hidden_layers": 3}
    assert load_config("configs/demo.yaml", ["model.processor_kwargs.max_pixels=1024"]).model.processor_kwargs == {
        "max_pixels": 1024
    }


def test_every_shipped_config_loads_under_its_own_experiment_name() -> None:
    configs = sorted(Path("configs").glob("*.yaml"))
    names = [load_config(path).experiment for path in configs]
    assert len(configs) > 10 and len(set(names)) == len(names), names
