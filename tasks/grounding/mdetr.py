"""MDETR-style grounding JSON (Flickr30k Entities, GoldG, RefCOCO) loaded into a ``datasets`` dataset."""

from __future__ import annotations

import os
from typing import Any

import datasets

from tasks.common import RecordChecker, SkipReport, finish_dataset, image_fields, read_json
from tasks.detection.coco import columns, parse_annotations, parse_images

GROUNDING_OBJECT_FEATURES = {
    "id": datasets.List(datasets.Value("int64")),
    "bbox": datasets.List(datasets.List(datasets.Value("float64"), length=4)),
    "tokens_positive": datasets.List(datasets.List(datasets.List(datasets.Value("int64"), length=2))),
    "phrase_ids": datasets.List(datasets.Value("int64")),
    "category_id": datasets.List(datasets.Value("int64")),
}

GROUNDING_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "image_id": datasets.Value("int64"),
        "file_name": datasets.Value("string"),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "caption": datasets.Value("string"),
        "objects": GROUNDING_OBJECT_FEATURES,
    }
)

# Stored for fields a file does not carry (MDETR RefCOCO has no phrase_ids; Flickr30k has no category_id).
MISSING_ID = -1


def _image_caption(entry: dict[str, Any], record: str, checker: RecordChecker) -> dict[str, Any]:
    return {"caption": checker.text(entry, "caption", record)}


def _grounding_fields(
    entry: dict[str, Any], image: dict[str, Any], record: str, checker: RecordChecker
) -> dict[str, Any]:
    spans = checker.spans(entry.get("tokens_positive"), image["caption"], record)
    phrase_id = checker.get(entry, "phrase_ids", int, record) if "phrase_ids" in entry else MISSING_ID
    category_id = checker.get(entry, "category_id", int, record) if "category_id" in entry else MISSING_ID
    return {"tokens_positive": spans, "phrase_ids": phrase_id, "category_id": category_id}


def load_mdetr_grounding(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    streaming: bool = False,
    skip_invalid: bool = False,
    verify_images: bool = False,
    report: SkipReport | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load an MDETR-style grounding JSON as one record per (image, caption) entry.

    The file is COCO-shaped: each ``images`` entry carries a ``caption``; each annotation a ``bbox`` (xywh) and
    ``tokens_positive``, a list of ``[begin, end)`` character spans into that caption; ``phrase_ids``
    (Flickr30k) and ``category_id`` are optional.

    Args:
        annotation_file: the MDETR JSON (e.g. ``final_flickr_separateGT_train.json``).
        image_dir: folder the ``file_name`` entries are relative to.
        streaming, skip_invalid, verify_images, report: as in :func:`tasks.detection.load_coco_detection`.

    Returns:
        Records: ``image``, ``image_id``, ``file_name``, ``width``, ``height``, ``caption``, ``objects`` =
        ``{id, bbox (xywh float), tokens_positive (list of [begin, end]), phrase_ids, category_id}`` as parallel
        lists, with ``-1`` (:data:`MISSING_ID`) for an absent ``phrase_ids`` / ``category_id``.
    """
    checker = RecordChecker(annotation_file)
    report = SkipReport() if report is None else report
    data = read_json(annotation_file)
    images, declared = parse_images(
        data,
        checker,
        image_dir,
        skip_invalid,
        report,
        verify_images and not streaming,
        extra=lambda entry, record: _image_caption(entry, record, checker),
    )
    grouped = parse_annotations(
        data,
        checker,
        images,
        declared,
        skip_invalid,
        report,
        extra=lambda entry, image, record: _grounding_fields(entry, image, record, checker),
    )
    records = [
        {
            **image_fields(image_id, image),
            "caption": image["caption"],
            "objects": columns(grouped[image_id], list(GROUNDING_OBJECT_FEATURES)),
        }
        for image_id, image in images.items()
    ]
    return finish_dataset(records, GROUNDING_FEATURES, annotation_file, streaming, verify_images, skip_invalid, report)
