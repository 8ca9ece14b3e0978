"""tasks.masks: COCO RLE masks through pycocotools -- round trips, the three COCO segmentation forms against
pycocotools' own reading, and bad input named by file, record and field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from tasks.common import Glipv2DataError, RecordChecker
from tasks.masks import (
    EMPTY_MASK,
    decode_rle,
    empty_mask,
    encode_mask,
    is_empty_mask,
    segmentation_to_rle,
    union_rle,
)

FILE = "instances_val2017.json"
RECORD = "annotation id=7 (image id=3)"
CHECKER = RecordChecker(FILE)

# A 5 x 6 mask drawn by hand; its pixel-edge polygon and its column-major run lengths (background first).
HAND = np.array(
    [
        [0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1],
    ],
    dtype=np.uint8,
)
HAND_RECTANGLE = [1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0]  # the 3 x 2 block, corners on pixel edges
HAND_COUNTS = [6, 2, 3, 2, 3, 2, 11, 1]  # columns 0..5: 5 background, then 1-2 rows set in columns 1..3, 1 at the end


def _reference_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """pycocotools' reading of a COCO segmentation (``COCO.annToRLE``), counts as str."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    counts = rle["counts"]
    return {"size": [height, width], "counts": counts.decode() if isinstance(counts, bytes) else counts}


def _rle(segmentation: Any, height: int = 5, width: int = 6) -> dict[str, Any]:
    return segmentation_to_rle(segmentation, height, width, CHECKER, RECORD)


def test_encode_decode_round_trip() -> None:
    rng = np.random.default_rng(0)
    for shape in [(5, 6), (1, 1), (17, 3), (64, 48)]:
        mask = rng.random(shape) < 0.4
        rle = encode_mask(mask)
        assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
        decoded = decode_rle(rle)
        assert decoded.dtype == np.uint8 and np.array_equal(decoded, mask)
        # the stored string is exactly pycocotools' own encoding, which decodes the same
        assert rle["counts"].encode() == mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]
        assert np.array_equal(mask_utils.decode({"size": list(shape), "counts": rle["counts"].encode()}), mask)
    # torch tensors, uint8 0/1 in either memory order, and nonzero uint8 all encode the same mask
    assert encode_mask(torch.from_numpy(HAND)) == encode_mask(HAND.astype(bool)) == encode_mask(HAND * 255)
    assert encode_mask(np.asfortranarray(HAND)) == encode_mask(HAND)


def test_hand_drawn_mask_in_all_three_coco_forms() -> None:
    polygon = _rle([HAND_RECTANGLE, [5.0, 4.0, 6.0, 4.0, 6.0, 5.0, 5.0, 5.0]])
    uncompressed = _rle({"size": [5, 6], "counts": HAND_COUNTS})
    compressed = _rle({"size": [5, 6], "counts": encode_mask(HAND)["counts"]})
    for rle in (polygon, uncompressed, compressed):
        assert np.array_equal(decode_rle(rle), HAND)
        assert rle == encode_mask(HAND)


@pytest.mark.parametrize(
    "segmentation",
    [
        [[0.5, 0.5, 5.2, 1.0, 3.3, 4.9]],  # a triangle with sub-pixel corners
        [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0], [3.0, 3.0, 6.0, 3.0, 6.0, 5.0, 3.0, 5.0]],  # one object in two parts
        [[-2.0, -1.0, 9.0, -1.0, 9.0, 2.5, -2.0, 2.5]],  # past the borders: clipped, as pycocotools does
        {"size": [5, 6], "counts": [0, 3, 4, 1, 22]},  # crowd RLE starting with foreground
        {"size": [5, 6], "counts": [30]},  # crowd RLE without foreground
        {"size": [5, 6], "counts": "5231000O3"},  # compressed, as pycocotools writes it
    ],
    ids=["triangle", "two-parts", "clipped", "crowd", "crowd-empty", "compressed"],
)
def test_segmentation_reads_as_pycocotools_does(segmentation: Any) -> None:
    rle = _rle(segmentation)
    assert rle == _reference_rle(segmentation, 5, 6)
    expected = mask_utils.decode({"size": [5, 6], "counts": _reference_rle(segmentation, 5, 6)["counts"].encode()})
    assert np.array_equal(decode_rle(rle), expected)


def test_no_segmentation_is_the_empty_mask() -> None:
    for segmentation in (None, []):
        assert _rle(segmentation) == EMPTY_MASK == {"size": [0, 0], "counts": ""}
    assert is_empty_mask(EMPTY_MASK) and not is_empty_mask(encode_mask(np.zeros((2, 3), dtype=bool)))
    assert decode_rle(EMPTY_MASK).shape == (0, 0)
    assert encode_mask(np.zeros((0, 4), dtype=bool)) == EMPTY_MASK
    fresh = empty_mask()
    fresh["size"].append(1)
    assert EMPTY_MASK["size"] == [0, 0]  # copies, never the shared constant


def test_union() -> None:
    left, right = np.zeros((4, 5), dtype=bool), np.zeros((4, 5), dtype=bool)
    left[:, :2], right[1:3, 1:4] = True, True
    union = union_rle([encode_mask(left), EMPTY_MASK, encode_mask(right)])
    assert np.array_equal(decode_rle(union), left | right)
    assert union_rle([encode_mask(left)]) == encode_mask(left)
    assert union_rle([]) == union_rle([EMPTY_MASK]) == EMPTY_MASK
    with pytest.raises(ValueError, match="different sizes"):
        union_rle([encode_mask(left), encode_mask(np.zeros((5, 4), dtype=bool))])


BAD_SEGMENTATIONS = [
    ("two points", [[1.0, 1.0, 4.0, 3.0]], "polygon 0: 2 points; a polygon needs at least 3"),
    ("one point", [HAND_RECTANGLE, [1.0, 1.0]], "polygon 1: 1 points; a polygon needs at least 3"),
    ("empty polygon", [[]], "polygon 0: 0 points"),
    ("odd coordinates", [[1.0, 1.0, 4.0, 1.0, 4.0]], "polygon 0: odd number of coordinates"),
    ("string coordinate", [[1.0, "1", 4.0, 1.0, 4.0, 3.0]], "polygon 0: non-numeric value '1'"),
    ("boolean coordinate", [[1.0, True, 4.0, 1.0, 4.0, 3.0]], "non-numeric value True"),
    ("nan", [[1.0, float("nan"), 4.0, 1.0, 4.0, 3.0]], "polygon 0: non-finite value nan"),
    ("huge integer", [[1, 10**400, 4, 1, 4, 3]], "non-finite value"),
    ("points as pairs", [[[1.0, 1.0], [4.0, 1.0], [4.0, 3.0]]], "non-numeric value"),
    ("not a polygon list", "1 1 4 1 4 3", "expected a list of polygons or an RLE object, got str"),
    ("polygon not a list", [(1.0, 1.0, 4.0, 1.0, 4.0, 3.0)], "polygon 0: expected a flat list"),
    ("crowd of the wrong size", {"size": [6, 5], "counts": [30]}, r"RLE size \[6, 5\] differs from the image's"),
    ("compressed of the wrong size", {"size": [5, 7], "counts": "5231000O3"}, r"RLE size \[5, 7\] differs"),
    ("size of three", {"size": [5, 6, 1], "counts": [30]}, "RLE size: expected"),
    ("size as strings", {"size": ["5", "6"], "counts": [30]}, "RLE size: expected"),
    ("no counts", {"size": [5, 6]}, "RLE without 'counts'"),
    ("no size", {"counts": [30]}, "RLE without 'size'"),
    ("crowd too short", {"size": [5, 6], "counts": [10, 5]}, "RLE counts cover 15 pixels, the 5x6 image has 30"),
    ("crowd too long", {"size": [5, 6], "counts": [10, 25]}, "RLE counts cover 35 pixels"),
    ("negative run", {"size": [5, 6], "counts": [40, -10]}, "non-negative integers"),
    ("float run", {"size": [5, 6], "counts": [20.0, 10]}, "non-negative integers"),
    ("compressed too short", {"size": [5, 6], "counts": "52"}, "do not encode exactly 5x6 pixels"),
    ("compressed too long", {"size": [5, 6], "counts": "5231000O3oooo"}, "run past the 5x6 image"),
    ("compressed bad characters", {"size": [5, 6], "counts": "5231 000O3"}, "characters outside '0'..'o'"),
    ("counts as a number", {"size": [5, 6], "counts": 30}, "RLE counts: expected a list of integers or a string"),
]


@pytest.mark.parametrize(
    ("case", "segmentation", "problem"), BAD_SEGMENTATIONS, ids=[case[0] for case in BAD_SEGMENTATIONS]
)
def test_bad_segmentation_names_file_record_and_field(case: str, segmentation: Any, problem: str) -> None:
    with pytest.raises(Glipv2DataError, match=problem) as error:
        _rle(segmentation)
    assert (error.value.file, error.value.record, error.value.field) == (FILE, RECORD, "segmentation")
    assert str(error.value).startswith(f"{FILE}: {RECORD}: field 'segmentation': ")


def test_field_name_is_the_callers() -> None:
    with pytest.raises(Glipv2DataError) as error:
        segmentation_to_rle([[1.0, 2.0]], 5, 6, CHECKER, "task id='7__1'", field="Polygons")
    assert error.value.field == "Polygons" and error.value.record == "task id='7__1'"


def test_encode_rejects_what_is_not_a_mask() -> None:
    with pytest.raises(ValueError, match="2D"):
        encode_mask(np.zeros((2, 3, 1), dtype=bool))
    with pytest.raises(ValueError, match="dtype float32"):
        encode_mask(np.zeros((2, 3), dtype=np.float32))
