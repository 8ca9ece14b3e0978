"""Batch consistency: how far an image's detections in a batch of several image sizes are from its detections alone,
with the padding masked (`glipv2/padding.py`) and without (the official behaviour)."""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from glipv2.box_ops import box_iou
from tasks.benchmark.settings import Settings

# The goal: the same top-20 labels, scores within 1% relative, boxes at IoU >= 0.99.
TOP_K = 20
PHOTO_LABELS = ("person", "cat", "cup", "face", "rocket", "flag", "plate", "eye", "hand", "spoon", "table", "window")


def photographs() -> list[tuple[str, Any]]:
    """scikit-image's astronaut (square), cat (landscape) and coffee photographs, the coffee cut to a tall crop:
    three sizes and aspect ratios."""
    from PIL import Image
    from skimage import data

    coffee = Image.fromarray(data.coffee())
    return [
        ("astronaut", Image.fromarray(data.astronaut())),
        ("chelsea", Image.fromarray(data.chelsea())),
        ("coffee (tall crop)", coffee.crop((150, 0, 400, 400))),
    ]


def _compare(alone: dict[str, torch.Tensor], batched: dict[str, torch.Tensor], top_k: int) -> dict[str, Any]:
    """Each of the image's top-k detections alone, matched to the batched detection of its label with the highest
    IoU: worst IoU, worst relative score difference, and whether the top-k labels are the same."""
    labels = alone["labels"][:top_k]
    same_labels = sorted(labels.tolist()) == sorted(batched["labels"][:top_k].tolist())
    worst_iou, worst_score = 1.0, 0.0
    for box, label, score in zip(alone["boxes"][:top_k], labels, alone["scores"][:top_k]):
        mine = batched["labels"] == label
        if not mine.any():
            return {"same_top_labels": False, "min_iou": 0.0, "max_relative_score_difference": float("inf")}
        ious = box_iou(box[None].double(), batched["boxes"][mine].double())[0]
        best = int(ious.argmax())
        worst_iou = min(worst_iou, float(ious[best]))
        worst_score = max(worst_score, abs(float(batched["scores"][mine][best]) - float(score)) / float(score))
    return {"same_top_labels": same_labels, "min_iou": worst_iou, "max_relative_score_difference": worst_score}


@torch.no_grad()
def measure_batch_consistency(
    model: Any, processor: Any, images: list[tuple[str, Any]], labels: list[str], top_k: int = TOP_K
) -> dict[str, Any]:
    """Per image, its top-k detections in the batch against alone, masked and unmasked; the batch's padded size and
    the time of the batch (processor, model and post-processing) with and without the masking."""

    def detect(batch: list[Any]) -> list[dict[str, torch.Tensor]]:
        inputs = processor(images=batch, text=[labels] * len(batch), return_tensors="pt").to(model.device)
        outputs = model(**inputs)
        sizes = [image.size[::-1] for image in batch]
        return processor.post_process_grounded_object_detection(
            outputs, threshold=0.0, target_sizes=sizes, text_labels=[labels] * len(batch)
        )

    pictures = [image for _, image in images]
    padded = tuple(processor(images=pictures, return_tensors="pt")["pixel_values"].shape[-2:])
    alone = [detect([image])[0] for image in pictures]
    record: dict[str, Any] = {"padded_batch_size": list(padded), "images": {}}
    for masked in (True, False):
        model.model.mask_batch_padding = masked
        start = time.perf_counter()
        batched = detect(pictures)
        record["masked_seconds" if masked else "unmasked_seconds"] = time.perf_counter() - start
        for (name, image), single, together in zip(images, alone, batched):
            own = tuple(processor(images=image, return_tensors="pt")["pixel_values"].shape[-2:])
            entry = record["images"].setdefault(name, {"own_padded_size": list(own)})
            entry["masked" if masked else "unmasked"] = _compare(single, together, top_k)
    model.model.mask_batch_padding = True
    return record


def synthetic_scenes(data_dir: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """Three held-out synthetic scenes of three sizes (128x128, two scenes side by side at 128x256, and a 96x128
    crop) and the 36 colour-shape labels: where a trained demo model has confident detections."""
    from PIL import Image

    from tasks.synthetic import split_paths
    from tasks.synthetic.generator import CATEGORIES

    folder = split_paths(data_dir, "val").image_dir
    first, second, third = (Image.open(f"{folder}/{index:06d}.png").convert("RGB") for index in (1001, 1002, 1003))
    wide = Image.new("RGB", (256, 128))
    wide.paste(first, (0, 0))
    wide.paste(second, (128, 0))
    scenes = [
        ("scene 128x128", third),
        ("scenes side by side 256x128", wide),
        ("crop 96x128", first.crop((0, 0, 96, 128))),
    ]
    return scenes, [category["name"] for category in CATEGORIES]


def run_batching(settings: Settings) -> dict[str, Any]:
    """Batch consistency (`tasks.benchmark.batching`): the trained demo model on synthetic scenes of three sizes
    (when `settings.trained_model` exists) and GLIP-T (random weights; tiny-random for smoke runs) on three photographs
    at GLIP's test size."""
    from glipv2 import Glipv2ForGrounding, Glipv2ImageProcessor, Glipv2Processor
    from tasks.benchmark.measure import build_glip, environment, load_tokenizer

    env = environment(settings)
    results: dict[str, Any] = {
        "environment": f"{env['date']}, {env['device']}, torch {env['torch']}, {env['threads']} threads",
        "models": {},
    }
    trained = settings.trained_model
    data_dir = os.path.join(os.path.dirname(os.path.abspath(trained)), "data") if trained else None
    if trained and data_dir and os.path.isdir(data_dir):
        model = Glipv2ForGrounding.from_pretrained(trained).eval().to(settings.device)
        processor = Glipv2Processor.from_pretrained(trained)
        settings_dict = {**processor.image_processor.to_dict(), "size": {"shortest_edge": 128, "longest_edge": 256}}
        processor.image_processor = Glipv2ImageProcessor.from_dict(settings_dict)  # its own settings, wider images
        scenes, labels = synthetic_scenes(data_dir)
        record = measure_batch_consistency(model, processor, scenes, labels)
        record["description"] = f"the trained demo model (scripts/demo.py), synthetic scenes, {len(labels)} labels"
        results["models"]["demo model (trained)"] = record
    model = build_glip(settings.smoke, settings.device)
    size = (
        {"shortest_edge": 128, "longest_edge": 213} if settings.smoke else {"shortest_edge": 800, "longest_edge": 1333}
    )
    processor = Glipv2Processor(
        image_processor=Glipv2ImageProcessor(size=size), tokenizer=load_tokenizer(settings.tokenizer)
    )
    record = measure_batch_consistency(model, processor, photographs(), list(PHOTO_LABELS))
    name = "tiny-random" if settings.smoke else "GLIP-T"
    record["description"] = f"{name} with random weights, scikit-image photographs, {len(PHOTO_LABELS)} labels"
    results["models"][f"{name} (random weights)"] = record
    return results


__all__ = [
    "PHOTO_LABELS",
    "TOP_K",
    "measure_batch_consistency",
    "photographs",
    "run_batching",
    "synthetic_scenes",
]
