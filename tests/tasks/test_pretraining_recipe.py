"""The GLIP-T pre-training recipe (`configs/pretrain_glip_t.yaml`, `scripts/prepare_pretraining_shards.sh`,
docs/pretraining.md): its settings are the official ones, and a dry run prepares shards from files laid out as the
datasets distribute them (synthetic stand-ins) and trains from them with the recipe itself, shrunk only in size."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.recipe import load_recipe, load_vision_backbone
from tasks.trainer import lr_lambda
from tests.tasks.test_trainer import REPO, TRAIN, _env, _history, _run, write_grounding_subset

RECIPE = REPO / "configs" / "pretrain_glip_t.yaml"
PREPARE = REPO / "scripts" / "prepare_pretraining_shards.sh"


def test_the_recipe_holds_the_official_settings() -> None:
    recipe = load_recipe(RECIPE)
    train = recipe.train
    assert recipe.model.preset == "glip-tiny" and recipe.model.text_encoder == "bert-base-uncased"
    assert recipe.model.vision_backbone == "microsoft/swin-tiny-patch4-window7-224"
    assert train.learning_rate == 1e-4 and train.text_learning_rate == 1e-5 and train.weight_decay == 1e-4
    assert train.per_device_batch_size * 8 == 64 and train.warmup_steps == 2000 and train.max_grad_norm == 1.0
    assert (train.schedule, train.decay_milestones, train.decay_factor) == ("multistep", [0.67, 0.89], 0.1)
    assert train.ema_decay == 0.999 and train.mixed_precision == "bf16"
    assert recipe.data.train_min_sizes == [480, 560, 640, 720, 800] and recipe.data.train_max_size == 1333
    assert recipe.task_names == ["detection", "grounding"]
    assert recipe.task("detection").options == {"num_negatives": 85}
    factor = lr_lambda("multistep", 2000, 310000, train.decay_milestones, train.decay_factor)
    assert factor(0) == pytest.approx(1 / 2000) and factor(1999) == 1.0 and factor(2000) == 1.0
    assert factor(207699) == 1.0 and factor(207700) == pytest.approx(0.1)  # 0.67 x 310,000
    assert factor(275899) == pytest.approx(0.1) and factor(275900) == pytest.approx(0.01)  # 0.89 x 310,000


def _swin_classification_checkpoint(vision_config, folder: Path) -> dict[str, torch.Tensor]:
    """A transformers Swin ImageNet classifier of `vision_config`'s shape saved to `folder`, the form of
    `microsoft/swin-tiny-patch4-window7-224`; returns its backbone weights."""
    from transformers import SwinConfig, SwinForImageClassification

    fields = ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "num_channels", "mlp_ratio")
    config = SwinConfig(**{name: getattr(vision_config, name) for name in fields}, num_labels=10)
    torch.manual_seed(1)
    classifier = SwinForImageClassification(config)
    classifier.save_pretrained(folder)
    return {
        name: value.clone() for name, value in classifier.state_dict().items() if not name.startswith("classifier")
    }


@pytest.mark.parametrize("preset", ["tiny-random", "glip-tiny"])
def test_an_imagenet_swin_classifier_loads_into_the_image_backbone(preset: str, tmp_path: Path) -> None:
    from transformers import AutoBackbone

    from glipv2 import Glipv2Config
    from glipv2.modeling_glipv2 import _backbone_config

    config = Glipv2Config.from_preset(preset)
    expected = _swin_classification_checkpoint(config.vision_config, tmp_path / "swin")
    backbone = AutoBackbone.from_config(_backbone_config(config))
    load_vision_backbone(backbone, str(tmp_path / "swin"))
    loaded = backbone.state_dict()
    shared = [name for name in expected if name in loaded]
    assert len(shared) > 10 and all(torch.equal(loaded[name], expected[name]) for name in shared)
    assert all(name in shared for name in loaded if not name.startswith("hidden_states_norms."))
    with pytest.raises(ValueError, match="does not fit the preset's image backbone"):
        other = Glipv2Config.from_preset("glip-tiny" if preset == "tiny-random" else "tiny-random")
        load_vision_backbone(AutoBackbone.from_config(_backbone_config(other)), str(tmp_path / "swin"))


def _as_distributed(synthetic: Path, data: Path) -> None:
    """The synthetic training data at the paths `prepare_pretraining_shards.sh` reads, named as Objects365 and
    MDETR's GoldG files are (COCO instances, MDETR grounding JSON)."""
    images = synthetic / "images" / "train"
    for folder in ("objects365/train", "gqa/images", "flickr30k/flickr30k-images"):
        (data / folder).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(images, data / folder)
    (data / "mdetr_annotations").mkdir()
    shutil.copy(synthetic / "annotations" / "instances_train.json", data / "objects365" / "zhiyuan_objv2_train.json")
    grounding = synthetic / "annotations" / "grounding_train.json"
    shutil.copy(grounding, data / "mdetr_annotations" / "final_mixed_train_no_coco.json")
    shutil.copy(grounding, data / "mdetr_annotations" / "final_flickr_separateGT_train.json")


def test_dry_run_prepares_shards_and_trains_with_the_recipe(tmp_path: Path) -> None:
    from tasks.synthetic import generate_synthetic_multitask

    synthetic, data, shards = tmp_path / "synthetic", tmp_path / "data", tmp_path / "shards"
    generate_synthetic_multitask(synthetic, seed=0, num_train=12, num_val=4, image_size=64)
    _as_distributed(synthetic, data)
    pseudo = tmp_path / "pseudo.json"  # stands in for scripts/pseudo_label.py output on caption pairs
    write_grounding_subset(synthetic, 5, pseudo)
    subprocess.run(
        ["bash", str(PREPARE), str(data), str(shards), str(pseudo), str(synthetic / "images" / "train")],
        cwd=REPO, env={**_env(), "PYTHON": sys.executable, "RECORDS_PER_SHARD": "4"}, check=True,
        capture_output=True, timeout=300,
    )  # fmt: skip
    detection = json.loads((shards / "detection" / "shards.json").read_text())
    grounding = json.loads((shards / "grounding" / "shards.json").read_text())
    assert {name: part["num_records"] for name, part in detection["parts"].items()} == {"objects365": 12}
    assert {name: part["num_records"] for name, part in grounding["parts"].items()} == {
        "mixed": 12,
        "flickr": 12,
        "pseudo": 5,
    }
    from glipv2 import Glipv2Config

    _swin_classification_checkpoint(Glipv2Config.from_preset("tiny-random").vision_config, tmp_path / "swin")
    val = synthetic / "annotations"
    overrides = {
        # size only: the model, the images, the steps and the batch
        "model.preset": "tiny-random",
        "model.text_encoder": "null",
        "model.tokenizer": "minilm",
        "model.vision_backbone": str(tmp_path / "swin"),
        "model.image_size": "64",
        "data.shards": str(shards),
        "data.shuffle_buffer": "8",
        "data.train_min_sizes": "[48, 64]",
        "data.train_max_size": "80",
        "data.eval_max_samples": "4",
        "tasks.detection.eval_files": json.dumps(
            {"annotation_file": str(val / "instances_val.json"), "image_dir": str(synthetic / "images" / "val")}
        ),
        "tasks.grounding.eval_files": json.dumps(
            {"annotation_file": str(val / "grounding_val.json"), "image_dir": str(synthetic / "images" / "val")}
        ),
        "train.max_steps": "9",
        "train.per_device_batch_size": "2",
        "train.warmup_steps": "2",
        "train.mixed_precision": "no",  # bf16 autocast on CPU works but is slow; the GPU run uses the recipe's bf16
        "train.save_every": "3",
        "train.eval_every": "9",
        "train.report_to": "null",
    }
    sets = [item for key, value in overrides.items() for item in ("--set", f"{key}={value}")]
    output = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, TRAIN, "--config", str(RECIPE), "--no_progress", "--output_dir", str(output), *sets])
    history = _history(output)
    assert [record["step"] for record in history] == list(range(1, 10))
    # warm-up, then x0.1 at round(0.67 x 9) = 6 and x0.01 at round(0.89 x 9) = 8 optimizer steps
    rates = [record["lr"] for record in history]
    assert rates == pytest.approx([1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6])
    assert {"eval/detection/AP50", "eval/grounding/recall@1"} <= set(history[-1])
    assert (output / "checkpoint-9" / "stream_state_1.json").is_file() and (
        output / "checkpoint-9" / "ema.pt"
    ).is_file()
    from glipv2 import Glipv2ForGrounding

    model = Glipv2ForGrounding.from_pretrained(output / "final")
    assert model.config.gradient_checkpointing_vision and model.config.gradient_checkpointing_fusion
