"""The detection task: COCO instances (also ODinW, LVIS), trained as grounding on class-name prompts, scored by COCO
box mAP, served by the open-vocabulary and closed-vocabulary detection pipelines."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tasks.collate import load_rgb
from tasks.common import read_json
from tasks.detection.benchmarks import BENCHMARKS
from tasks.detection.coco import load_coco_detection
from tasks.detection.collator import DetectionCollator, FixedPromptDetectionCollator
from tasks.detection.prompts import detections_to_predictions
from tasks.spec import DataFiles, HubCard, Prediction, PredictOptions, ShowcaseEntry, TaskData, TaskSpec
from tasks.synthetic import split_paths
from tasks.transforms import clean_category_name

# Labels tried on real photographs in the demo: everyday objects the synthetic data never shows, and two it does.
PHOTO_LABELS = ("person", "cat", "cup", "face", "red circle", "blue square")


def restrict_coco_ground_truth(ground_truth: dict[str, Any], image_ids: Sequence[int]) -> dict[str, Any]:
    """The COCO JSON with only `image_ids` and their annotations (COCOeval scores every image it holds)."""
    keep = set(int(image_id) for image_id in image_ids)
    return {
        **ground_truth,
        "images": [image for image in ground_truth["images"] if image["id"] in keep],
        "annotations": [a for a in ground_truth.get("annotations", []) if a["image_id"] in keep],
    }


def load(files: DataFiles, max_samples: int | None = None, **options: Any) -> TaskData:
    """COCO instances -> records, categories (original ids) and the ground truth of the selected images."""
    dataset, categories = load_coco_detection(files.annotation_file, files.image_dir, **options)
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(range(max_samples))
    ground_truth = restrict_coco_ground_truth(read_json(files.annotation_file), dataset["image_id"])
    return TaskData(dataset=dataset, categories=categories, ground_truth=ground_truth)


def default_files(data_dir: str, split: str) -> DataFiles:
    paths = split_paths(data_dir, split)
    return DataFiles(paths.image_dir, paths.instances)


def make_collator(
    processor: Any, data: TaskData, num_negatives: int | None = None, fixed_prompt: bool = False, **options: Any
) -> DetectionCollator:
    """Sampled, shuffled class-name prompts with up to `num_negatives` absent classes (official: 85); with
    `fixed_prompt` every image gets the evaluation prompt (all categories in order, GLIP's `DISABLE_SHUFFLE`);
    `with_masks`: each box's mask too, for the mask head (what the `instance_segmentation` task trains on)."""
    if num_negatives is not None:
        options["num_negatives"] = int(num_negatives)
    collator = FixedPromptDetectionCollator if fixed_prompt else DetectionCollator
    return collator(processor, data.categories, **options)


def predict(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """All categories of the dataset, in chunked prompts (`detect_labels`); labels become the original category
    ids, boxes absolute xyxy in the original image."""
    from glipv2 import detect_labels

    names = [clean_category_name(category["name"]) for category in data.categories]  # as the official eval
    category_ids = [int(category["id"]) for category in data.categories]
    results = detect_labels(
        model,
        processor,
        [load_rgb(record["image"]) for record in records],
        names,
        threshold=options.threshold,
        max_detections=options.max_detections,
        text_cache=options.text_cache,
    )
    return detections_to_predictions(records, results, category_ids)


def score(metric: Any, predictions: list[Prediction], data: TaskData) -> dict[str, float]:
    """COCO box mAP against the ground truth of the evaluated images."""
    return metric.compute(predictions=predictions, ground_truth=data.ground_truth, box_format="xyxy")


def _closed_vocabulary_pipeline(model_dir: str, labels: list[str]) -> Any:
    """The stock `object-detection` pipeline on a closed-vocabulary copy of the model (vocabulary `labels`)."""
    from transformers import pipeline

    from glipv2 import Glipv2ForObjectDetection, Glipv2Processor

    processor = Glipv2Processor.from_pretrained(model_dir)
    detector = Glipv2ForObjectDetection.from_pretrained(model_dir)
    detector.set_vocabulary(processor, labels)
    folder = os.path.join(os.path.dirname(os.path.abspath(model_dir)), "model_closed_vocabulary")
    detector.save_pretrained(folder)
    processor.save_pretrained(folder)
    return pipeline("object-detection", model=folder)


def showcase(model_dir: str, data: TaskData, photos: list[tuple[str, Any]], count: int = 3) -> list[ShowcaseEntry]:
    """Open-vocabulary and closed-vocabulary detection of every category on the first `count` records; the stock
    zero-shot pipeline on real photographs."""
    from transformers import pipeline

    labels = [category["name"] for category in data.categories]
    open_vocabulary = pipeline("open-vocabulary-detection", model=model_dir)
    zero_shot = pipeline("zero-shot-object-detection", model=model_dir)
    closed = _closed_vocabulary_pipeline(model_dir, labels)
    entries = []
    for index, record in enumerate(data.dataset.select(range(min(count, len(data.dataset))))):
        image = load_rgb(record["image"])
        found = open_vocabulary(image, candidate_labels=labels, threshold=0.3)
        title = f"held-out {index}: open-vocabulary-detection (all {len(labels)} classes)"
        entries.append(ShowcaseEntry(title, image, found))
        title = f"held-out {index}: object-detection (closed vocabulary)"
        entries.append(ShowcaseEntry(title, image, closed(image, threshold=0.3)))
    for name, photo in photos:
        found = zero_shot(photo, candidate_labels=list(PHOTO_LABELS), threshold=0.2)
        entries.append(ShowcaseEntry(f"photo {name}: zero-shot-object-detection (stock pipeline)", photo, found))
    return entries


_OPEN_VOCABULARY_USAGE = (
    "from PIL import Image\nfrom transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, pipeline\n\n"
    'image = Image.open("image.jpg")\n'
    'detector = pipeline("zero-shot-object-detection", model="{repo_id}", trust_remote_code=True)\n'
    'detector(image, candidate_labels=["cat", "remote control"], threshold=0.3)\n\n'
    "# all labels in one pass per prompt chunk (LVIS-size vocabularies are chunked)\n"
    'detector = pipeline("open-vocabulary-detection", model="{repo_id}", trust_remote_code=True)\n'
    'detector(image, candidate_labels=["cat", "remote control"], threshold=0.3)\n\n'
    'model = AutoModelForZeroShotObjectDetection.from_pretrained("{repo_id}", trust_remote_code=True)\n'
    'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)\n'
    'inputs = processor(images=image, text=["cat", "remote control"], return_tensors="pt")\n'
    "results = processor.post_process_grounded_object_detection(\n"
    "    model(**inputs), threshold=0.3, target_sizes=[image.size[::-1]]\n)\n"
)
_CLOSED_VOCABULARY_USAGE = (
    "from PIL import Image\nfrom transformers import pipeline\n\n"
    "# the label set is stored in the config (`id2label`): no prompt is needed\n"
    'detector = pipeline("object-detection", model="{repo_id}", trust_remote_code=True)\n'
    'detector(Image.open("image.jpg"), threshold=0.3)\n'
)

TASK = TaskSpec(
    name="detection",
    model_class_name="Glipv2ForGrounding",
    head="grounding_head",
    label_argument="labels",
    metric="coco_detection",
    load=load,
    default_files=default_files,
    make_collator=make_collator,
    predict=predict,
    score=score,
    card=HubCard(
        title="open-vocabulary and closed-vocabulary object detection",
        result_type="object-detection",
        result_name="Object Detection",
        usage={"Glipv2ForGrounding": _OPEN_VOCABULARY_USAGE, "Glipv2ForObjectDetection": _CLOSED_VOCABULARY_USAGE},
        tags=("zero-shot-object-detection", "open-vocabulary-detection", "object-detection"),
    ),
    pipelines=("open-vocabulary-detection", "zero-shot-object-detection", "object-detection"),
    showcase=showcase,
    options=("num_negatives", "fixed_prompt", "with_masks"),
    benchmarks=BENCHMARKS,
)

__all__ = ["TASK", "restrict_coco_ground_truth"]
