"""Object masks as COCO run-length encodings (RLE), through pycocotools' mask API.

A mask is stored as COCO's compressed RLE ``{"size": [height, width], "counts": str}``: pycocotools' compressed
counts string decoded as UTF-8 (it is plain ASCII), at the image's original size. An object without a segmentation
has :data:`EMPTY_MASK`, ``{"size": [0, 0], "counts": ""}``. :data:`MASK_FEATURE` is the ``datasets`` feature of one
mask; the loaders store ``"mask": datasets.List(MASK_FEATURE)`` inside their ``objects`` dict of lists.

:func:`segmentation_to_rle` reads a COCO ``segmentation`` field (polygons, uncompressed RLE as in COCO's crowd
annotations, or compressed RLE) and fails naming file, record and field for anything malformed;
:func:`decode_rle`, :func:`encode_mask` and :func:`union_rle` convert between masks and RLEs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import datasets
import numpy as np
from pycocotools import mask as mask_utils

from tasks.common import RecordChecker

EMPTY_MASK: dict[str, Any] = {"size": [0, 0], "counts": ""}
"""The mask of an object without a segmentation (never mutate it: the functions here return copies)."""

MASK_FEATURE = {"size": datasets.List(datasets.Value("int64")), "counts": datasets.Value("string")}

# Characters of pycocotools' compressed counts: 6-bit groups offset by 48 ('0'..'o').
_COUNT_CHARS = frozenset(chr(code) for code in range(48, 48 + 64))


def empty_mask() -> dict[str, Any]:
    """A fresh copy of :data:`EMPTY_MASK`."""
    return {"size": [0, 0], "counts": ""}


def is_empty_mask(rle: Mapping[str, Any]) -> bool:
    """Whether ``rle`` is :data:`EMPTY_MASK` (no segmentation), as opposed to a mask of the image's size."""
    return list(rle["size"]) == [0, 0]


def _as_text(rle: Mapping[str, Any]) -> dict[str, Any]:
    """pycocotools' output (``counts`` as bytes) in the stored form (``counts`` as str, ``size`` as ints)."""
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.decode("utf-8") if isinstance(counts, bytes) else counts,
    }


def _as_bytes(rle: Mapping[str, Any]) -> dict[str, Any]:
    """A stored RLE in the form pycocotools reads (``counts`` as bytes)."""
    counts = rle["counts"]
    return {
        "size": [int(rle["size"][0]), int(rle["size"][1])],
        "counts": counts.encode("utf-8") if isinstance(counts, str) else counts,
    }


def segmentation_to_rle(
    segmentation: Any, height: int, width: int, checker: RecordChecker, record: str, field: str = "segmentation"
) -> dict[str, Any]:
    """The compressed RLE of a COCO ``segmentation`` field for a ``height`` x ``width`` image.

    Accepts:

    * polygons: a list of polygons, each a flat ``[x1, y1, x2, y2, ...]`` list of at least 3 points; the polygons
      of one object are rasterised by pycocotools (``frPyObjects``) and merged into one mask. Points outside the
      image are clipped by the rasteriser, as in COCO.
    * uncompressed RLE ``{"size": [h, w], "counts": [int, ...]}`` (COCO's crowd annotations): column-major run
      lengths, starting with background, that must cover exactly ``h * w`` pixels.
    * compressed RLE ``{"size": [h, w], "counts": str}``, in the canonical form pycocotools writes.

    ``None`` and an empty list (box-only exports, e.g. Roboflow's, write ``"segmentation": []``) give
    :data:`EMPTY_MASK`. An RLE whose ``size`` is not ``[height, width]``, a polygon with fewer than 3 points, an odd
    number of coordinates, a non-number or a non-finite value raise :class:`~tasks.common.Glipv2DataError` naming
    ``checker``'s file, ``record`` and ``field``.
    """
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return empty_mask()
    if isinstance(segmentation, Mapping):
        return _rle_field(segmentation, height, width, checker, record, field)
    if not isinstance(segmentation, list):
        raise checker.fail(
            record, field, f"expected a list of polygons or an RLE object, got {type(segmentation).__name__}"
        )
    polygons = [_polygon(polygon, index, checker, record, field) for index, polygon in enumerate(segmentation)]
    rles = mask_utils.frPyObjects(polygons, height, width)
    return _as_text(mask_utils.merge(rles))


def _polygon(polygon: Any, index: int, checker: RecordChecker, record: str, field: str) -> list[float]:
    if not isinstance(polygon, list):
        raise checker.fail(
            record, field, f"polygon {index}: expected a flat list of x, y coordinates, got {type(polygon).__name__}"
        )
    for value in polygon:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise checker.fail(record, field, f"polygon {index}: non-numeric value {value!r}")
        if not _is_finite(value):
            raise checker.fail(record, field, f"polygon {index}: non-finite value {value!r}")
    if len(polygon) % 2:
        raise checker.fail(record, field, f"polygon {index}: odd number of coordinates ({len(polygon)})")
    if len(polygon) < 6:
        raise checker.fail(
            record, field, f"polygon {index}: {len(polygon) // 2} points; a polygon needs at least 3 (6 numbers)"
        )
    return [float(value) for value in polygon]


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _rle_field(
    rle: Mapping[str, Any], height: int, width: int, checker: RecordChecker, record: str, field: str
) -> dict[str, Any]:
    for key in ("size", "counts"):
        if key not in rle:
            raise checker.fail(record, field, f"RLE without '{key}'")
    size = rle["size"]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in size)
    ):
        raise checker.fail(record, field, f"RLE size: expected [height, width] integers, got {size!r}")
    if list(size) != [height, width]:
        raise checker.fail(
            record, field, f"RLE size {list(size)} differs from the image's size [{height}, {width}] (height, width)"
        )
    counts = rle["counts"]
    pixels = height * width
    if isinstance(counts, list):
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in counts):
            raise checker.fail(record, field, "RLE counts: expected non-negative integers")
        if sum(counts) != pixels:
            raise checker.fail(
                record, field, f"RLE counts cover {sum(counts)} pixels, the {height}x{width} image has {pixels}"
            )
        return _as_text(mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width))
    if isinstance(counts, str):
        if not set(counts) <= _COUNT_CHARS:
            raise checker.fail(record, field, "RLE counts: not a compressed RLE string (characters outside '0'..'o')")
        stored = {"size": [height, width], "counts": counts}
        # pycocotools checks that the runs do not overflow the image while decoding; re-encoding the decoded mask
        # gives the canonical string back only when the runs also cover the whole image.
        try:
            decoded = mask_utils.decode(_as_bytes(stored))
        except ValueError as error:
            raise checker.fail(record, field, f"RLE counts run past the {height}x{width} image") from error
        if _as_text(mask_utils.encode(decoded))["counts"] != counts:
            raise checker.fail(
                record,
                field,
                f"RLE counts do not encode exactly {height}x{width} pixels in pycocotools' canonical form",
            )
        return stored
    raise checker.fail(
        record, field, f"RLE counts: expected a list of integers or a string, got {type(counts).__name__}"
    )


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """The ``(height, width)`` uint8 mask (0/1) of an RLE (``(0, 0)`` for :data:`EMPTY_MASK`)."""
    if is_empty_mask(rle):
        return np.zeros((0, 0), dtype=np.uint8)
    return np.ascontiguousarray(mask_utils.decode(_as_bytes(rle)))


def encode_mask(mask: Any) -> dict[str, Any]:
    """The compressed RLE of a 2D boolean or uint8 mask (numpy array or torch tensor; nonzero is foreground)."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D (height, width) mask, got shape {mask.shape}")
    if mask.dtype not in (np.bool_, np.uint8):
        raise ValueError(f"expected a bool or uint8 mask, got dtype {mask.dtype}")
    if mask.size == 0:
        return empty_mask()
    if not (mask.dtype == np.uint8 and mask.flags.f_contiguous and mask.max() <= 1):
        mask = np.asfortranarray(mask != 0, dtype=np.uint8)  # pycocotools reads 0/1 bytes in column-major order
    return _as_text(mask_utils.encode(mask))


def union_rle(rles: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The union of masks of one size (pycocotools ``merge``); empty masks are ignored, none left gives
    :data:`EMPTY_MASK`. Masks of different sizes raise ``ValueError``."""
    masks = [_as_bytes(rle) for rle in rles if not is_empty_mask(rle)]
    if not masks:
        return empty_mask()
    sizes = {tuple(rle["size"]) for rle in masks}
    if len(sizes) > 1:
        raise ValueError(f"cannot merge masks of different sizes {sorted(sizes)}")
    if len(masks) == 1:
        return _as_text(masks[0])
    return _as_text(mask_utils.merge(masks, intersect=0))


__all__ = [
    "EMPTY_MASK",
    "MASK_FEATURE",
    "decode_rle",
    "empty_mask",
    "encode_mask",
    "is_empty_mask",
    "segmentation_to_rle",
    "union_rle",
]
