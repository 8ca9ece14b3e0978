"""COCO instances JSON (COCO, ODinW, LVIS v1 as distributed) loaded into a ``datasets`` dataset for detection and
instance segmentation."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import datasets

from tasks.common import (
    RecordChecker,
    SkipReport,
    collect_valid,
    finish_dataset,
    image_fields,
    image_problem,
    read_json,
)
from tasks.masks import MASK_FEATURE, empty_mask, segmentation_to_rle

OBJECT_FEATURES = {
    "id": datasets.List(datasets.Value("int64")),
    "bbox": datasets.List(datasets.List(datasets.Value("float64"), length=4)),
    "category_id": datasets.List(datasets.Value("int64")),
    "area": datasets.List(datasets.Value("float64")),
    "iscrowd": datasets.List(datasets.Value("int8")),
    "mask": datasets.List(MASK_FEATURE),
}

DETECTION_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "image_id": datasets.Value("int64"),
        "file_name": datasets.Value("string"),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "objects": OBJECT_FEATURES,
    }
)


def parse_images(
    data: dict[str, Any],
    checker: RecordChecker,
    image_dir: str | os.PathLike,
    skip_invalid: bool,
    report: SkipReport,
    verify_images: bool = False,
    extra: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
    prefer_coco_url: bool = False,
) -> tuple[dict[int, dict[str, Any]], set[int]]:
    """Validate ``data["images"]`` of a COCO-style file.

    An image's file is ``file_name`` under ``image_dir``; an entry without ``file_name`` (LVIS v1 as distributed)
    gets it from ``coco_url`` (see :func:`image_name`). With ``prefer_coco_url`` the ``coco_url`` wins whenever
    present, as every LVIS loader does (LVIS API, detectron2, GLIP's ``LvisDetection``).

    Returns ``(valid, declared)``: the valid image entries by id (with ``path``, plus whatever ``extra(entry,
    record)`` adds) and the set of every declared id, so annotations of a skipped image can be told apart from
    annotations of an unknown one.
    """
    entries = checker.get(data, "images", list, "<root>")
    seen: set[int] = set()

    def parse(entry: Any) -> dict[str, Any]:
        record = f"image id={entry.get('id')!r}" if isinstance(entry, dict) else "image entry"
        image_id = checker.get(entry, "id", int, record)
        record = f"image id={image_id}"
        checker.unique(seen, image_id, record, "id")
        file_name, source = image_name(entry, checker, record, prefer_coco_url)
        width = checker.get(entry, "width", int, record)
        height = checker.get(entry, "height", int, record)
        if width <= 0 or height <= 0:
            raise checker.fail(record, "width" if width <= 0 else "height", "image size must be positive")
        path = _image_file(checker, image_dir, file_name, source, record, verify_images)
        parsed = {"image_id": image_id, "file_name": file_name, "width": width, "height": height, "path": path}
        if extra is not None:
            parsed.update(extra(entry, record))
        return parsed

    valid = {image["image_id"]: image for image in collect_valid(entries, parse, skip_invalid, report)}
    declared = {entry["id"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("id"), int)}
    return valid, declared


def image_name(
    entry: dict[str, Any], checker: RecordChecker, record: str, prefer_coco_url: bool = False
) -> tuple[str, str]:
    """``(file name relative to the image folder, the field it came from)`` of an image entry.

    ``file_name`` when present (COCO); otherwise -- LVIS v1 image entries carry only ``coco_url`` -- the split
    folder and file name that end ``coco_url``, as detectron2's ``load_lvis_json`` derives them
    (``http://images.cocodataset.org/val2017/000000397133.jpg`` -> ``val2017/000000397133.jpg``, relative to the
    COCO image root). ``prefer_coco_url`` takes ``coco_url`` first. An entry with neither raises naming
    ``file_name``.
    """
    has_url = isinstance(entry, dict) and "coco_url" in entry
    if has_url and (prefer_coco_url or "file_name" not in entry):
        url = checker.text(entry, "coco_url", record)
        parts = url.rstrip().split("/")
        if len(parts) < 2 or not parts[-1] or not parts[-2] or parts[-1] in (".", "..") or parts[-2] in (".", ".."):
            raise checker.fail(record, "coco_url", f"expected a URL ending in <split folder>/<file name>, got {url!r}")
        return f"{parts[-2]}/{parts[-1]}", "coco_url"
    if isinstance(entry, dict) and "file_name" not in entry:
        raise checker.fail(record, "file_name", "missing key (and no 'coco_url' to take the image path from)")
    return checker.text(entry, "file_name", record), "file_name"


def _image_file(
    checker: RecordChecker, image_dir: str | os.PathLike, name: str, source: str, record: str, verify: bool
) -> str:
    """The existing image file `name` under `image_dir`; errors name the field the name came from."""
    if source == "file_name":
        return checker.image_file(image_dir, name, record, verify)
    path = os.path.join(image_dir, name)
    if not os.path.isfile(path):
        raise checker.fail(record, source, f"image file not found: {path}")
    problem = image_problem(path) if verify else None
    if problem is not None:
        raise checker.fail(record, source, problem)
    return path


def parse_categories(data: dict[str, Any], checker: RecordChecker) -> list[dict[str, Any]]:
    """Validate ``data["categories"]``: ``[{"id", "name"}]`` with unique ids (original ids kept, file order)."""
    entries = checker.get(data, "categories", list, "<root>")
    seen: set[int] = set()
    categories = []
    for index, entry in enumerate(entries):
        category_id = checker.get(entry, "id", int, f"category index {index}")
        record = f"category id={category_id}"
        checker.unique(seen, category_id, record, "id")
        categories.append({"id": category_id, "name": checker.text(entry, "name", record)})
    return categories


def parse_annotations(
    data: dict[str, Any],
    checker: RecordChecker,
    images: dict[int, dict[str, Any]],
    declared_image_ids: set[int],
    skip_invalid: bool,
    report: SkipReport,
    extra: Callable[[dict[str, Any], dict[str, Any], str], dict[str, Any]] | None = None,
    category_ids: set[int] | None = None,
    masks: bool = True,
) -> dict[int, list[dict[str, Any]]]:
    """Validate ``data["annotations"]`` and group them by image id.

    Each annotation needs a unique ``id``, a known ``image_id``, a ``bbox`` inside its image and (when
    ``category_ids`` is given) a known ``category_id``. ``area`` defaults to ``w * h`` and ``iscrowd`` to 0.
    ``mask`` is the compressed RLE of ``segmentation`` at the image's size (:func:`tasks.masks.segmentation_to_rle`:
    polygons, COCO's crowd RLE, compressed RLE), :data:`tasks.masks.EMPTY_MASK` without one (or with ``masks``
    False, when ``segmentation`` is not read at all). ``extra(annotation, image, record)`` adds task-specific fields
    (and may replace ``mask``). Annotations of a skipped image are dropped with it.
    """
    entries = checker.get(data, "annotations", list, "<root>")
    seen: set[int] = set()
    grouped: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in images}

    def parse(entry: Any) -> dict[str, Any] | None:
        annotation_id = checker.get(entry, "id", int, "annotation with no id")
        record = f"annotation id={annotation_id}"
        checker.unique(seen, annotation_id, record, "id")
        image_id = checker.get(entry, "image_id", int, record)
        record = f"annotation id={annotation_id} (image id={image_id})"
        if image_id not in declared_image_ids:
            raise checker.fail(record, "image_id", f"unknown image id {image_id}")
        if image_id not in images:
            return None
        image = images[image_id]
        bbox = checker.bbox_xywh(entry.get("bbox"), image["width"], image["height"], record)
        parsed = {"image_id": image_id, "id": annotation_id, "bbox": bbox, "mask": empty_mask()}
        if masks:
            parsed["mask"] = segmentation_to_rle(
                entry.get("segmentation"), image["height"], image["width"], checker, record
            )
        if category_ids is not None:
            category_id = checker.get(entry, "category_id", int, record)
            if category_id not in category_ids:
                raise checker.fail(record, "category_id", f"unknown category id {category_id}")
            area = checker.get(entry, "area", (int, float), record) if "area" in entry else bbox[2] * bbox[3]
            iscrowd = checker.get(entry, "iscrowd", int, record) if "iscrowd" in entry else 0
            parsed.update(category_id=category_id, area=float(area), iscrowd=iscrowd)
        if extra is not None:
            parsed.update(extra(entry, image, record))
        return parsed

    for annotation in collect_valid(entries, parse, skip_invalid, report):
        if annotation is not None:
            grouped[annotation.pop("image_id")].append(annotation)
    return grouped


def columns(objects: list[dict[str, Any]], keys: list[str]) -> dict[str, list[Any]]:
    """Turn a list of per-object dicts into the dict-of-lists layout of an ``objects`` column."""
    return {key: [obj[key] for obj in objects] for key in keys}


def load_coco_detection(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    streaming: bool = False,
    skip_invalid: bool = False,
    verify_images: bool = False,
    report: SkipReport | None = None,
    require_annotations: bool = True,
    prefer_coco_url: bool = False,
    masks: bool = True,
) -> tuple[datasets.Dataset | datasets.IterableDataset, list[dict[str, Any]]]:
    """Load a COCO instances JSON as one record per image.

    Args:
        annotation_file: COCO-format JSON (``images``, ``annotations``, ``categories``); also LVIS v1 as
            distributed, whose image entries have ``coco_url`` and no ``file_name``.
        image_dir: folder the images' ``file_name`` entries are relative to; for entries without ``file_name``,
            the COCO image root that holds the split folders named by ``coco_url`` (``val2017/``, ...).
        streaming: return an ``IterableDataset`` instead of a ``Dataset``.
        skip_invalid: skip invalid images and annotations (logged, and counted in ``report``) instead of
            raising :class:`~tasks.common.Glipv2DataError`.
        verify_images: also check that every image decodes -- up front, or with ``streaming`` as each record is
            produced. Without it, only that each image file exists is checked (always up front).
        report: a :class:`~tasks.common.SkipReport` that receives the skipped-record counts.
        require_annotations: False for an image-info file without ``annotations`` (COCO test-dev's
            ``image_info_test-dev2017.json``): its images load with no objects.
        prefer_coco_url: take each image's path from ``coco_url`` even where ``file_name`` is present (the LVIS
            loaders' rule); by default ``coco_url`` is used only without ``file_name``.
        masks: read each annotation's ``segmentation`` into ``mask`` (checked and converted at load time, some
            tens of microseconds per annotation). False gives every object the empty mask without reading
            ``segmentation`` (box-only training on large files).

    Returns:
        ``(dataset, categories)``. Records: ``image`` (lazily decoded PIL image), ``image_id``, ``file_name``,
        ``width``, ``height``, ``objects`` = ``{id, bbox (COCO xywh, float), category_id, area, iscrowd, mask}`` as
        parallel lists. ``mask`` is the object's ``segmentation`` as a COCO compressed RLE ``{"size": [height,
        width], "counts": str}`` at the image's original size: COCO and LVIS polygons (one object's polygons
        merged), COCO's uncompressed crowd RLE and compressed RLE are read with pycocotools; an annotation without
        ``segmentation`` (or with ``null`` or ``[]``, as box-only exports such as ODinW's write) gets
        ``{"size": [0, 0], "counts": ""}`` (:data:`tasks.masks.EMPTY_MASK`). ``categories`` is
        ``[{"id", "name"}]`` with the file's original ids. Images without annotations are kept (they matter for
        evaluation).
    """
    checker = RecordChecker(annotation_file)
    report = SkipReport() if report is None else report
    data = read_json(annotation_file)
    if not require_annotations and isinstance(data, dict) and "annotations" not in data:
        data = {**data, "annotations": []}
    categories = parse_categories(data, checker)
    verify = verify_images and not streaming
    images, declared = parse_images(data, checker, image_dir, skip_invalid, report, verify, None, prefer_coco_url)
    grouped = parse_annotations(
        data, checker, images, declared, skip_invalid, report, category_ids={c["id"] for c in categories}, masks=masks
    )
    records = [
        {
            **image_fields(image_id, image),
            "objects": columns(grouped[image_id], list(OBJECT_FEATURES)),
        }
        for image_id, image in images.items()
    ]
    return finish_dataset(
        records, DETECTION_FEATURES, annotation_file, streaming, verify_images, skip_invalid, report
    ), categories
