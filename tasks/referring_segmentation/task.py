"""The referring segmentation task: an expression and its object(s) -> a mask. Data: MDETR's refexp format (one
expression per record; RefCOCO/+/g with COCO's masks through `segmentation_file`, the synthetic
`refexp_<split>.json`) or PhraseCut's official files. Trained as grounding with masks; scored by mean IoU,
cumulative IoU and precision@0.5-0.9 (PhraseCut's evaluation); served by the `referring-segmentation` pipeline."""

from __future__ import annotations

import os
from typing import Any

import numpy
import torch

from tasks.collate import fit_caption, load_rgb
from tasks.grounding.collator import GroundingCollator
from tasks.grounding.mdetr import load_mdetr_grounding
from tasks.grounding.phrasecut import load_phrasecut
from tasks.masks import decode_rle, encode_mask, is_empty_mask, union_rle
from tasks.referring_segmentation.benchmarks import BENCHMARKS
from tasks.spec import DataFiles, HubCard, Prediction, PredictOptions, ShowcaseEntry, TaskData, TaskSpec
from tasks.synthetic import split_paths


def load(files: DataFiles, max_samples: int | None = None, **options: Any) -> TaskData:
    """One record per expression (the caption), its objects with their masks: PhraseCut's official
    `refer_<split>.json` (with `image_data_split.json` beside it, as the dataset ships them), else MDETR's refexp
    JSON."""
    if os.path.basename(files.annotation_file).startswith("refer_"):
        image_info = os.path.join(os.path.dirname(files.annotation_file), "image_data_split.json")
        dataset = load_phrasecut(files.annotation_file, image_info, files.image_dir, **options)
    else:
        dataset = load_mdetr_grounding(files.annotation_file, files.image_dir, **options)
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(range(max_samples))
    return TaskData(dataset=dataset)


def default_files(data_dir: str, split: str) -> DataFiles:
    paths = split_paths(data_dir, split)
    return DataFiles(paths.image_dir, paths.refexp)


def make_collator(processor: Any, data: TaskData, **options: Any) -> GroundingCollator:
    """The grounding collator with the objects' masks (the expression is the prompt)."""
    return GroundingCollator(processor, with_masks=True, **options)


def model_config(data: TaskData) -> dict[str, Any]:
    """Training masks needs the mask head."""
    return {"use_mask_head": True}


def expression_spans(record: dict[str, Any]) -> list[list[int]]:
    """The tokens that name the referred object(s): the union of the objects' `tokens_positive` spans, or the whole
    expression (stripped) when none has one."""
    spans = sorted({tuple(span) for spans in record["objects"]["tokens_positive"] for span in spans})
    return [list(span) for span in spans] or _whole_text(record["caption"])


def _whole_text(text: str) -> list[list[int]]:
    """One span over `text` without its surrounding spaces."""
    return [[len(text) - len(text.lstrip()), len(text.rstrip())]]


# The most confident anchors per image that get a mask when segmenting an expression: its best box is among them (the
# prompt is the expression alone), and the mask head's cost grows with their number: the demo's 253 held-out
# expressions take 5.0 s with 10, 29.3 s with the default 100, with the same metrics
EXPRESSION_MASK_CANDIDATES = 10


def segment_expressions(
    model: Any, processor: Any, records: list[dict[str, Any]], mask_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Per record the mask of its expression's best box: the caption is the prompt, a box's score the mean
    probability of the expression's tokens ([`expression_spans`]) times its centerness, among the
    `EXPRESSION_MASK_CANDIDATES` most confident anchors.
    Returns `{"mask": (H, W) bool at the original size, "score", "box"}` (an empty mask and score 0 when no box)."""
    images = [load_rgb(record["image"]) for record in records]
    captions, spans = [], []
    for record in records:
        named = expression_spans(record)
        caption, _, _ = fit_caption(processor.tokenizer, record["caption"], [named], model.config.max_text_length)
        # an expression longer than the text limit is cut: its spans end with the cut caption
        kept = [[begin, min(end, len(caption))] for begin, end in named if begin < len(caption)]
        captions.append(caption)
        spans.append(kept or _whole_text(caption))
    encoding = processor.tokenizer(captions, padding="longest", return_tensors="pt")
    pixels = processor(images=images, return_tensors="pt").to(model.device)
    outputs = model(
        pixel_values=pixels["pixel_values"].to(model.dtype),
        pixel_mask=pixels["pixel_mask"],
        input_ids=encoding["input_ids"].to(model.device),
        attention_mask=encoding["attention_mask"].to(model.device),
        mask_candidates=EXPRESSION_MASK_CANDIDATES,
    )
    positive_maps = [
        processor.positive_map(encoding, [spans[index]], batch_index=index, text=captions[index])
        for index in range(len(records))
    ]
    sizes = [image.size[::-1] for image in images]
    results = processor.image_processor.post_process_instance_segmentation(
        outputs,
        threshold=0.0,
        mask_threshold=mask_threshold,
        target_sizes=sizes,
        return_binary_maps=True,
        top_k=1,
        positive_maps=[positive_map.to(outputs.logits) for positive_map in positive_maps],
    )
    segmented = []
    for (height, width), result in zip(sizes, results):
        if len(result["scores"]) == 0:
            segmented.append({"mask": torch.zeros(height, width, dtype=torch.bool), "score": 0.0, "box": None})
            continue
        box = result["boxes"][0].tolist()
        segmented.append({"mask": result["segmentation"][0], "score": float(result["scores"][0]), "box": box})
    return segmented


def reference_mask(record: dict[str, Any]) -> dict[str, Any]:
    """The ground truth of a record: PhraseCut's `gt_mask`, else the union of its objects' masks (an RLE at the
    original size)."""
    if record.get("gt_mask") and not is_empty_mask(record["gt_mask"]):
        return record["gt_mask"]
    masks = [rle for rle in record["objects"]["mask"] if not is_empty_mask(rle)]
    if not masks:
        raise ValueError(
            f"image id={record.get('image_id')} ({record.get('caption')!r}): no object has a mask to evaluate "
            "(give the loader segmentation_file= for MDETR's RefCOCO files)"
        )
    return union_rle(masks)


def predict(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """Per expression its predicted mask (RLE at the original size) and the reference: the union of the referred
    objects' masks."""
    segmented = segment_expressions(model, processor, records)
    return [
        {
            "image_id": int(record["image_id"]),
            "mask": encode_mask(result["mask"]),
            "score": result["score"],
            "reference": reference_mask(record),
        }
        for record, result in zip(records, segmented)
    ]


def score(metric: Any, predictions: list[Prediction], data: TaskData) -> dict[str, float]:
    """Mean IoU, cumulative IoU and precision@0.5..0.9 over the expressions (PhraseCut's evaluation)."""
    return metric.compute(
        predictions=[prediction["mask"] for prediction in predictions],
        references=[[prediction["reference"]] for prediction in predictions],
    )


def showcase(model_dir: str, data: TaskData, photos: list[tuple[str, Any]], count: int = 3) -> list[ShowcaseEntry]:
    """The `referring-segmentation` pipeline on the first `count` expressions, with each mask's IoU."""
    from transformers import pipeline

    refer = pipeline("referring-segmentation", model=model_dir)
    entries = []
    for index, record in enumerate(data.dataset.select(range(min(count, len(data.dataset))))):
        image = load_rgb(record["image"])
        result = refer(image, record["caption"])
        truth, predicted = decode_rle(reference_mask(record)).astype(bool), numpy.asarray(result["mask"]) > 0
        iou = float((truth & predicted).sum() / max((truth | predicted).sum(), 1))
        found = [{"label": record["caption"], "score": result["score"], "box": result["box"], "mask": result["mask"]}]
        title = f"held-out {index}: referring-segmentation of \u201c{record['caption']}\u201d"
        entries.append(ShowcaseEntry(title, image, found if result["box"] else [], f"mask IoU {iou:.2f}"))
    return entries


_USAGE = (
    "from PIL import Image\nfrom transformers import pipeline\n\n"
    'refer = pipeline("referring-segmentation", model="{repo_id}", trust_remote_code=True)\n'
    'result = refer(Image.open("image.jpg"), "the cat on the left")\n'
    'result["mask"]  # PIL "L" image, 255 inside\n'
)

TASK = TaskSpec(
    name="referring_segmentation",
    model_class_name="Glipv2ForInstanceSegmentation",
    head="mask_head",
    label_argument="labels",
    metric="referring_segmentation",
    load=load,
    default_files=default_files,
    make_collator=make_collator,
    predict=predict,
    score=score,
    card=HubCard(
        title="referring segmentation",
        result_type="image-segmentation",
        result_name="Referring Segmentation",
        usage={"Glipv2ForInstanceSegmentation": _USAGE},
        tags=("referring-segmentation",),
    ),
    pipelines=("referring-segmentation",),
    showcase=showcase,
    model_config=model_config,
    benchmarks=BENCHMARKS,
)

__all__ = ["TASK", "expression_spans", "reference_mask", "segment_expressions"]
