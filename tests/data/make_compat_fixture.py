"""Writes the checkpoint-compatibility fixture: a saved all-heads checkpoint, each public class's state-dict keys,
and every class's outputs on fixed inputs. `tests/test_compat.py` loads the folder with today's code and checks
that the keys and the outputs are unchanged, so checkpoints saved by earlier versions keep working.

    python tests/data/make_compat_fixture.py      # only when a deliberate format change is made (then say why)

Uses the public API only (`glipv2` classes, `save_pretrained`), so it runs against any version of the library.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "compat_checkpoint"
OUTPUTS = HERE / "compat_outputs.safetensors"
KEYS = HERE / "state_dict_keys.json"
CLASS_NAMES = (
    "Glipv2Model",
    "Glipv2ForGrounding",
    "Glipv2ForObjectDetection",
    "Glipv2ForQuestionAnswering",
    "Glipv2ForConditionalGeneration",
    "Glipv2ForZeroShotImageClassification",
    "Glipv2ForPreTraining",
)


def fixture_config():  # noqa: ANN201
    """tiny-random with a 128-token vocabulary (a small file), three labels / answers and a closed vocabulary."""
    from glipv2 import Glipv2Config

    labels = {0: "red", 1: "blue", 2: "two"}
    prompt = {"input_ids": [101, 5, 6, 7, 102], "label_ids": [0, 1, 2], "label_tokens": [[1], [2], [3]]}
    return Glipv2Config.from_preset(
        "tiny-random", text_config={"vocab_size": 128}, id2label=labels, detection_prompts=[prompt]
    )


def fixture_inputs() -> dict[str, torch.Tensor]:
    """Two 64x64 images (the second padded from 64x48) and two prompts of 6 tokens (the second padded)."""
    generator = torch.Generator().manual_seed(1234)
    pixel_values = torch.randn(2, 3, 64, 64, generator=generator)
    pixel_mask = torch.ones(2, 64, 64, dtype=torch.long)
    pixel_mask[1, :, 48:] = 0
    pixel_values[1, :, :, 48:] = 0
    input_ids = torch.tensor([[101, 5, 6, 7, 8, 102], [101, 9, 10, 102, 0, 0]])
    attention_mask = (input_ids != 0).long()
    return {
        "pixel_values": pixel_values,
        "pixel_mask": pixel_mask,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
    }


def grounding_labels() -> list[dict[str, torch.Tensor]]:
    positive_map = torch.zeros(2, 6)
    positive_map[0, 1:3] = 1
    positive_map[1, 3] = 1
    return [
        {"boxes": torch.tensor([[0.3, 0.4, 0.4, 0.5], [0.7, 0.6, 0.2, 0.3]]), "positive_map": positive_map},
        {"boxes": torch.tensor([[0.5, 0.5, 0.6, 0.6]]), "positive_map": torch.tensor([[0.0, 1, 1, 0, 0, 0]])},
    ]


@torch.no_grad()
def class_outputs(name: str, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The outputs of `model` (class `name`, eval mode) that the fixture freezes."""
    if name == "Glipv2Model":
        out = model(**inputs)
        tensors = {f"vision_features.{i}": level for i, level in enumerate(out.vision_features)}
        return {**tensors, "text_features": out.text_features}
    if name == "Glipv2ForGrounding":
        out = model(**inputs, labels=grounding_labels())
        return {"logits": out.logits, "pred_boxes": out.pred_boxes, "centerness": out.centerness, "loss": out.loss}
    if name == "Glipv2ForObjectDetection":
        out = model(pixel_values=inputs["pixel_values"], pixel_mask=inputs["pixel_mask"])
        return {"logits": out.logits, "pred_boxes": out.pred_boxes, "centerness": out.centerness}
    if name == "Glipv2ForQuestionAnswering":
        return {"logits": model(**inputs).logits}
    if name == "Glipv2ForConditionalGeneration":
        keys = ("pixel_values", "input_ids", "attention_mask")
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
        out = model(**{k: inputs[k] for k in keys}, labels=labels)
        return {"logits": out.logits, "loss": out.loss}
    if name == "Glipv2ForZeroShotImageClassification":
        out = model(**inputs, return_loss=True)
        return {"logits_per_image": out.logits_per_image, "loss": out.loss}
    if name == "Glipv2ForPreTraining":
        mlm_labels = torch.full_like(inputs["input_ids"], -100)
        mlm_labels[0, 2] = 6
        vqa_labels = torch.tensor([[1.0, 0.0, 0.3], [0.0, 0.6, 0.0]])
        out = model(
            **inputs, labels=grounding_labels(), mlm_labels=mlm_labels, vqa_labels=vqa_labels, return_itc_loss=True
        )
        return {f"loss_dict.{key}": value for key, value in out.loss_dict.items()} | {"logits": out.logits}
    raise ValueError(name)


def main() -> int:
    import glipv2

    torch.manual_seed(0)
    config = fixture_config()
    model = glipv2.Glipv2ForPreTraining(config).eval()
    model.save_pretrained(FOLDER)
    for code in FOLDER.glob("*.py"):  # the copied remote code: loading by class does not need it
        code.unlink()
    inputs = fixture_inputs()
    tensors = {f"input.{key}": value for key, value in inputs.items()}
    keys = {}
    for name in CLASS_NAMES:
        cls = getattr(glipv2, name)
        keys[name] = {key: list(value.shape) for key, value in cls(config).state_dict().items()}
        loaded = cls.from_pretrained(FOLDER).eval()
        for key, value in class_outputs(name, loaded, inputs).items():
            tensors[f"{name}.{key}"] = value.detach().contiguous()
    save_file(tensors, OUTPUTS)
    KEYS.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {FOLDER}, {OUTPUTS} ({len(tensors)} tensors), {KEYS}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(HERE.parents[1]))
    sys.exit(main())
