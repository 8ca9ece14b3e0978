"""MDETR-style grounding JSON (Flickr30k Entities, GoldG, RefCOCO) loaded into a ``datasets`` dataset.

Masks: every object carries ``mask``, the compressed RLE of its annotation's COCO ``segmentation`` (see
:mod:`tasks.masks`), or the empty mask when there is none. MDETR's released files carry no ``segmentation``:
``scripts/fine-tuning/refexp_coco_format.py`` (ashkamath/mdetr 8cbe208) writes the RefCOCO/RefCOCO+/RefCOCOg
``finetune_*.json`` annotations with the line ``# "segmentation": annid2cocoann[item['ann_id']]['segmentation']``
commented out (so does ``scripts/pre-training/refexp_combined_val.py``), and the Flickr30k / GoldG conversions
have no masks at all. What the refexp annotations keep is ``original_id``, the id of the referred object's
annotation in COCO's ``instances_train2014.json``: pass that file as ``segmentation_file`` to take the masks from
it. (MDETR's ``finetune_phrasecut_*.json`` do carry ``segmentation``, but ``phrasecut_coco_format.py`` keeps only
the last polygon of each instance; :mod:`tasks.grounding.phrasecut` reads PhraseCut from the official files.)
"""

from __future__ import annotations

import os
from typing import Any

import datasets

from tasks.common import RecordChecker, SkipReport, finish_dataset, image_fields, read_json
from tasks.detection.coco import columns, parse_annotations, parse_images
from tasks.masks import MASK_FEATURE, segmentation_to_rle

SPANS = datasets.List(datasets.List(datasets.Value("int64"), length=2))

GROUNDING_OBJECT_FEATURES = {
    "id": datasets.List(datasets.Value("int64")),
    "bbox": datasets.List(datasets.List(datasets.Value("float64"), length=4)),
    "tokens_positive": datasets.List(SPANS),
    "phrase_ids": datasets.List(datasets.Value("int64")),
    "category_id": datasets.List(datasets.Value("int64")),
    "mask": datasets.List(MASK_FEATURE),
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
        "tokens_positive_eval": datasets.List(SPANS),
        "sentence_id": datasets.Value("int64"),
        "original_img_id": datasets.Value("int64"),
    }
)

# Stored for fields a file does not carry (MDETR RefCOCO has no phrase_ids; Flickr30k has no category_id; only
# Flickr30k has sentence_id and original_img_id).
MISSING_ID = -1
_IMAGE_IDS = ("sentence_id", "original_img_id")


def _image_entry(entry: dict[str, Any], record: str, checker: RecordChecker) -> dict[str, Any]:
    caption = checker.text(entry, "caption", record)
    mentions = entry.get("tokens_positive_eval", [])
    if not isinstance(mentions, list):
        raise checker.fail(record, "tokens_positive_eval", f"expected a list of span lists, got {mentions!r}")
    optional = {key: checker.get(entry, key, int, record) if key in entry else MISSING_ID for key in _IMAGE_IDS}
    return {
        "caption": caption,
        "tokens_positive_eval": [checker.spans(spans, caption, record, "tokens_positive_eval") for spans in mentions],
        **optional,
    }


def _grounding_fields(
    entry: dict[str, Any],
    image: dict[str, Any],
    record: str,
    checker: RecordChecker,
    segmentations: SegmentationSource | None = None,
) -> dict[str, Any]:
    spans = checker.spans(entry.get("tokens_positive"), image["caption"], record)
    phrase_id = checker.get(entry, "phrase_ids", int, record) if "phrase_ids" in entry else MISSING_ID
    category_id = checker.get(entry, "category_id", int, record) if "category_id" in entry else MISSING_ID
    fields = {"tokens_positive": spans, "phrase_ids": phrase_id, "category_id": category_id}
    if segmentations is not None and entry.get("segmentation") in (None, []):
        fields["mask"] = segmentations.mask(entry, image, record, checker)
    return fields


class SegmentationSource:
    """The ``segmentation`` of COCO annotations by id, for grounding annotations that name theirs in
    ``original_id`` (MDETR's refexp files)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.checker = RecordChecker(path)
        data = read_json(path)
        entries = self.checker.get(data, "annotations", list, "<root>")
        self.by_id = {
            entry["id"]: entry.get("segmentation")
            for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("id"), int)
        }

    def mask(
        self, entry: dict[str, Any], image: dict[str, Any], record: str, checker: RecordChecker
    ) -> dict[str, Any]:
        """The mask of the COCO annotation ``entry["original_id"]`` at ``image``'s size; errors about the id name
        the grounding file, errors about the segmentation the COCO file and annotation."""
        original_id = checker.get(entry, "original_id", int, record)
        if original_id not in self.by_id:
            raise checker.fail(record, "original_id", f"no annotation id={original_id} in {self.checker.file}")
        return segmentation_to_rle(
            self.by_id[original_id],
            image["height"],
            image["width"],
            self.checker,
            f"annotation id={original_id} (for {record} of {checker.file})",
        )


def _sizes_as_numbers(data: dict[str, Any]) -> None:
    """MDETR's Flickr30k files store ``width`` / ``height`` as digit strings (read from the XML); read them as the
    numbers they are. Anything else is left for the checks to reject."""
    for entry in data.get("images") if isinstance(data.get("images"), list) else []:
        if isinstance(entry, dict):
            for key in ("width", "height"):
                if isinstance(entry.get(key), str) and entry[key].strip().isdecimal():
                    entry[key] = int(entry[key])


def spans_overlap(first: list[list[int]], second: list[list[int]]) -> bool:
    """Whether a character span of ``first`` overlaps one of ``second``."""
    return any(b1 < e2 and b2 < e1 for b1, e1 in first for b2, e2 in second)


def mention_boxes(mention: list[list[int]], objects: dict[str, list[Any]]) -> list[list[float]]:
    """The xywh boxes that ground ``mention`` (one ``tokens_positive_eval`` entry): those whose ``tokens_positive``
    overlap it. In MDETR's Flickr30k files a box's ``tokens_positive`` lists every mention of its entity, so this
    gives each mention of "a boy ... he" the entity's boxes."""
    return [box for box, spans in zip(objects["bbox"], objects["tokens_positive"]) if spans_overlap(mention, spans)]


def load_mdetr_grounding(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    streaming: bool = False,
    skip_invalid: bool = False,
    verify_images: bool = False,
    report: SkipReport | None = None,
    segmentation_file: str | os.PathLike | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load an MDETR-style grounding JSON as one record per (image, caption) entry.

    The file is COCO-shaped: each ``images`` entry carries a ``caption``; each annotation a ``bbox`` (xywh) and
    ``tokens_positive``, a list of ``[begin, end)`` character spans into that caption; ``phrase_ids``
    (Flickr30k) and ``category_id`` are optional. MDETR's Flickr30k entries also carry ``tokens_positive_eval``
    (one span list per evaluated mention, in sentence order: the phrases of the sentence that have a box),
    ``sentence_id`` and ``original_img_id`` (the Flickr30k Entities sentence and image), and their sizes as
    digit strings.

    Args:
        annotation_file: the MDETR JSON (e.g. ``final_flickr_separateGT_train.json``).
        image_dir: folder the ``file_name`` entries are relative to.
        streaming, skip_invalid, verify_images, report: as in :func:`tasks.detection.load_coco_detection`.
        segmentation_file: a COCO instances JSON (for MDETR's RefCOCO/RefCOCO+/RefCOCOg files, COCO's
            ``instances_train2014.json``) whose annotation ids are the grounding annotations' ``original_id``: an
            annotation without its own ``segmentation`` takes that annotation's (an ``original_id`` missing from
            it is an error).

    Returns:
        Records: ``image``, ``image_id``, ``file_name``, ``width``, ``height``, ``caption``, ``objects`` =
        ``{id, bbox (xywh float), tokens_positive (list of [begin, end]), phrase_ids, category_id, mask}`` as
        parallel lists, with ``-1`` (:data:`MISSING_ID`) for an absent ``phrase_ids`` / ``category_id`` and the
        empty mask ``{"size": [0, 0], "counts": ""}`` for an absent ``segmentation`` (``mask``: a COCO compressed
        RLE at the image's original size, :mod:`tasks.masks`);
        ``tokens_positive_eval`` (empty when absent), ``sentence_id`` and ``original_img_id`` (``-1`` when absent).
    """
    checker = RecordChecker(annotation_file)
    report = SkipReport() if report is None else report
    data = read_json(annotation_file)
    segmentations = None if segmentation_file is None else SegmentationSource(segmentation_file)
    _sizes_as_numbers(data)
    images, declared = parse_images(
        data,
        checker,
        image_dir,
        skip_invalid,
        report,
        verify_images and not streaming,
        extra=lambda entry, record: _image_entry(entry, record, checker),
    )
    grouped = parse_annotations(
        data,
        checker,
        images,
        declared,
        skip_invalid,
        report,
        extra=lambda entry, image, record: _grounding_fields(entry, image, record, checker, segmentations),
    )
    records = [
        {
            **image_fields(image_id, image),
            "caption": image["caption"],
            "objects": columns(grouped[image_id], list(GROUNDING_OBJECT_FEATURES)),
            **{key: image[key] for key in ("tokens_positive_eval", *_IMAGE_IDS)},
        }
        for image_id, image in images.items()
    ]
    return finish_dataset(records, GROUNDING_FEATURES, annotation_file, streaming, verify_images, skip_invalid, report)
