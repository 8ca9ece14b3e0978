"""The typed recipe: sections and keys validated by name, `--set` values parsed by the field's type, the shipped
configs (training and fine-tuning) in one dialect, and label routing to the all-heads model by the task's spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tasks.recipe import apply_overrides, load_recipe, recipe_from_dict

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_set_values_are_parsed_by_the_field_type() -> None:
    recipe = load_recipe(
        REPO / "configs" / "demo.yaml",
        [
            "train.mixed_precision=no",  # YAML would read `no` as False, which Accelerate rejects
            "train.max_steps=7",
            "train.ema_decay=null",
            "train.learning_rate=3e-4",
            "train.gradient_checkpointing=yes",
            "data.train_min_sizes=[96, 112]",
            "model.overrides.num_fusion_layers=3",
            "tasks.vqa.loss_weight=2",
            "tasks.0.options={num_negatives: 4}",
        ],
    )
    assert recipe.train.mixed_precision == "no" and recipe.train.max_steps == 7 and recipe.train.ema_decay is None
    assert recipe.train.learning_rate == 3e-4 and recipe.train.gradient_checkpointing is True
    assert recipe.data.train_min_sizes == [96, 112] and recipe.model.overrides["num_fusion_layers"] == 3
    assert recipe.task("vqa").loss_weight == 2.0 and recipe.task("detection").options == {"num_negatives": 4}
    assert recipe.model.overrides["mask_head_convs"] == 2  # the file's other overrides stay
    assert recipe.train_config().tasks[2].loss_weight == 2.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.mixed_precison=no", r"unknown key 'mixed_precison' in train; allowed: \[.*'mixed_precision'"),
        ("trian.max_steps=1", r"unknown section 'trian'; sections: \['model', 'data', 'tasks', 'train', 'peft'\]"),
        ("train.max_steps=many", r"--set train.max_steps: expected a number, got 'many'"),
        ("train.verify_replicas=perhaps", r"expected true or false, got 'perhaps'"),
        ("tasks.segmentation.loss_weight=1", r"no task 'segmentation'; tasks: \['detection', 'grounding'"),
        ("train.max_steps", r"expected KEY=VALUE"),
    ],
)
def test_bad_overrides_name_the_key_and_the_allowed_ones(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_recipe(REPO / "configs" / "demo.yaml", [override])


def test_bad_files_name_the_key_the_value_and_the_allowed_ones(tmp_path: Path) -> None:
    base = {"tasks": ["detection"], "train": {"mixed_precision": "bf16"}}
    with pytest.raises(ValueError, match=r"train\.mixed_precision: expected a string, got False \(YAML reads"):
        load_recipe(_write(tmp_path, {**base, "train": {"mixed_precision": False}}))
    with pytest.raises(ValueError, match=r"train.mixed_precision: 'fp8' is not one of \('no', 'bf16', 'fp16'\)"):
        load_recipe(_write(tmp_path, {**base, "train": {"mixed_precision": "fp8"}}))
    with pytest.raises(ValueError, match=r"tasks\[0\] \(detection\): unknown key\(s\) \['weight'\]; allowed"):
        recipe_from_dict({"tasks": [{"name": "detection", "weight": 2}]})
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['batch_size', 'method'\]"):
        recipe_from_dict({"method": "lora", "batch_size": 8, "tasks": ["detection"]})  # the old flat dialect
    with pytest.raises(ValueError, match="'tasks' is missing or empty"):
        recipe_from_dict({"model": {}})
    with pytest.raises(ValueError, match=r"data\.train_min_sizes\[1\]: expected a number"):
        recipe_from_dict({"tasks": ["vqa"], "data": {"train_min_sizes": [1, "x"]}})


def test_the_shipped_configs_are_recipes() -> None:
    for name in ("demo.yaml", "finetune_lora.yaml", "finetune_prompt.yaml"):
        recipe = load_recipe(REPO / "configs" / name)
        assert recipe.task_names and recipe.train.max_steps > 0
    assert load_recipe(REPO / "configs" / "finetune_prompt.yaml").task("detection").options == {"fixed_prompt": True}
    assert load_recipe(REPO / "configs" / "finetune_lora.yaml").peft.method == "lora"


def test_unknown_task_options_fail_before_training(tmp_path: Path) -> None:
    from tasks.multitask import build_sources
    from tasks.registry import get_task

    recipe = recipe_from_dict({"tasks": [{"name": "grounding", "options": {"num_negatives": 3}}]})
    with pytest.raises(ValueError, match=r"tasks\[grounding\]\.options: unknown option\(s\) \['num_negatives'\]"):
        build_sources(recipe, {"grounding": None}, None, 0)
    assert get_task("detection").options == ("num_negatives", "fixed_prompt", "with_masks")


def test_masks_on_a_tasks_batches_give_the_model_a_mask_head() -> None:
    from glipv2 import Glipv2ForGrounding, Glipv2ForInstanceSegmentation, Glipv2ForPreTraining
    from tasks.multitask import training_config_overrides
    from tasks.recipe import model_class_for

    plain = recipe_from_dict({"tasks": ["detection", "grounding"]})
    assert "use_mask_head" not in training_config_overrides(plain, {})
    masked = recipe_from_dict({"tasks": ["detection", {"name": "grounding", "options": {"with_masks": True}}]})
    assert training_config_overrides(masked, {}) == {"use_mask_head": True}
    assert model_class_for(masked.task_names) is Glipv2ForGrounding
    assert model_class_for(masked.task_names, masks=True) is Glipv2ForInstanceSegmentation
    assert model_class_for(["grounding", "vqa"], masks=True) is Glipv2ForPreTraining


def test_overrides_do_not_touch_other_entries() -> None:
    data = {"tasks": ["detection", {"name": "vqa", "loss_weight": 0.5}]}
    apply_overrides(data, ["tasks.detection.sampling_weight=3"])
    assert data["tasks"] == [{"name": "detection", "sampling_weight": 3.0}, {"name": "vqa", "loss_weight": 0.5}]


def test_labels_reach_the_all_heads_model_through_the_tasks_label_argument() -> None:
    """A VQA batch through the all-heads class (plain, and wrapped by PEFT) gives the VQA class's loss: the
    collator's `labels` go to `vqa_labels`, not to the grounding labels."""
    from peft import LoraConfig, get_peft_model

    from glipv2 import Glipv2ForPreTraining, Glipv2ForQuestionAnswering
    from tasks.multitask import task_loss
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    config = tiny_config(id2label={0: "red", 1: "blue", 2: "two"}, fusion_attention_dropout=0.0)
    all_heads = Glipv2ForPreTraining(config).eval()
    vqa = Glipv2ForQuestionAnswering(config).eval()
    vqa.load_state_dict(all_heads.state_dict(), strict=False)
    batch = {
        "pixel_values": torch.randn(2, 3, 64, 64),
        "input_ids": torch.tensor([[101, 2054, 3609, 102], [101, 2129, 2116, 102]]),
        "attention_mask": torch.ones(2, 4, dtype=torch.long),
        "labels": torch.tensor([[1.0, 0.0, 0.3], [0.0, 0.6, 0.0]]),
    }
    expected, _ = task_loss(vqa, "vqa", batch)
    loss, parts = task_loss(all_heads, "vqa", batch)
    assert set(parts) == {"loss_vqa"}
    torch.testing.assert_close(loss, expected)
    wrapped = get_peft_model(all_heads, LoraConfig(target_modules=["q_proj"], modules_to_save=["vqa_head"]))
    torch.testing.assert_close(task_loss(wrapped, "vqa", batch)[0], expected)  # LoRA B starts at zero
