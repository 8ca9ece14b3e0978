"""COCO captions JSON and the Karpathy split file loaded into ``datasets`` datasets (one record per image)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import datasets

from tasks.common import (
    RecordChecker,
    SkipReport,
    collect_valid,
    finish_dataset,
    image_feature_value,
    read_json,
)
from tasks.detection.coco import parse_images

CAPTION_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "image_id": datasets.Value("int64"),
        "file_name": datasets.Value("string"),
        "captions": datasets.List(datasets.Value("string")),
        "caption_ids": datasets.List(datasets.Value("int64")),
    }
)
KARPATHY_SPLITS = ("train", "restval", "val", "test")


def load_coco_captions(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    streaming: bool = False,
    skip_invalid: bool = False,
    verify_images: bool = False,
    report: SkipReport | None = None,
    require_annotations: bool = True,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load a COCO captions JSON (``captions_train2017.json`` format) as one record per image.

    Args:
        annotation_file: JSON with ``images`` (``id``, ``file_name``, ``width``, ``height``) and ``annotations``
            (``id``, ``image_id``, ``caption``).
        image_dir: folder the ``file_name`` entries are relative to.
        streaming, skip_invalid, verify_images, report: as in :func:`tasks.detection.load_coco_detection`.
        require_annotations: False for an image-info file without ``annotations`` (``image_info_test2014.json``).

    Returns:
        Records: ``image``, ``image_id``, ``file_name``, ``captions`` (annotation order), ``caption_ids``.
        Images without captions are kept with empty lists.
    """
    checker = RecordChecker(annotation_file)
    report = SkipReport() if report is None else report
    data = read_json(annotation_file)
    if not require_annotations and isinstance(data, dict) and "annotations" not in data:
        data = {**data, "annotations": []}
    images, declared = parse_images(data, checker, image_dir, skip_invalid, report, verify_images and not streaming)
    captions: dict[int, list[tuple[int, str]]] = {image_id: [] for image_id in images}
    seen: set[int] = set()

    def parse(entry: Any) -> None:
        caption_id = checker.get(entry, "id", int, "caption with no id")
        record = f"caption id={caption_id}"
        checker.unique(seen, caption_id, record, "id")
        image_id = checker.get(entry, "image_id", int, record)
        if image_id not in declared:
            raise checker.fail(f"{record} (image id={image_id})", "image_id", f"unknown image id {image_id}")
        caption = checker.text(entry, "caption", f"{record} (image id={image_id})")
        if image_id in captions:
            captions[image_id].append((caption_id, caption.strip()))

    list(collect_valid(checker.get(data, "annotations", list, "<root>"), parse, skip_invalid, report))
    records = [
        {
            "image": image_feature_value(image["path"]),
            "image_id": image_id,
            "file_name": image["file_name"],
            "captions": [caption for _, caption in captions[image_id]],
            "caption_ids": [caption_id for caption_id, _ in captions[image_id]],
        }
        for image_id, image in images.items()
    ]
    return finish_dataset(records, CAPTION_FEATURES, annotation_file, streaming, verify_images, skip_invalid, report)


def load_karpathy_split(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    split: str | Sequence[str],
    streaming: bool = False,
    skip_invalid: bool = False,
    verify_images: bool = False,
    report: SkipReport | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load one split of a Karpathy split file (``dataset_coco.json``).

    Args:
        path: the split file: ``images[]`` with ``filepath``, ``filename``, ``cocoid`` (or ``imgid``),
            ``split`` and ``sentences[].raw`` (``sentids`` give the caption ids).
        image_root: folder that ``filepath/filename`` is relative to.
        split: one of ``train``, ``restval``, ``val``, ``test``, or several; the usual Karpathy training set is
            ``("train", "restval")``.
        streaming, skip_invalid, verify_images, report: as in :func:`tasks.detection.load_coco_detection`.

    Returns:
        Records as :func:`load_coco_captions`: ``image``, ``image_id`` (``cocoid``), ``file_name``
        (``filepath/filename``), ``captions`` (``raw`` sentences), ``caption_ids`` (``sentid``).
    """
    splits = {split} if isinstance(split, str) else set(split)
    if not splits <= set(KARPATHY_SPLITS):
        raise ValueError(f"unknown Karpathy split(s) {sorted(splits - set(KARPATHY_SPLITS))}")
    checker = RecordChecker(path)
    report = SkipReport() if report is None else report
    entries = checker.get(read_json(path), "images", list, "<root>")
    seen: set[int] = set()

    def parse(entry: Any) -> dict[str, Any] | None:
        image_id = checker.get(entry, "cocoid" if "cocoid" in entry else "imgid", int, "image with no cocoid")
        record = f"image id={image_id}"
        if checker.get(entry, "split", str, record) not in splits:
            return None
        checker.unique(seen, image_id, record, "cocoid")
        file_name = os.path.join(checker.get(entry, "filepath", str, record), checker.text(entry, "filename", record))
        sentences = checker.get(entry, "sentences", list, record)
        if not sentences:
            raise checker.fail(record, "sentences", "no captions")
        captions = [checker.text(sentence, "raw", record).strip() for sentence in sentences]
        caption_ids = [checker.get(sentence, "sentid", int, record) for sentence in sentences]
        return {
            "image": image_feature_value(
                checker.image_file(image_root, file_name, record, verify_images and not streaming)
            ),
            "image_id": image_id,
            "file_name": file_name,
            "captions": captions,
            "caption_ids": caption_ids,
        }

    records = [record for record in collect_valid(entries, parse, skip_invalid, report) if record is not None]
    return finish_dataset(records, CAPTION_FEATURES, path, streaming, verify_images, skip_invalid, report)
