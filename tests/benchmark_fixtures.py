"""Shared by the benchmark tests (`tests/tasks/test_benchmark_*.py`): a tiny grounding model trained on one
synthetic scene (a red square and a blue circle), so that benchmark files built from that scene get real, non-trivial
scores, and helpers to write fixtures in the official layouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from tests.conftest import bert_processor, tiny_config

SCENE_LABELS = ["red square", "blue circle"]
# continuous xyxy pixels of the 128x128 scene: PIL's rectangle [30, 40, 80, 100] covers [30, 81) x [40, 101)
SCENE_BOXES_XYXY = [[30.0, 40.0, 81.0, 101.0], [90.0, 10.0, 121.0, 41.0]]
SCENE_BOXES_XYWH = [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in SCENE_BOXES_XYXY]


def scene_image() -> Image.Image:
    """The 128x128 training scene."""
    image = Image.new("RGB", (128, 128), (40, 40, 40))
    draw = ImageDraw.Draw(image)
    draw.rectangle([30, 40, 80, 100], fill=(220, 30, 30))
    draw.ellipse([90, 10, 120, 40], fill=(30, 30, 220))
    return image


def train_scene_detector(folder: Path, steps: int = 150) -> Path:
    """Trains a tiny-random `Glipv2ForGrounding` to ground "red square" and "blue circle" in the scene; saves it
    with its processor (128-pixel images, the real bert-base-uncased vocabulary) in `folder`."""
    from glipv2 import Glipv2ForGrounding

    torch.manual_seed(0)
    processor = bert_processor(128)
    prompt = processor.build_prompt(SCENE_LABELS)
    targets = [{"boxes": SCENE_BOXES_XYXY, "spans": [[span] for span in prompt.label_spans]}]
    encoding = processor(images=scene_image(), text=[SCENE_LABELS], grounding_targets=targets)
    inputs = {key: value for key, value in encoding.items() if key != "labels"}
    model = Glipv2ForGrounding(tiny_config(fusion_attention_dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        loss = model(**inputs, labels=encoding["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def write_image(path: Path, image: Image.Image) -> Path:
    """Saves `image` (JPEG for .jpg, as the datasets distribute their images)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95) if path.suffix.lower() in (".jpg", ".jpeg") else image.save(path)
    return path


__all__ = [
    "SCENE_BOXES_XYWH",
    "SCENE_BOXES_XYXY",
    "SCENE_LABELS",
    "scene_image",
    "train_scene_detector",
    "write_image",
    "write_json",
]
