"""Evaluation prompts built as a benchmark's official code builds them, and detection with exactly those prompts.

`detect_labels` splits a label list into prompts by token count. GLIP's benchmark evaluations form their prompts
differently: LVIS in chunks of a fixed number of categories (`TEST.CHUNKED_EVALUATION 40`), ODinW with per-dataset
caption prompts (`DATASETS.CAPTION_PROMPT`: a prefix and suffix around each name). `detect_labels(...,
prompts=...)` runs given prompts instead; [`predict_with_prompts`] is the detection task's `predict` with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from glipv2.processing_glipv2 import DEFAULT_SEPARATOR, Glipv2Prompt
from tasks.spec import Prediction, PredictOptions, TaskData


def chunked_prompts(
    processor: Any, labels: Sequence[str], labels_per_prompt: int, separator: str = DEFAULT_SEPARATOR
) -> list[Glipv2Prompt]:
    """GLIP's `TEST.CHUNKED_EVALUATION N` (`create_queries_and_maps_from_dataset`): consecutive chunks of
    `labels_per_prompt` labels, each joined as `create_queries_and_maps` joins them; `label_ids` index `labels`."""
    if labels_per_prompt < 1:
        raise ValueError(f"labels_per_prompt must be positive, got {labels_per_prompt}")
    prompts = []
    for start in range(0, len(labels), labels_per_prompt):
        prompt = processor.build_prompt(list(labels[start : start + labels_per_prompt]), separator=separator)
        prompts.append(dataclasses.replace(prompt, label_ids=[start + index for index in prompt.label_ids]))
    return prompts


def caption_prompt(
    labels: Sequence[str],
    affixes: Sequence[tuple[str, str, str]] | None = None,
    separator: str = DEFAULT_SEPARATOR,
) -> Glipv2Prompt:
    """One prompt for all `labels` as GLIP's `create_queries_and_maps` writes it.

    Without `affixes`, the labels joined by `separator`. With GLIP's `DATASETS.CAPTION_PROMPT` (per label, in
    order, `(prefix, name, suffix)`), label `i` is written `prefix + name + suffix` -- the caption prompt's `name`
    replaces the label -- and its span covers `name` only. A label with no word in it (ODinW's ChessPieces has a
    category named two spaces) stays in the text but gets no span: the official `create_positive_dict` finds no
    token for it and drops it, so it is never detected.
    """
    if affixes is not None and len(affixes) != len(labels):
        raise ValueError(f"{len(affixes)} caption-prompt entries for {len(labels)} labels")
    text, spans, label_ids = "", [], []
    for index, label in enumerate(labels):
        prefix, name, suffix = affixes[index] if affixes is not None else ("", label, "")
        text += prefix
        if name.strip():
            spans.append((len(text), len(text) + len(name)))
            label_ids.append(index)
        text += name + suffix
        if index != len(labels) - 1:
            text += separator
    return Glipv2Prompt(text=text, label_spans=spans, label_ids=label_ids)


def detections_to_predictions(
    records: list[dict[str, Any]], results: list[dict[str, Any]], category_ids: Sequence[int]
) -> list[Prediction]:
    """`detect_labels` results as the detection task's predictions: label indices become category ids, boxes
    absolute xyxy lists."""

    def as_list(tensor: Any) -> list:
        return tensor.detach().float().cpu().tolist()

    return [
        {
            "image_id": int(record["image_id"]),
            "boxes": as_list(result["boxes"]),
            "scores": as_list(result["scores"]),
            "labels": [int(category_ids[index]) for index in result["labels"].tolist()],
        }
        for record, result in zip(records, results)
    ]


def predict_with_prompts(
    model: Any,
    processor: Any,
    records: list[dict[str, Any]],
    data: TaskData,
    options: PredictOptions,
    *,
    labels: Sequence[str],
    category_ids: Sequence[int],
    prompts: list[Glipv2Prompt],
) -> list[Prediction]:
    """The detection task's `predict` with the given prompts: label `i` (`labels[i]`) is category
    `category_ids[i]`; `options.max_detections` caps each prompt's detections and then the image's."""
    from glipv2 import detect_labels
    from tasks.collate import load_rgb

    results = detect_labels(
        model,
        processor,
        [load_rgb(record["image"]) for record in records],
        list(labels),
        threshold=options.threshold,
        max_detections=options.max_detections,
        text_cache=options.text_cache,
        prompts=prompts,
    )
    return detections_to_predictions(records, results, category_ids)


__all__ = [
    "caption_prompt",
    "chunked_prompts",
    "detections_to_predictions",
    "predict_with_prompts",
]
