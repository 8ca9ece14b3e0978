"""VGPhraseCut (PhraseCut) referring segmentation, read from the official files as distributed.

The official dataset (github.com/ChenyunWu/PhraseCutDataset, ``utils/file_paths.py``) lives in one folder,
``data/VGPhraseCut_v0/`` by default:

    refer_<split>.json        one entry per task (phrase-region pair), split in train, val, test, miniv
    image_data_split.json     one entry per Visual Genome image: image_id, coco_id, flickr_id, width, height, url,
                              split (the README calls the shared file ``image_data_split3000.json``; the API
                              reads it under this name)
    images/<image_id>.jpg     the Visual Genome images (``download_dataset.py`` names them so)

A task of ``refer_<split>.json`` (``RefVGLoader``, ``utils/refvg_loader.py``) has ``task_id`` (a string, unique,
``"<image_id>__<ann ids>"``), ``image_id``, ``ann_ids``, ``phrase``, ``phrase_structure`` (``name``,
``attributes``, ``relation_ids``, ``relation_descriptions``, ``type``), ``instance_boxes`` (xywh, one per referred
instance) and ``Polygons`` (one list per instance, parallel to ``instance_boxes``, of polygons, each a list of
``[x, y]`` points). The ``refer_input_<split>.json`` files, without the ground truth, are not read here.

Ground truth, as the official evaluation builds it (``Evaluator.eval_single_img`` of ``utils/evaluator.py`` and
``iou_polygons_masks`` / ``polygons_to_mask`` of ``utils/iou.py`` / ``utils/data_transfer.py``): the polygons of all
the task's instances, flattened into one list; each polygon with at least 2 points is drawn with PIL, its
coordinates truncated by ``int()``, by ``ImageDraw.polygon(points, outline=1, fill=1)`` on an image of the image's
size, and the task's mask is the union of the drawn polygons. A prediction is scored by its mask IoU with that mask;
the reported numbers are the mean IoU over tasks, the cumulative IoU (sum of intersections over sum of unions) and
the fraction of tasks with IoU above 0.5, 0.6, 0.7, 0.8 and 0.9 (optionally per subset, ``utils/subset.py``, from
``phrase_structure``, the instance count, the mask's size and the image's ``coco_id``).

:func:`load_phrasecut` rasterises every instance's polygons that same way (same PIL calls, at the image's original
size) into the instance's ``mask``, so ``gt_mask`` -- the union of the instances' masks -- is exactly the official
ground truth (up to the Pillow version: the official README pins Pillow 6.1.0).
"""

from __future__ import annotations

import math
import os
from typing import Any

import datasets
import numpy as np
from PIL import Image, ImageDraw

from tasks.common import (
    RecordChecker,
    SkipReport,
    collect_valid,
    finish_dataset,
    image_feature_value,
    image_problem,
    read_json,
)
from tasks.grounding.mdetr import GROUNDING_FEATURES, MISSING_ID
from tasks.masks import MASK_FEATURE, encode_mask, union_rle

PHRASECUT_SPLITS = ("train", "val", "test", "miniv")

PHRASE_STRUCTURE_FEATURES = {
    "name": datasets.Value("string"),
    "attributes": datasets.List(datasets.Value("string")),
    "relation_descriptions": datasets.List(datasets.List(datasets.Value("string"))),
    "type": datasets.Value("string"),
}

PHRASECUT_FEATURES = datasets.Features(
    {
        **GROUNDING_FEATURES,
        "task_id": datasets.Value("string"),
        "gt_mask": MASK_FEATURE,
        "phrase_structure": PHRASE_STRUCTURE_FEATURES,
        "coco_id": datasets.Value("int64"),
    }
)


def phrasecut_files(dataset_dir: str | os.PathLike, split: str) -> dict[str, str]:
    """The official file paths of ``split`` under the dataset folder (``data/VGPhraseCut_v0``): the arguments of
    :func:`load_phrasecut`."""
    if split not in PHRASECUT_SPLITS:
        raise ValueError(f"unknown PhraseCut split {split!r}; expected one of {PHRASECUT_SPLITS}")
    return {
        "refer_file": os.path.join(dataset_dir, f"refer_{split}.json"),
        "image_info_file": os.path.join(dataset_dir, "image_data_split.json"),
        "image_dir": os.path.join(dataset_dir, "images"),
    }


def official_polygons_mask(polygons: list[list[list[float]]], height: int, width: int) -> np.ndarray:
    """The ``(height, width)`` boolean mask of ``polygons`` (each a list of ``[x, y]`` points) as the official
    ``polygons_to_mask(polygons, w, h)`` draws it: each polygon of at least 2 points, coordinates truncated by
    ``int()``, drawn with ``outline=1, fill=1``; the union. (Drawing all polygons on one image gives the union the
    official code sums and thresholds.)"""
    return _draw_polygons(_int_points(polygons), width, height) > 0


def official_polygons_rle(polygons: list[list[list[float]]], height: int, width: int) -> dict[str, Any]:
    """:func:`official_polygons_mask` as a compressed RLE, faster: only the region the points span (the drawing
    never leaves it) is copied into the column-major array pycocotools encodes."""
    points = _int_points(polygons)
    full = np.zeros((height, width), dtype=np.uint8, order="F")
    if points:
        xs = [x for polygon in points for x, _ in polygon]
        ys = [y for polygon in points for _, y in polygon]
        x0, x1 = max(min(xs), 0), min(max(xs), width - 1)
        y0, y1 = max(min(ys), 0), min(max(ys), height - 1)
        if x0 <= x1 and y0 <= y1:
            full[y0 : y1 + 1, x0 : x1 + 1] = _draw_polygons(points, width, height)[y0 : y1 + 1, x0 : x1 + 1]
    return encode_mask(full)


def _int_points(polygons: list[list[list[float]]]) -> list[list[tuple[int, int]]]:
    return [[(int(x), int(y)) for x, y in polygon] for polygon in polygons if len(polygon) >= 2]


def _draw_polygons(points: list[list[tuple[int, int]]], width: int, height: int) -> np.ndarray:
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    for polygon in points:
        draw.polygon(polygon, outline=1, fill=1)
    return np.asarray(image)


class _ImageInfo:
    """``image_data_split.json`` by image id; entries are checked when a task first uses them."""

    def __init__(self, path: str | os.PathLike, image_dir: str | os.PathLike, verify: bool) -> None:
        self.checker = RecordChecker(path)
        entries = read_json(path, expected=list)
        self.entries = {
            entry["image_id"]: entry
            for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("image_id"), int)
        }
        self.image_dir = image_dir
        self.verify = verify
        self.checked: dict[int, dict[str, Any]] = {}

    def get(self, image_id: int, task_checker: RecordChecker, record: str) -> dict[str, Any]:
        """The checked image entry (``width``, ``height``, ``coco_id``, ``path``) of ``image_id``. A missing entry
        or image file names the task; a malformed entry names the image info file and image."""
        if image_id in self.checked:
            return self.checked[image_id]
        if image_id not in self.entries:
            raise task_checker.fail(record, "image_id", f"image id {image_id} is not in {self.checker.file}")
        entry = self.entries[image_id]
        image_record = f"image id={image_id}"
        width = self.checker.get(entry, "width", int, image_record)
        height = self.checker.get(entry, "height", int, image_record)
        if width <= 0 or height <= 0:
            raise self.checker.fail(image_record, "width" if width <= 0 else "height", "image size must be positive")
        coco_id = entry.get("coco_id")
        if coco_id is not None and (isinstance(coco_id, bool) or not isinstance(coco_id, int)):
            raise self.checker.fail(image_record, "coco_id", f"expected int or null, got {type(coco_id).__name__}")
        path = os.path.join(self.image_dir, f"{image_id}.jpg")
        if not os.path.isfile(path):
            raise task_checker.fail(record, "image_id", f"image file not found: {path}")
        problem = image_problem(path) if self.verify else None
        if problem is not None:
            raise task_checker.fail(record, "image_id", problem)
        info = {"width": width, "height": height, "coco_id": MISSING_ID if coco_id is None else coco_id, "path": path}
        self.checked[image_id] = info
        return info


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _clipped_box(box: Any, width: int, height: int, checker: RecordChecker, record: str, k: int) -> list[float]:
    """An ``instance_boxes`` entry, clipped to the image. The boxes follow the official ``x2 - x1 + 1`` width
    convention (``polygon_to_box``) and may end past the border; the official box IoU rasterises them with array
    slicing, which clips them the same way."""
    if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
        raise checker.fail(
            record, "instance_boxes", f"instance {k}: expected 4 finite numbers [x, y, w, h], got {box!r}"
        )
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        raise checker.fail(record, "instance_boxes", f"instance {k}: zero or negative size in {box!r}")
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x1 <= x0 or y1 <= y0:
        raise checker.fail(
            record, "instance_boxes", f"instance {k}: box {box!r} lies outside the {width}x{height} image"
        )
    # a box inside the image is kept as written (x1 - x0 would round 1.9 + 3.8 - 1.9 to 3.7999...)
    return [x0, y0, w if (x0, x1) == (x, x + w) else x1 - x0, h if (y0, y1) == (y, y + h) else y1 - y0]


def _instance_polygons(polygons: Any, checker: RecordChecker, record: str, k: int) -> list[list[list[float]]]:
    """One ``Polygons`` entry: a list of polygons, each a list of ``[x, y]`` points of finite numbers."""
    if not isinstance(polygons, list):
        raise checker.fail(record, "Polygons", f"instance {k}: expected a list of polygons, got {polygons!r}")
    checked = []
    for p, polygon in enumerate(polygons):
        if not isinstance(polygon, list):
            raise checker.fail(record, "Polygons", f"instance {k}, polygon {p}: expected a list of [x, y] points")
        for point in polygon:
            if not isinstance(point, list | tuple) or len(point) != 2 or not all(_number(v) for v in point):
                raise checker.fail(
                    record, "Polygons", f"instance {k}, polygon {p}: expected [x, y] finite numbers, got {point!r}"
                )
        checked.append([[float(x), float(y)] for x, y in polygon])
    return checked


def _phrase_structure(entry: dict[str, Any], checker: RecordChecker, record: str) -> dict[str, Any]:
    structure = checker.get(entry, "phrase_structure", dict, record)

    def fail(problem: str) -> Exception:
        return checker.fail(record, "phrase_structure", problem)

    name = structure.get("name")
    if not isinstance(name, str):
        raise fail(f"'name': expected a string, got {name!r}")
    attributes = structure.get("attributes", [])
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        raise fail(f"'attributes': expected a list of strings, got {attributes!r}")
    relations = structure.get("relation_descriptions", [])
    if not isinstance(relations, list) or not all(
        isinstance(r, list | tuple) and len(r) == 2 and all(isinstance(v, str) for v in r) for r in relations
    ):
        raise fail(f"'relation_descriptions': expected [predicate, object name] string pairs, got {relations!r}")
    kind = structure.get("type", "")
    if not isinstance(kind, str):
        raise fail(f"'type': expected a string, got {kind!r}")
    return {
        "name": name,
        "attributes": attributes,
        "relation_descriptions": [list(r) for r in relations],
        "type": kind,
    }


def load_phrasecut(
    refer_file: str | os.PathLike,
    image_info_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    streaming: bool = False,
    skip_invalid: bool = False,
    verify_images: bool = False,
    report: SkipReport | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load an official ``refer_<split>.json`` as one grounding record per task (referring phrase).

    Args:
        refer_file: ``refer_<split>.json`` (a list of tasks; see the module docstring).
        image_info_file: ``image_data_split.json`` (the image sizes and COCO ids).
        image_dir: the folder of ``<image_id>.jpg`` (the dataset's ``images/``).
        streaming, skip_invalid, verify_images, report: as in :func:`tasks.detection.load_coco_detection`
            (a skipped record is a task).

    Returns:
        Records in the grounding record format (:data:`tasks.grounding.GROUNDING_FEATURES`) plus the task's fields
        (:data:`PHRASECUT_FEATURES`): ``image``, ``image_id`` (the Visual Genome image id; several tasks share an
        image), ``file_name`` (``<image_id>.jpg``), ``width``, ``height`` (from ``image_data_split.json``),
        ``caption`` = the phrase, ``objects`` = one per instance: ``id`` (its index among the file's instances),
        ``bbox`` (the instance box, xywh, clipped to the image), ``tokens_positive`` = ``[[0, len(phrase)]]``
        (the whole phrase), ``phrase_ids`` and ``category_id`` -1, ``mask`` = the instance's polygons rasterised
        as the official evaluation does (see the module docstring), a COCO compressed RLE at the image's size;
        ``tokens_positive_eval`` empty, ``sentence_id`` and ``original_img_id`` -1 (as MDETR's RefCOCO records);
        ``task_id``; ``gt_mask``, the union of the instances' masks -- the official ground-truth mask (all zeros
        for a task without instances); ``phrase_structure`` ``{name, attributes, relation_descriptions, type}``;
        ``coco_id`` (-1 for an image outside COCO). Tasks keep the file's order.

    Bad input raises :class:`~tasks.common.Glipv2DataError` naming the file, the task (``task id='...'``) and the
    field: a missing or duplicate ``task_id``, an ``image_id`` without an image entry or image file, an empty
    ``phrase``, ``Polygons`` not parallel to ``instance_boxes``, a malformed box, polygon or point, a malformed
    ``phrase_structure``; a malformed image entry names ``image_data_split.json`` and the image.
    """
    checker = RecordChecker(refer_file)
    report = SkipReport() if report is None else report
    tasks = read_json(refer_file, expected=list)
    images = _ImageInfo(image_info_file, image_dir, verify_images and not streaming)
    seen: set[str] = set()
    next_object_id = 0

    def parse(item: tuple[int, Any]) -> dict[str, Any]:
        nonlocal next_object_id
        index, entry = item
        task_id = entry.get("task_id") if isinstance(entry, dict) else None
        record = f"task id={task_id!r}" if isinstance(task_id, str) else f"task index {index}"
        task_id = checker.text(entry, "task_id", record)
        checker.unique(seen, task_id, record, "task_id")
        image_id = checker.get(entry, "image_id", int, record)
        image = images.get(image_id, checker, record)
        width, height = image["width"], image["height"]
        phrase = checker.text(entry, "phrase", record)
        boxes = checker.get(entry, "instance_boxes", list, record)
        polygons = checker.get(entry, "Polygons", list, record)
        if len(polygons) != len(boxes):
            raise checker.fail(
                record, "Polygons", f"{len(polygons)} instance polygon lists for {len(boxes)} instance_boxes"
            )
        structure = _phrase_structure(entry, checker, record)
        bboxes = [_clipped_box(box, width, height, checker, record, k) for k, box in enumerate(boxes)]
        instances = [_instance_polygons(ps, checker, record, k) for k, ps in enumerate(polygons)]
        masks = [official_polygons_rle(ps, height, width) for ps in instances]
        gt_mask = union_rle(masks) if masks else encode_mask(np.zeros((height, width), dtype=bool))
        ids = list(range(next_object_id, next_object_id + len(bboxes)))
        next_object_id += len(bboxes)
        return {
            "image": image_feature_value(image["path"]),
            "image_id": image_id,
            "file_name": f"{image_id}.jpg",
            "width": width,
            "height": height,
            "caption": phrase,
            "objects": {
                "id": ids,
                "bbox": bboxes,
                "tokens_positive": [[[0, len(phrase)]] for _ in bboxes],
                "phrase_ids": [MISSING_ID] * len(bboxes),
                "category_id": [MISSING_ID] * len(bboxes),
                "mask": masks,
            },
            "tokens_positive_eval": [],
            "sentence_id": MISSING_ID,
            "original_img_id": MISSING_ID,
            "task_id": task_id,
            "gt_mask": gt_mask,
            "phrase_structure": structure,
            "coco_id": image["coco_id"],
        }

    records = list(collect_valid(list(enumerate(tasks)), parse, skip_invalid, report))
    return finish_dataset(records, PHRASECUT_FEATURES, refer_file, streaming, verify_images, skip_invalid, report)


__all__ = [
    "PHRASECUT_FEATURES",
    "PHRASECUT_SPLITS",
    "load_phrasecut",
    "official_polygons_mask",
    "official_polygons_rle",
    "phrasecut_files",
]
