"""LVIS v1 box AP under the LVIS protocol, with GLIP's LVIS evaluation settings: `lvis-minival` and `lvis-val`.

GLIP (microsoft/GLIP `README.md` "LVIS Evaluation", `configs/lvis/minival.yaml`, `configs/lvis/val.yaml`) runs
`TEST.CHUNKED_EVALUATION 40` (the categories, sorted by id, in prompts of 40 names each, cleaned by `clean_name`)
and `DETECTIONS_PER_IMG 300`. The images are COCO's: each image's path is the split folder and file name that end
its `coco_url` (`val2017/000000397133.jpg`), under the COCO root, as GLIP's `LvisDetection`, detectron2 and
mmdetection take it. The scores are the LVIS API's (`tasks/metrics/lvis_detection`): its standard AP (300
detections per image) and the Fixed AP GLIP reports (10,000 detections per category over the split).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any

import torch

from glipv2.box_ops import xyxy_to_xywh
from glipv2.processing_glipv2 import Glipv2Prompt
from tasks.common import RecordChecker
from tasks.detection.prompts import chunked_prompts, detections_to_predictions
from tasks.metrics.coco_detection.coco_detection import to_coco_results, to_coco_segm_results
from tasks.metrics.lvis_detection.lvis_detection import (
    FIXED_AP_DETECTIONS_PER_CATEGORY,
    FREQUENCIES,
    MAX_DETECTIONS_PER_IMAGE,
    TopDetectionsPerCategory,
    evaluate_lvis_fixed_ap,
    limit_detections_per_image,
)
from tasks.protocol import Benchmark, BenchmarkResult, BenchmarkRun
from tasks.spec import MAX_DETECTIONS, DataFiles, Prediction, PredictOptions, TaskData

# GLIP's README command: TEST.CHUNKED_EVALUATION 40, MODEL.ATSS.DETECTIONS_PER_IMG 300.
CATEGORIES_PER_PROMPT = 40
DETECTIONS_PER_PROMPT = MAX_DETECTIONS_PER_IMAGE


def check_lvis_annotations(data: dict[str, Any], file: str) -> None:
    """The LVIS fields federated evaluation needs, checked before any image is run: each category's `frequency`
    (`r`, `c` or `f`), each image's `neg_category_ids` and `not_exhaustive_category_ids` (lists of known category
    ids). Raises `Glipv2DataError` naming the file, the record and the field."""
    checker = RecordChecker(file)
    known = set()
    for index, category in enumerate(checker.get(data, "categories", list, "<root>")):
        record = f"category id={category.get('id')!r}" if isinstance(category, dict) else f"category index {index}"
        known.add(category.get("id") if isinstance(category, dict) else None)
        frequency = checker.get(category, "frequency", str, record)
        if frequency not in FREQUENCIES:
            raise checker.fail(record, "frequency", f"expected one of {list(FREQUENCIES)}, got {frequency!r}")
    for image in checker.get(data, "images", list, "<root>"):
        record = f"image id={image.get('id')!r}" if isinstance(image, dict) else "image entry"
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            ids = checker.get(image, key, list, record)
            unknown = [value for value in ids if type(value) is not int or value not in known]
            if unknown:
                raise checker.fail(record, key, f"not category ids of this file: {unknown[:5]}")


def lvis_labels(categories: list[dict[str, Any]]) -> tuple[list[str], list[int]]:
    """The categories sorted by id (GLIP: `create_queries_and_maps_from_dataset` sorts the keys) as prompt labels
    (`clean_name` of each `name`) and their ids."""
    from tasks.transforms import clean_category_name

    ordered = sorted(categories, key=lambda category: int(category["id"]))
    return [clean_category_name(c["name"]) for c in ordered], [int(c["id"]) for c in ordered]


def predict_lvis(
    model: Any,
    processor: Any,
    records: list[dict[str, Any]],
    data: TaskData,
    options: PredictOptions,
    *,
    labels: list[str],
    category_ids: list[int],
    prompts: list[Glipv2Prompt],
    fixed: TopDetectionsPerCategory,
    masks: bool = False,
) -> list[Prediction]:
    """GLIP's LVIS inference: every prompt keeps its `options.max_detections` best detections (GLIP's
    `DETECTIONS_PER_IMG` applies to each chunked query); all of them go to `fixed` (Fixed AP has no per-image
    limit); the image's prediction is its 300 best over all prompts (the LVIS API's limit). With `masks` (a model
    with a mask head) each detection also has its mask (`"masks"`: RLEs at the image's size)."""
    from glipv2 import detect_labels
    from glipv2.post_processing import paste_masks
    from tasks.collate import load_rgb
    from tasks.masks import encode_mask

    prompt_of = torch.empty(len(labels), dtype=torch.long)
    for index, prompt in enumerate(prompts):
        prompt_of[prompt.label_ids] = index
    images = [load_rgb(record["image"]) for record in records]
    results = detect_labels(
        model,
        processor,
        images,
        labels,
        threshold=options.threshold,
        max_detections=0,
        text_cache=options.text_cache,
        prompts=prompts,
        return_masks="logits" if masks else False,
    )
    capped = []
    keys = ("scores", "boxes", "labels", "mask_logits") if masks else ("scores", "boxes", "labels")
    for record, result in zip(records, results):
        keep = _best_per_prompt(prompt_of[result["labels"].cpu()], options.max_detections)
        result = {key: result[key][keep.to(result[key].device)] for key in keys}
        boxes = xyxy_to_xywh(result["boxes"].detach().float().cpu().double())
        ids = [category_ids[index] for index in result["labels"].tolist()]
        fixed.add(int(record["image_id"]), boxes.numpy(), result["scores"].detach().float().cpu().numpy(), ids)
        capped.append({key: value[:MAX_DETECTIONS_PER_IMAGE] for key, value in result.items()})
    predictions = detections_to_predictions(records, capped, category_ids)
    if masks:  # pasted only for the detections kept
        for prediction, result, image in zip(predictions, capped, images):
            pasted = paste_masks(result["mask_logits"], result["boxes"], image.height, image.width) > 0.5
            prediction["masks"] = [encode_mask(mask) for mask in pasted]
    return predictions


def _best_per_prompt(prompt_index: torch.Tensor, limit: int) -> torch.Tensor:
    """Positions (in order) of the first `limit` detections of each prompt in a list sorted by decreasing score:
    each prompt's own best `limit` (`detect_labels` merges the prompts' lists by a stable sort)."""
    if limit <= 0 or prompt_index.numel() == 0:
        return torch.arange(prompt_index.numel())
    order = torch.sort(prompt_index, stable=True).indices
    sorted_prompts = prompt_index[order]
    starts = torch.searchsorted(sorted_prompts, sorted_prompts, right=False)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel()) - starts
    return torch.nonzero(rank < limit).flatten()


def run_lvis(run: BenchmarkRun, masks: bool = False) -> BenchmarkResult | None:
    """LVIS box AP (and Fixed AP): every image of the split's LVIS file, its categories in prompts of 40. With
    `masks`: LVIS mask AP of the same detections (a model with a mask head; no Fixed AP, which GLIP defines for
    boxes)."""
    from accelerate.utils import gather_object

    from tasks.detection.task import load
    from tasks.evaluation import predict_dataset

    for key in run.benchmark.files[run.split]:
        run.file(key)  # every official file and image folder is there before anything runs
    files = DataFiles(image_dir=run.root, annotation_file=run.file("annotation_file"))
    data = load(files, run.max_samples, prefer_coco_url=True)
    check_lvis_annotations(data.ground_truth, files.annotation_file)
    labels, category_ids = lvis_labels(data.categories)
    prompts = chunked_prompts(run.processor(), labels, CATEGORIES_PER_PROMPT)
    options = run.options
    if options.max_detections == MAX_DETECTIONS:  # the generic default: LVIS's own applies
        options = dataclasses.replace(options, max_detections=DETECTIONS_PER_PROMPT)
    fixed = TopDetectionsPerCategory(FIXED_AP_DETECTIONS_PER_CATEGORY)
    predict = functools.partial(
        predict_lvis, labels=labels, category_ids=category_ids, prompts=prompts, fixed=fixed, masks=masks
    )
    predictions = predict_dataset(
        predict, run.accelerator, run.model(), run.processor(), data, run.batch_size, options
    )
    states = gather_object([fixed.state()]) if run.accelerator.num_processes > 1 else [fixed.state()]
    if predictions is None:
        return None
    if masks:
        results = limit_detections_per_image(to_coco_segm_results(predictions, "xyxy"), MAX_DETECTIONS_PER_IMAGE)
        written = {"results": run.write_json(f"lvis_v1_{run.split}_glipv2_segm_results.json", results)}
        metric = run.metric("lvis_detection")
        metrics = metric.compute(
            predictions=predictions, ground_truth=data.ground_truth, box_format="xyxy", iou_type="segm"
        )
        return BenchmarkResult(metrics, len(data.dataset), written)
    results = limit_detections_per_image(to_coco_results(predictions, "xyxy"), MAX_DETECTIONS_PER_IMAGE)
    fixed_results = TopDetectionsPerCategory.merge(states, FIXED_AP_DETECTIONS_PER_CATEGORY).results()
    written = {
        "results": run.write_json(f"lvis_v1_{run.split}_glipv2_results.json", results),
        "fixed AP results": run.write_json(f"lvis_v1_{run.split}_glipv2_fixed_ap_results.json", fixed_results),
    }
    metric = run.metric("lvis_detection")
    metrics = metric.compute(predictions=predictions, ground_truth=data.ground_truth, box_format="xyxy")
    fixed_ap = evaluate_lvis_fixed_ap(copy.deepcopy(data.ground_truth), fixed_results)
    metrics.update({f"fixed {name}": value for name, value in fixed_ap.items()})
    return BenchmarkResult(metrics, len(data.dataset), written)


_PROTOCOL = (
    "LVIS v1 box AP under the LVIS API's protocol (lvis-api LVISEval, iou_type bbox, via faster-coco-eval's "
    "lvis_style): at most 300 detections per image (the highest scoring over all categories), federated "
    "evaluation (a detection of a category neither annotated in the image nor in its neg_category_ids is not "
    "evaluated; an unmatched detection of a category in its not_exhaustive_category_ids is ignored), AP@[.5:.95], "
    "AP50, AP75, APs/APm/APl, APr/APc/APf by the categories' frequency, AR@300. Also 'fixed AP...', the Fixed AP "
    "that GLIP's README reports (GLIP's LvisEvaluatorFixedAP, after MDETR and Dave et al.): no per-image limit, "
    "each category's 10,000 highest-scoring detections over the split, the same federated LVISEval. GLIP's LVIS "
    "settings (TEST.CHUNKED_EVALUATION 40, DETECTIONS_PER_IMG 300): the categories sorted by id, cleaned by "
    "clean_name, in prompts of 40 names joined by '. '; each prompt keeps its 300 best detections (score threshold "
    "0.05, NMS 0.6 per class). The dataset root is the COCO root (GLIP's DATASET/coco): the annotation file under "
    "annotations/ by GLIP's name (DATA.md), each image at the split folder and file name that end its coco_url "
    "(val2017/..., train2017/...), as GLIP's LvisDetection, detectron2 and mmdetection read them. {split_note}"
)

LVIS_MINIVAL = Benchmark(
    name="lvis-minival",
    task="detection",
    splits=("minival",),
    files={
        "minival": {
            "annotation_file": "annotations/lvis_v1_minival_inserted_image_name.json",
            "val_images": "val2017",
        }
    },
    run=run_lvis,
    protocol=_PROTOCOL.format(
        split_note="minival is the 5k-image subset of LVIS v1 val that MDETR and GLIP evaluate on "
        "(configs/lvis/minival.yaml; lvis_v1_minival_inserted_image_name.json is that LVIS file with file_name "
        "inserted); GLIP's README asks for COCO val2017 images only."
    ),
)

LVIS_VAL = Benchmark(
    name="lvis-val",
    task="detection",
    splits=("val",),
    files={
        "val": {
            "annotation_file": "annotations/lvis_od_val.json",
            "train_images": "train2017",
            "val_images": "val2017",
        }
    },
    run=run_lvis,
    protocol=_PROTOCOL.format(
        split_note="val is LVIS v1 val (configs/lvis/val.yaml, GLIP's lvis_od_val.json; the LVIS site's "
        "lvis_v1_val.json has the same format and can be used under that name); its 19.8k images come from COCO "
        "train2017 and val2017."
    ),
)

BENCHMARKS = (LVIS_MINIVAL, LVIS_VAL)

_MASK_PROTOCOL = (
    "LVIS v1 mask AP under the LVIS API's protocol (LVISEval iou_type segm, via faster-coco-eval's lvis_style; the "
    "detections' areas are their masks'): the detections of the box protocol (GLIP's prompts of 40 sorted, cleaned "
    "names; each prompt's 300 best; the image's 300 best) among each prompt's mask candidates, each with its mask "
    "pasted at the image's size. No Fixed AP (GLIP defines it for boxes). Files and images as {name}."
)


def _mask_benchmark(boxes: Benchmark) -> Benchmark:
    """The instance-segmentation twin of an LVIS box benchmark (same files, `<name>-mask`)."""
    return Benchmark(
        name=f"{boxes.name}-mask",
        task="instance_segmentation",
        splits=boxes.splits,
        files=boxes.files,
        run=functools.partial(run_lvis, masks=True),
        protocol=_MASK_PROTOCOL.format(name=boxes.name),
    )


MASK_BENCHMARKS = (_mask_benchmark(LVIS_MINIVAL), _mask_benchmark(LVIS_VAL))

__all__ = [
    "BENCHMARKS",
    "CATEGORIES_PER_PROMPT",
    "MASK_BENCHMARKS",
    "LVIS_MINIVAL",
    "LVIS_VAL",
    "check_lvis_annotations",
    "lvis_labels",
    "predict_lvis",
    "run_lvis",
]
