"""The phrase-grounding task: MDETR-style JSON (Flickr30k Entities, GoldG, RefCOCO), scored by Recall@1/5/10 at
IoU >= 0.5, served by the phrase-grounding pipeline."""

from __future__ import annotations

from typing import Any

import torch

from glipv2.post_processing import post_process_grounding
from tasks.collate import fit_caption, load_rgb, xywh_to_xyxy
from tasks.grounding.benchmarks import BENCHMARKS
from tasks.grounding.collator import GroundingCollator
from tasks.grounding.mdetr import load_mdetr_grounding, mention_boxes
from tasks.spec import DataFiles, HubCard, Prediction, PredictOptions, ShowcaseEntry, TaskData, TaskSpec
from tasks.synthetic import split_paths

# Grounding Recall@k needs at most this many ranked boxes per phrase (Flickr30k Entities reports k = 1, 5, 10).
RECALL_KS = (1, 5, 10)


def load(files: DataFiles, max_samples: int | None = None, **options: Any) -> TaskData:
    """MDETR grounding JSON -> one record per caption."""
    dataset = load_mdetr_grounding(files.annotation_file, files.image_dir, **options)
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(range(max_samples))
    return TaskData(dataset=dataset)


def default_files(data_dir: str, split: str) -> DataFiles:
    paths = split_paths(data_dir, split)
    return DataFiles(paths.image_dir, paths.grounding)


def make_collator(
    processor: Any, data: TaskData, with_masks: bool = False, category_labels: bool = False, **options: Any
) -> GroundingCollator:
    """The caption is the prompt; each box's positive-map row covers the tokens of its spans. `with_masks`: the
    boxes' masks too (the mask head then learns phrase masks: referring segmentation from grounding data).
    `category_labels`: the objects' `category_id` become `class_labels`, so one category's phrases in different
    images are positives of the inter-image region-word loss (for data whose phrases name their category)."""
    return GroundingCollator(processor, with_masks=bool(with_masks), category_labels=bool(category_labels), **options)


def _as_list(tensor: torch.Tensor) -> list:
    return tensor.detach().float().cpu().tolist()


def caption_phrases(record: dict[str, Any]) -> tuple[list[list[list[int]]], list[list[list[float]]]]:
    """The caption's phrases (each a list of ``[begin, end]`` spans) and each phrase's ground-truth xyxy boxes.

    With ``tokens_positive_eval`` (MDETR's Flickr30k files) a phrase is one mention, in sentence order, as MDETR,
    GLIP and mmdet evaluate: "a boy" and "he" are two phrases with the same boxes (those whose
    ``tokens_positive`` overlap the mention); a mention without a box is not evaluated, as the official evaluator
    drops phrases without boxes. Without it, the distinct ``tokens_positive`` span lists, first-seen order.
    """
    objects = record["objects"]
    mentions = record.get("tokens_positive_eval") or []
    if mentions:
        phrases = [(mention, mention_boxes(mention, objects)) for mention in mentions]
        phrases = [(mention, xywh_to_xyxy(boxes)) for mention, boxes in phrases if boxes]
        return [mention for mention, _ in phrases], [boxes for _, boxes in phrases]
    grouped: dict[tuple, list[list[float]]] = {}
    for spans, box in zip(objects["tokens_positive"], xywh_to_xyxy(objects["bbox"])):
        if spans:
            grouped.setdefault(tuple(tuple(span) for span in spans), []).append(box)
    return [[list(span) for span in key] for key in grouped], list(grouped.values())


def ground_phrases(
    model: Any,
    processor: Any,
    records: list[dict[str, Any]],
    phrases: list[list[list[list[int]]]],
    threshold: float = 0.0,
    max_detections: int = -1,
    top_k: int | None = max(RECALL_KS),
) -> list[list[dict[str, list]]]:
    """Per record, per phrase (``phrases[i]``: span lists into ``records[i]["caption"]``), its boxes ranked as GLIP
    ranks a phrase: the caption is the prompt, a box's score is the mean probability of the phrase's tokens times
    its centerness (``post_process_grounding``: candidates above ``threshold``, the official per-phrase NMS 0.6, the
    best ``max_detections`` of the caption, ``<= 0``: all). Returns ``{"boxes": [[x0, y0, x1, y1], ...],
    "scores": [...]}`` per phrase, best first, at most ``top_k`` (None: all), in original image pixels. A caption
    longer than the text limit is cut and the phrases past the cut get no box (a miss)."""
    images = [load_rgb(record["image"]) for record in records]
    fitted = [
        fit_caption(processor.tokenizer, record["caption"], spans, model.config.max_text_length)
        for record, spans in zip(records, phrases)
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
        if kept
        else torch.zeros((0, encoding["input_ids"].shape[1]))
        for index, (spans, kept) in enumerate(zip(phrases, rows))
    ]
    results = post_process_grounding(
        outputs.logits,
        outputs.pred_boxes,
        outputs.centerness,
        outputs.spatial_shapes,
        [positive_map.to(outputs.logits) for positive_map in positive_maps],
        threshold=threshold,
        max_detections=max_detections,
        target_sizes=[image.size[::-1] for image in images],
    )
    ranked = []
    for spans, kept, result in zip(phrases, rows, results):
        per_phrase: list[dict[str, list]] = [{"boxes": [], "scores": []} for _ in spans]
        for label, row in enumerate(kept):
            mine = result["labels"] == label
            boxes, scores = result["boxes"][mine], result["scores"][mine]
            if top_k is not None:
                boxes, scores = boxes[:top_k], scores[:top_k]
            per_phrase[row] = {"boxes": _as_list(boxes), "scores": _as_list(scores)}
        ranked.append(per_phrase)
    return ranked


def predict(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """Per caption phrase ([`caption_phrases`]: one per mention in MDETR's Flickr30k files), the boxes ranked by
    the phrase's score (mean token probability x centerness, after the official per-phrase NMS), every candidate
    box considered and the top ``max(RECALL_KS)`` kept, in original image pixels. A caption longer than the text
    limit is cut and the phrases past the cut count as misses."""
    phrases = [caption_phrases(record) for record in records]
    ranked = ground_phrases(model, processor, records, [spans for spans, _ in phrases])
    return [
        {
            "image_id": int(record["image_id"]),
            "phrases": [{"boxes": phrase["boxes"], "references": refs} for phrase, refs in zip(grounded, references)],
        }
        for record, (_, references), grounded in zip(records, phrases, ranked)
    ]


def score(metric: Any, predictions: list[Prediction], data: TaskData) -> dict[str, float]:
    """Recall@1/5/10 over every phrase (mention) of every caption (any-box protocol, IoU >= 0.5)."""
    phrases = [phrase for prediction in predictions for phrase in prediction["phrases"]]
    return metric.compute(
        predictions=[phrase["boxes"] for phrase in phrases],
        references=[phrase["references"] for phrase in phrases],
        ks=RECALL_KS,
    )


def showcase(model_dir: str, data: TaskData, photos: list[tuple[str, Any]], count: int = 3) -> list[ShowcaseEntry]:
    """The phrase-grounding pipeline on the first `count` captions, grounding each of their phrases."""
    from transformers import pipeline

    grounder = pipeline("phrase-grounding", model=model_dir)
    entries = []
    for index, record in enumerate(data.dataset.select(range(min(count, len(data.dataset))))):
        image = load_rgb(record["image"])
        spans = sorted({tuple(span) for spans in record["objects"]["tokens_positive"] for span in spans})
        phrases = grounder(image, record["caption"], spans=[list(span) for span in spans])
        found = [{"label": phrase["phrase"], **phrase["boxes"][0]} for phrase in phrases if phrase["boxes"]]
        entries.append(
            ShowcaseEntry(f"held-out {index}: phrase-grounding of \u201c{record['caption']}\u201d", image, found)
        )
    return entries


_USAGE = (
    "from PIL import Image\nfrom transformers import pipeline\n\n"
    'grounder = pipeline("phrase-grounding", model="{repo_id}", trust_remote_code=True)\n'
    'caption = "a cat lying next to a remote control"\n'
    'grounder(Image.open("image.jpg"), caption, phrases=["a cat", "a remote control"])\n'
)

TASK = TaskSpec(
    name="grounding",
    model_class_name="Glipv2ForGrounding",
    head="grounding_head",
    label_argument="labels",
    metric="grounding_recall",
    load=load,
    default_files=default_files,
    make_collator=make_collator,
    predict=predict,
    score=score,
    card=HubCard(
        title="phrase grounding",
        result_type="zero-shot-object-detection",
        result_name="Phrase Grounding",
        usage={"Glipv2ForGrounding": _USAGE},
        tags=("phrase-grounding",),
    ),
    pipelines=("phrase-grounding",),
    showcase=showcase,
    options=("with_masks", "category_labels"),
    benchmarks=BENCHMARKS,
)

__all__ = ["RECALL_KS", "TASK", "caption_phrases", "ground_phrases"]
