"""The evaluation loop shared by ``scripts/evaluate.py`` and training: per-task predictions, sharded over the
processes of an ``Accelerator``, gathered without duplicates or drops, scored on the main process.

Each task has a ``predict`` function (a batch of records -> one JSON-serialisable prediction per record) and a
``score`` function (all predictions -> the metric's numbers); :mod:`tasks.registry` ties them to a task name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import torch
from accelerate import Accelerator

from tasks.collators import fit_caption, load_rgb, xywh_to_xyxy
from tasks.transforms import clean_category_name

# Official GLIP test-time settings: MODEL.ATSS.INFERENCE_TH 0.05, TEST.DETECTIONS_PER_IMG 100.
DETECTION_THRESHOLD = 0.05
MAX_DETECTIONS = 100
# Grounding Recall@k needs at most this many ranked boxes per phrase (Flickr30k Entities reports k = 1, 5, 10).
RECALL_KS = (1, 5, 10)
# Captions are generated with at most this many new tokens (COCO captions are ~10 words).
MAX_CAPTION_TOKENS = 32


@dataclasses.dataclass
class TaskData:
    """A task's evaluation data: the records plus what the metric needs besides predictions.

    Attributes:
        dataset: records from the task's loader (``datasets.Dataset``), already cut to ``max_samples``.
        categories: detection only, ``[{"id", "name"}]`` in file order (the original category ids are kept).
        ground_truth: detection only, the COCO instances JSON restricted to the images of ``dataset``.
    """

    dataset: datasets.Dataset
    categories: list[dict[str, Any]] | None = None
    ground_truth: dict[str, Any] | None = None


@dataclasses.dataclass
class PredictOptions:
    """Inference settings of :func:`run_evaluation` (the defaults are the official test-time ones)."""

    threshold: float = DETECTION_THRESHOLD
    max_detections: int = MAX_DETECTIONS
    max_caption_tokens: int = MAX_CAPTION_TOKENS
    # Encoded detection prompts; run_evaluation gives every run a fresh one. (detect_labels' default cache is
    # keyed by id(model): during training it would serve text features from before the last optimiser steps.)
    text_cache: Any = None


Prediction = dict[str, Any]
PredictFn = Callable[[Any, Any, list[dict[str, Any]], TaskData, PredictOptions], list[Prediction]]
ScoreFn = Callable[[Any, list[Prediction], TaskData], dict[str, float]]


def _as_list(tensor: torch.Tensor) -> list:
    return tensor.detach().float().cpu().tolist()


# ---------------------------------------------------------------------------------------------------- detection
def predict_detection(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """All categories of the dataset, in chunked prompts (``detect_labels``); labels become the original
    category ids, boxes absolute xyxy in the original image."""
    from glipv2.pipelines_glipv2 import detect_labels

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
    return [
        {
            "image_id": int(record["image_id"]),
            "boxes": _as_list(result["boxes"]),
            "scores": _as_list(result["scores"]),
            "labels": [category_ids[index] for index in result["labels"].tolist()],
        }
        for record, result in zip(records, results)
    ]


def score_detection(metric: Any, predictions: list[Prediction], data: TaskData) -> dict[str, float]:
    """COCO box mAP against the ground truth of the evaluated images."""
    return metric.compute(predictions=predictions, ground_truth=data.ground_truth, box_format="xyxy")


def restrict_coco_ground_truth(ground_truth: dict[str, Any], image_ids: Sequence[int]) -> dict[str, Any]:
    """The COCO JSON with only ``image_ids`` and their annotations (COCOeval scores every image it holds)."""
    keep = set(int(image_id) for image_id in image_ids)
    return {
        **ground_truth,
        "images": [image for image in ground_truth["images"] if image["id"] in keep],
        "annotations": [annotation for annotation in ground_truth["annotations"] if annotation["image_id"] in keep],
    }


# ---------------------------------------------------------------------------------------------------- grounding
def caption_phrases(record: dict[str, Any]) -> tuple[list[list[list[int]]], list[list[list[float]]]]:
    """The caption's phrases (distinct span lists, first-seen order) and each phrase's ground-truth xyxy boxes."""
    objects = record["objects"]
    phrases: dict[tuple, list[list[float]]] = {}
    for spans, box in zip(objects["tokens_positive"], xywh_to_xyxy(objects["bbox"])):
        if spans:
            phrases.setdefault(tuple(tuple(span) for span in spans), []).append(box)
    return [[list(span) for span in key] for key in phrases], list(phrases.values())


def _ranked_boxes(result: dict[str, torch.Tensor], rows: list[int], num_phrases: int) -> list[list[list[float]]]:
    """Per phrase, its boxes by decreasing score (top ``max(RECALL_KS)``); ``rows[k]`` is the phrase of label k,
    and a phrase cut off with its caption gets no box (a miss)."""
    ranked: list[list[list[float]]] = [[] for _ in range(num_phrases)]
    for label, row in enumerate(rows):
        ranked[row] = _as_list(result["boxes"][result["labels"] == label][: max(RECALL_KS)])
    return ranked


def predict_grounding(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """Per caption phrase, the boxes ranked by the phrase's score (mean token probability x centerness, after the
    official per-phrase NMS), the top ``max(RECALL_KS)`` kept, in original image pixels. A caption longer than
    the text limit is cut and the phrases past the cut count as misses."""
    from glipv2.post_processing import post_process_grounding

    images = [load_rgb(record["image"]) for record in records]
    phrases = [caption_phrases(record) for record in records]
    fitted = [
        fit_caption(processor.tokenizer, record["caption"], spans, model.config.max_text_length)
        for record, (spans, _) in zip(records, phrases)
    ]
    captions = [caption for caption, _, _ in fitted]
    rows = [[row for row, keep in enumerate(keeps) if keep] for _, keeps, _ in fitted]
    # Tokenized as the processor does (padding to the longest caption), kept as a BatchEncoding for char_to_token.
    encoding = processor.tokenizer(captions, padding="longest", return_tensors="pt")
    pixels = processor(images=images, return_tensors="pt").to(model.device)
    outputs = model(
        pixel_values=pixels["pixel_values"].to(model.dtype),
        pixel_mask=pixels["pixel_mask"],
        input_ids=encoding["input_ids"].to(model.device),
        attention_mask=encoding["attention_mask"].to(model.device),
    )
    positive_maps = [
        processor.positive_map(encoding, [spans[row] for row in kept], batch_index=index, text=captions[index])
        for index, ((spans, _), kept) in enumerate(zip(phrases, rows))
    ]
    results = post_process_grounding(
        outputs.logits,
        outputs.pred_boxes,
        outputs.centerness,
        outputs.spatial_shapes,
        [positive_map.to(outputs.logits) for positive_map in positive_maps],
        threshold=0.0,
        max_detections=-1,
        target_sizes=[image.size[::-1] for image in images],
    )
    predictions = []
    for record, (spans, references), kept, result in zip(records, phrases, rows, results):
        ranked = _ranked_boxes(result, kept, len(spans))
        predictions.append(
            {
                "image_id": int(record["image_id"]),
                "phrases": [{"boxes": boxes, "references": refs} for boxes, refs in zip(ranked, references)],
            }
        )
    return predictions


def score_grounding(metric: Any, predictions: list[Prediction], data: TaskData) -> dict[str, float]:
    """Recall@1/5/10 over every phrase of every caption (any-box protocol, IoU >= 0.5)."""
    phrases = [phrase for prediction in predictions for phrase in prediction["phrases"]]
    return metric.compute(
        predictions=[phrase["boxes"] for phrase in phrases],
        references=[phrase["references"] for phrase in phrases],
        ks=RECALL_KS,
    )


# ---------------------------------------------------------------------------------------------- vqa, captioning
def predict_vqa(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """The highest-scoring answer of ``model.config.id2label`` per question."""
    images = [load_rgb(record["image"]) for record in records]
    inputs = processor(images=images, text=[record["question"] for record in records], return_tensors="pt")
    inputs = inputs.to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    logits = model(**inputs).logits
    id2label = model.config.id2label
    return [
        {
            "question_id": int(record["question_id"]),
            "answer": id2label[int(index)],
            "references": list(record["answers"]),
            "answer_type": record.get("answer_type", ""),
        }
        for record, index in zip(records, logits.argmax(-1).tolist())
    ]


def score_vqa(metric: Any, predictions: list[Prediction], data: TaskData) -> dict[str, float]:
    """Official VQAv2 accuracy, overall and per answer type."""
    answer_types = [prediction["answer_type"] for prediction in predictions]
    return metric.compute(
        predictions=[prediction["answer"] for prediction in predictions],
        references=[prediction["references"] for prediction in predictions],
        answer_types=answer_types if all(answer_types) else None,
    )


def predict_captioning(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """A generated caption per image (``model.generate`` from pixels alone)."""
    images = [load_rgb(record["image"]) for record in records]
    pixels = processor(images=images, return_tensors="pt").to(model.device)
    generated = model.generate(
        pixel_values=pixels["pixel_values"].to(model.dtype),
        pixel_mask=pixels["pixel_mask"],
        max_new_tokens=options.max_caption_tokens,
    )
    captions = processor.tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [
        {"image_id": int(record["image_id"]), "caption": caption.strip(), "references": list(record["captions"])}
        for record, caption in zip(records, captions)
    ]


def score_captioning(metric: Any, predictions: list[Prediction], data: TaskData) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap)."""
    return metric.compute(
        predictions=[prediction["caption"] for prediction in predictions],
        references=[prediction["references"] for prediction in predictions],
    )


# ------------------------------------------------------------------------------------------------------- the loop
class _IndexedDataset(torch.utils.data.Dataset):
    """``(index, record)`` pairs, so gathered predictions can be checked for duplicates and drops."""

    def __init__(self, dataset: datasets.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, dict[str, Any]]:
        return index, self.dataset[index]


def _collate_records(batch: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    return batch


def gather_predictions(
    accelerator: Accelerator,
    predict: Callable[[list[dict[str, Any]]], list[Prediction]],
    dataset: datasets.Dataset,
    batch_size: int,
) -> list[Prediction] | None:
    """Run ``predict`` on this process's shard of ``dataset`` and gather every prediction on the main process.

    ``accelerator.gather_for_metrics`` drops the samples the sharded loader repeats to even out the last batch;
    the sample indices are then checked (each exactly once) and the predictions returned in dataset order.
    Returns None on the other processes.
    """
    loader = torch.utils.data.DataLoader(
        _IndexedDataset(dataset), batch_size=batch_size, shuffle=False, collate_fn=_collate_records
    )
    loader = accelerator.prepare_data_loader(loader, device_placement=False)
    gathered: list[tuple[int, Prediction]] = []
    for batch in loader:
        indices = [index for index, _ in batch]
        with torch.no_grad():
            predictions = predict([record for _, record in batch])
        gathered.extend(accelerator.gather_for_metrics(list(zip(indices, predictions)), use_gather_object=True))
    if not accelerator.is_main_process:
        return None
    indices = sorted(index for index, _ in gathered)
    if indices != list(range(len(dataset))):
        raise RuntimeError(
            f"gathered {len(indices)} predictions for {len(dataset)} samples ({len(set(indices))} distinct): "
            "samples were duplicated or dropped across processes"
        )
    return [prediction for _, prediction in sorted(gathered, key=lambda item: item[0])]


def run_evaluation(
    accelerator: Accelerator,
    model: Any,
    processor: Any,
    data: TaskData,
    predict: PredictFn,
    score: ScoreFn,
    metric: Any,
    batch_size: int = 8,
    options: PredictOptions | None = None,
) -> tuple[dict[str, float], list[Prediction]] | None:
    """Evaluate ``model`` on ``data``: ``(metrics, predictions)`` on the main process, None elsewhere.

    Call it on every process (predictions are gathered collectively). ``model`` (unwrapped, already on
    ``accelerator.device``) runs in eval mode and gets its previous train/eval mode back afterwards.
    """
    from glipv2.pipelines_glipv2 import Glipv2TextCache

    options = dataclasses.replace(options or PredictOptions(), text_cache=Glipv2TextCache())
    was_training = model.training
    model.eval()
    try:
        predictions = gather_predictions(
            accelerator,
            lambda records: predict(model, processor, records, data, options),
            data.dataset,
            batch_size,
        )
    finally:
        model.train(was_training)
    if predictions is None:
        return None
    return score(metric, predictions, data), predictions


__all__ = [
    "PredictOptions",
    "TaskData",
    "caption_phrases",
    "gather_predictions",
    "predict_captioning",
    "predict_detection",
    "predict_grounding",
    "predict_vqa",
    "restrict_coco_ground_truth",
    "run_evaluation",
    "score_captioning",
    "score_detection",
    "score_grounding",
    "score_vqa",
]
