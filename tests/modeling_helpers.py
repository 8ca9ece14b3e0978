"""Shared by the task-class tests (VQA, captioning, zero-shot classification, pre-training): a tiny config with an
answer vocabulary, coloured scenes, a short training loop, and the inputs of every head."""

from __future__ import annotations

import textwrap

import numpy as np
import torch
from PIL import Image

from glipv2 import (
    Glipv2ForConditionalGeneration,
    Glipv2ForQuestionAnswering,
    Glipv2ForZeroShotImageClassification,
    Glipv2Processor,
    vqa_targets,
)
from tests.conftest import tiny_config

ANSWERS = ["red", "blue", "green", "square", "circle"]

COLORS = {"red": (230, 20, 20), "blue": (20, 20, 230), "green": (20, 200, 20)}


def answer_config(**overrides):  # noqa: ANN202
    overrides.setdefault("id2label", dict(enumerate(ANSWERS)))
    overrides.setdefault("label2id", {a: i for i, a in enumerate(ANSWERS)})
    return tiny_config(**overrides)


def text_without_dropout() -> dict:
    """The tiny text config without dropout (deterministic overfitting and gradient comparisons)."""
    return {**tiny_config().text_config.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def scene(color: str, shape: str = "square") -> Image.Image:
    """64x64 grey image with one coloured square (or disc) in the middle."""
    canvas = np.full((64, 64, 3), 128, dtype=np.uint8)
    yy, xx = np.mgrid[:64, :64]
    inside = (abs(yy - 32) < 18) & (abs(xx - 32) < 18) if shape == "square" else (yy - 32) ** 2 + (xx - 32) ** 2 < 324
    canvas[inside] = COLORS[color]
    return Image.fromarray(canvas)


def train_steps(model: torch.nn.Module, step, steps: int, lr: float = 1e-2) -> float:  # noqa: ANN001
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = step()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


# ------------------------------------------------------------------------------------------ captioning
# BERT hidden 8 (tiny-random) is too narrow to learn word order in a few steps; captioning overfits with 32.
CAPTION_TEXT_CONFIG = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 256,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


def caption_batch(processor: Glipv2Processor, captions: list[str], images: list[Image.Image]) -> dict:
    batch = processor(images=images, text=captions)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return {
        "pixel_values": batch["pixel_values"],
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": labels,
    }


# ------------------------------------------------------------------------------------------ VQA
VQA_DATA = [
    ("red", "square", "what color is the shape?", "red"),
    ("blue", "circle", "what color is the shape?", "blue"),
    ("red", "square", "which shape is it?", "square"),
    ("blue", "circle", "which shape is it?", "circle"),
]

REMOTE_VQA_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["glipv2"] = None
    import numpy as np
    from PIL import Image
    from transformers import pipeline
    vqa = pipeline("visual-question-answering", model=sys.argv[1], trust_remote_code=True)
    assert type(vqa).__module__.startswith("transformers_modules"), type(vqa).__module__
    yy, xx = np.mgrid[:64, :64]
    canvas = np.full((64, 64, 3), 128, dtype=np.uint8)
    canvas[(yy - 32) ** 2 + (xx - 32) ** 2 < 324] = (20, 20, 230)
    print(vqa(Image.fromarray(canvas), sys.argv[2], top_k=1)[0]["answer"])
    """
)

# ------------------------------------------------------------------------------------------ pre-training
PROMPT = "red square. blue circle"


def pretraining_inputs(processor: Glipv2Processor) -> tuple[dict, dict]:
    """Two images, one prompt each, one box each (class 0 / class 1), MLM on token 2, VQA soft scores."""
    batch = dict(processor(images=[scene("red"), scene("blue", "circle")], text=[PROMPT, PROMPT]))
    batch.pop("token_type_ids", None)
    positive_map = processor.positive_map(PROMPT, [[(0, 10)], [(12, 23)]])
    box = torch.tensor([[0.5, 0.5, 0.5625, 0.5625]])
    labels = [
        {"boxes": box, "positive_map": positive_map[:1], "class_labels": torch.tensor([0])},
        {"boxes": box, "positive_map": positive_map[1:], "class_labels": torch.tensor([1])},
    ]
    mlm_labels = torch.full_like(batch["input_ids"], -100)
    mlm_labels[:, 2] = batch["input_ids"][:, 2]
    masked_ids = batch["input_ids"].clone()
    masked_ids[:, 2] = processor.tokenizer.mask_token_id
    targets = {
        "labels": labels,
        "mlm_labels": mlm_labels,
        "vqa_labels": vqa_targets([[0], [1]], [[1.0], [0.6]], len(ANSWERS)),
        "return_itc_loss": True,
    }
    return {**batch, "input_ids": masked_ids}, targets


def task_outputs(model: torch.nn.Module, inputs: dict) -> list[torch.Tensor]:
    """The task output of each class (what must survive a checkpoint round trip)."""
    with torch.no_grad():
        if isinstance(model, Glipv2ForConditionalGeneration):
            return [model(**inputs).logits]
        if isinstance(model, Glipv2ForZeroShotImageClassification):
            out = model(**inputs)
            return [out.image_embeds, out.text_embeds, out.logits_per_image]
        if isinstance(model, Glipv2ForQuestionAnswering):
            return [model(**inputs).logits]
        out = model(**inputs)
        return [out.logits, out.pred_boxes, out.centerness]
