"""The instance segmentation task: COCO instances with masks (COCO-Mask, LVIS), trained as detection (grounding on
class-name prompts) plus the mask head's loss, scored by COCO mask mAP (`segm`), served by the
`instance-segmentation` pipeline (open vocabulary) and the stock `image-segmentation` pipeline (closed vocabulary)."""

from __future__ import annotations

import os
from typing import Any

from tasks.collate import load_rgb
from tasks.detection.prompts import detections_to_predictions
from tasks.detection.task import default_files, load
from tasks.detection.task import make_collator as detection_collator
from tasks.instance_segmentation.benchmarks import BENCHMARKS
from tasks.masks import encode_mask
from tasks.spec import HubCard, Prediction, PredictOptions, ShowcaseEntry, TaskData, TaskSpec
from tasks.transforms import clean_category_name


def make_collator(processor: Any, data: TaskData, **options: Any) -> Any:
    """Detection's collator (sampled class-name prompts, or the evaluation prompt with `fixed_prompt`) with each
    box's mask, resized and flipped with the image."""
    return detection_collator(processor, data, with_masks=True, **options)


def model_config(data: TaskData) -> dict[str, Any]:
    """Training masks needs the mask head."""
    return {"use_mask_head": True}


def predict(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """All categories of the dataset in chunked prompts (`detect_labels(..., return_masks=True)`): the detections
    among each chunk's mask candidates with their masks as COCO compressed RLEs at the original image size."""
    from glipv2 import detect_labels

    names = [clean_category_name(category["name"]) for category in data.categories]
    results = detect_labels(
        model,
        processor,
        [load_rgb(record["image"]) for record in records],
        names,
        threshold=options.threshold,
        max_detections=options.max_detections,
        text_cache=options.text_cache,
        return_masks=True,
    )
    predictions = detections_to_predictions(records, results, [int(category["id"]) for category in data.categories])
    for prediction, result in zip(predictions, results):
        prediction["masks"] = [encode_mask(mask) for mask in result["masks"]]
    return predictions


def score(metric: Any, predictions: list[Prediction], data: TaskData) -> dict[str, float]:
    """COCO mask mAP (`iou_type="segm"`) against the ground truth of the evaluated images."""
    return metric.compute(predictions=predictions, ground_truth=data.ground_truth, box_format="xyxy", iou_type="segm")


def showcase(model_dir: str, data: TaskData, photos: list[tuple[str, Any]], count: int = 2) -> list[ShowcaseEntry]:
    """The `instance-segmentation` pipeline with every category, and the stock `image-segmentation` pipeline on a
    closed-vocabulary copy of the model, on the first `count` records."""
    from transformers import pipeline

    from glipv2 import Glipv2ForSegmentation, Glipv2Processor

    labels = [category["name"] for category in data.categories]
    segmenter = pipeline("instance-segmentation", model=model_dir)
    processor = Glipv2Processor.from_pretrained(model_dir)
    closed = Glipv2ForSegmentation.from_pretrained(model_dir)
    closed.set_vocabulary(processor, labels)
    folder = os.path.join(os.path.dirname(os.path.abspath(model_dir)), "model_closed_vocabulary_masks")
    closed.save_pretrained(folder)
    processor.save_pretrained(folder)
    stock = pipeline("image-segmentation", model=folder)
    entries = []
    for index, record in enumerate(data.dataset.select(range(min(count, len(data.dataset))))):
        image = load_rgb(record["image"])
        found = segmenter(image, candidate_labels=labels, threshold=0.3)
        title = f"held-out {index}: instance-segmentation (all {len(labels)} classes)"
        entries.append(ShowcaseEntry(title, image, found))
        title = f"held-out {index}: image-segmentation (stock pipeline, closed vocabulary)"
        entries.append(ShowcaseEntry(title, image, stock(image, threshold=0.3)))
    return entries


_USAGE = (
    "from PIL import Image\nfrom transformers import pipeline\n\n"
    'segmenter = pipeline("instance-segmentation", model="{repo_id}", trust_remote_code=True)\n'
    'instances = segmenter(Image.open("image.jpg"), candidate_labels=["cat", "remote control"], threshold=0.3)\n'
    '# [{"score", "label", "box", "mask": PIL "L" image}, ...]\n'
)

TASK = TaskSpec(
    name="instance_segmentation",
    model_class_name="Glipv2ForInstanceSegmentation",
    head="mask_head",
    label_argument="labels",
    metric="coco_detection",
    load=load,
    default_files=default_files,
    make_collator=make_collator,
    predict=predict,
    score=score,
    card=HubCard(
        title="open-vocabulary instance segmentation",
        result_type="image-segmentation",
        result_name="Instance Segmentation (mask AP)",
        usage={"Glipv2ForInstanceSegmentation": _USAGE},
        tags=("instance-segmentation", "image-segmentation"),
    ),
    pipelines=("instance-segmentation", "image-segmentation"),
    showcase=showcase,
    options=("num_negatives", "fixed_prompt"),
    model_config=model_config,
    benchmarks=BENCHMARKS,
)

__all__ = ["TASK"]
