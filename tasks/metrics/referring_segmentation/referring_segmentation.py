"""Referring segmentation metrics (mean IoU, cumulative IoU, precision at IoU thresholds) as an ``evaluate`` metric.

Follows PhraseCut's official evaluation: ChenyunWu/PhraseCutDataset at commit
b15fb71a1ba692ea3186498f1390e8854b681a66 (the files below are unchanged at 276470b7773d8a230aee5b5536876fbc485fb04b;
MDETR's `datasets/phrasecut_utils` imports the same commit):

- `utils/evaluator.py`, `Evaluator.eval_single_img`: per phrase (task), the ground truth is the union of the
  polygons of all the phrase's instances (`gt_polygons += ps` over `gt_Polygons`), scored against the predicted
  binary mask by `utils/iou.py` `iou_polygons_masks(gt_polygons, [pred_mask], iandu=True)`, which returns
  `iou, i, u`.
- `utils/iou.py`, `iou_polygons_masks`: the polygons are drawn on a canvas of the prediction's own size
  (`h, w = masks[0].shape`; nothing is resized), `i` = pixels in both, `u` = pixels in either, and
  `iou = 0 if i == 0 else i / u` -- so an empty prediction scores 0, an empty ground truth scores 0, and both
  empty score 0 (adding 0 to both sums of the cumulative IoU).
- `utils/evaluator.py`, `Evaluator.analyze_stats`: `mean_mask_iou = mean(iou)`, `cum_mask_iou = sum(i) / sum(u)`,
  and `pred_mask_acc[t] = sum(iou > t) / count` for t in 0.5, 0.6, 0.7, 0.8, 0.9 (strictly greater), over all
  phrases and over each subset a phrase belongs to.
- `utils/data_transfer.py`, `polygons_to_mask`: PIL's `ImageDraw.polygon(outline=1, fill=1)` with the vertices
  truncated by `int()`, polygons of fewer than 2 points skipped; `phrasecut_polygons_to_rle` rasterises a
  phrase's polygons the same way.

RefCOCO/+/g referring segmentation reports the same numbers as mIoU, overall IoU (oIoU, the cumulative IoU) and
precision@0.5..0.9; ``protocol="refcoco"`` follows LAVT (yz93/LAVT-RIS at 1da0af9f21b637c0cae9ea1363d2dd9b40e19628,
`test.py`, `evaluate` and `computeIoU`): the same IoU (0 where the union is empty), but a phrase counts towards
precision@t when its IoU >= t.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np
from pycocotools import mask as mask_utils

PROTOCOLS = ("phrasecut", "refcoco")
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)

_DESCRIPTION = """Referring segmentation metrics, as PhraseCut's official evaluation (ChenyunWu/PhraseCutDataset
`utils/evaluator.py`) computes them. Per phrase: I = pixels in both the predicted mask and the ground truth (the
union of the phrase's instances), U = pixels in either, IoU = I / U (0 when I = 0, so an empty prediction, an empty
ground truth or both give 0). "mIoU" is the mean IoU over phrases, "cIoU" the cumulative IoU sum(I) / sum(U)
(RefCOCO's "overall IoU"; NaN when every union is empty, as the official division gives), "precision@t" the
fraction of phrases with IoU > t (protocol="phrasecut") or IoU >= t (protocol="refcoco", LAVT's test.py). Masks are
compared at their given size: a prediction must have the size of its reference (the official evaluation draws the
ground truth on a canvas of the prediction's size, the image's, and resizes nothing)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one COCO compressed RLE per phrase, {"size": [height, width], "counts": str} (bytes counts are
        accepted and read as utf-8): the predicted binary mask at the image's size.
    references: per phrase, the ground truth: one RLE, or a list of instance RLEs (at least one) that are unioned.
    thresholds: the IoU thresholds of the precision entries (default 0.5, 0.6, 0.7, 0.8, 0.9).
    protocol: "phrasecut" (default; IoU > t) or "refcoco" (IoU >= t).
    subsets: optional, per phrase a list of subset names (PhraseCut's `i_single`, `s_stuff`, ...); adds every
        entry once more per subset, as "<name>/<subset>", over the phrases of that subset.
Returns:
    {"mIoU": float, "cIoU": float, "precision@0.5": float, ..., "precision@0.9": float} (fractions in [0, 1]), plus
    the per-subset entries.
Example:
    >>> metric = evaluate.load("tasks/metrics/referring_segmentation")
    >>> prediction = {"size": [4, 4], "counts": "52203"}  # rows 1-2, columns 1-2
    >>> reference = {"size": [4, 4], "counts": "522000O"}  # rows 1-2, columns 1-3
    >>> metric.compute(predictions=[prediction], references=[reference])["mIoU"]  # 4 / 6
    0.6666666666666666
"""

RLE_FEATURE = {"size": datasets.List(datasets.Value("int64")), "counts": datasets.Value("string")}


def _as_rle(rle: Any) -> Any:
    """An RLE with str counts (bytes counts decoded); anything else unchanged."""
    if isinstance(rle, dict) and isinstance(rle.get("counts"), bytes):
        return {**rle, "counts": rle["counts"].decode("utf-8")}
    return rle


def _as_instances(reference: Any) -> Any:
    """A reference as the list of its instance RLEs (a single RLE becomes a list of one)."""
    if isinstance(reference, dict):
        return [_as_rle(reference)]
    if isinstance(reference, (list, tuple)):
        return [_as_rle(rle) for rle in reference]
    return reference


def run_lengths(counts: str, where: str) -> list[int]:
    """The run lengths of a COCO compressed RLE string (pycocotools' `rleFrString`: 6-bit groups offset by 48, 5
    value bits and a continuation bit, sign-extended; from the fourth run on, the run two places back is added)."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise ValueError(f"{where}: RLE counts {counts!r} end in the middle of a number")
            group = ord(counts[position]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"{where}: RLE counts hold {counts[position]!r}, not a compressed-RLE character")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def check_rle(rle: Any, where: str) -> tuple[int, int]:
    """`(height, width)` of a well-formed compressed RLE; otherwise ValueError naming `where` and what is wrong
    (not a {"size", "counts"} dict, a size that is not [height, width], counts not covering height * width)."""
    if not isinstance(rle, dict) or set(rle) != {"size", "counts"}:
        raise ValueError(f"{where}: expected a compressed RLE {{'size': [height, width], 'counts': str}}, got {rle!r}")
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or any(int(side) < 0 for side in size):
        raise ValueError(f"{where}: RLE 'size' must be [height, width], got {size!r}")
    if not isinstance(rle["counts"], str):
        raise ValueError(f"{where}: RLE 'counts' must be a compressed string, got {type(rle['counts']).__name__}")
    height, width = int(size[0]), int(size[1])
    runs = run_lengths(rle["counts"], where)
    if any(run < 0 for run in runs) or sum(runs) != height * width:
        raise ValueError(
            f"{where}: RLE counts cover {sum(runs)} pixels (runs {runs[:6]}...), its size {[height, width]} has "
            f"{height * width}"
        )
    return height, width


def _encoded(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].encode("utf-8")}


def intersection_and_union(prediction: dict[str, Any], instances: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """Pixels in both / in either of the predicted mask and the union of the instance masks (checked RLEs, all of
    one size)."""
    predicted = _encoded(prediction)
    ground_truth = mask_utils.merge([_encoded(rle) for rle in instances], intersect=False)
    intersection = int(mask_utils.area(mask_utils.merge([predicted, ground_truth], intersect=True)))
    union = int(mask_utils.area(mask_utils.merge([predicted, ground_truth], intersect=False)))
    return intersection, union


def phrase_iou(intersection: int, union: int) -> float:
    """PhraseCut's per-phrase IoU: 0 when nothing overlaps (also when the union is empty), else I / U."""
    return 0.0 if intersection == 0 else intersection / union


def summarize(
    intersections: Sequence[int], unions: Sequence[int], thresholds: Sequence[float], protocol: str
) -> dict[str, float]:
    """mIoU, cIoU and precision@t of a group of phrases (at least one)."""
    ious = np.array([phrase_iou(i, u) for i, u in zip(intersections, unions)], dtype=np.float64)
    total_union = int(sum(unions))
    result = {
        "mIoU": float(ious.mean()),
        "cIoU": float(sum(intersections)) / total_union if total_union else float("nan"),
    }
    for threshold in thresholds:
        hits = ious > threshold if protocol == "phrasecut" else ious >= threshold
        result[f"precision@{threshold:g}"] = float(hits.sum()) / len(ious)
    return result


def phrasecut_polygons_to_rle(
    instances: Sequence[Sequence[Sequence[Sequence[float]]]], height: int, width: int
) -> dict[str, Any]:
    """A PhraseCut phrase's ground truth as the official evaluation draws it (`polygons_to_mask` of the polygons of
    all its instances): `instances` is the phrase's `Polygons` entry -- per instance a list of polygons, each a list
    of [x, y] points. Returns a compressed RLE with str counts."""
    from PIL import Image, ImageDraw

    canvas = np.zeros((height, width), dtype=bool)
    for polygons in instances:
        for polygon in polygons:
            if len(polygon) < 2:
                continue
            image = Image.new("L", (width, height), 0)
            ImageDraw.Draw(image).polygon([(int(x), int(y)) for x, y in polygon], outline=1, fill=1)
            canvas |= np.array(image) > 0
    rle = mask_utils.encode(np.asfortranarray(canvas.astype(np.uint8)))
    return {"size": [int(side) for side in rle["size"]], "counts": rle["counts"].decode("utf-8")}


class ReferringSegmentation(evaluate.Metric):
    """Referring segmentation mIoU / cIoU / precision@t (PhraseCut's official evaluation; RefCOCO's protocol)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=(
                "Wu et al., PhraseCut: Language-based Image Segmentation in the Wild, CVPR 2020; "
                "Yang et al., LAVT: Language-Aware Vision Transformer for Referring Image Segmentation, CVPR 2022."
            ),
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": RLE_FEATURE, "references": datasets.List(RLE_FEATURE)},
            ),
            reference_urls=[
                "https://github.com/ChenyunWu/PhraseCutDataset/blob/b15fb71a1ba692ea3186498f1390e8854b681a66/utils/evaluator.py",
                "https://github.com/yz93/LAVT-RIS/blob/1da0af9f21b637c0cae9ea1363d2dd9b40e19628/test.py",
            ],
        )

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """evaluate's `add_batch`; a single reference RLE becomes a list of one, bytes counts become str."""
        if isinstance(predictions, (list, tuple)) and isinstance(references, (list, tuple)):
            if len(predictions) != len(references):
                raise ValueError(f"{len(predictions)} predictions for {len(references)} references (one per phrase)")
            predictions = [_as_rle(rle) for rle in predictions]
            references = [_as_instances(reference) for reference in references]
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """evaluate's `add`; a single reference RLE becomes a list of one, bytes counts become str."""
        super().add(prediction=_as_rle(prediction), reference=_as_instances(reference), **kwargs)

    def _compute(
        self,
        predictions: list[dict[str, Any]],
        references: list[list[dict[str, Any]]],
        thresholds: Sequence[float] = THRESHOLDS,
        protocol: str = "phrasecut",
        subsets: list[list[str]] | None = None,
    ) -> dict[str, float]:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if len(predictions) == 0:
            raise ValueError("referring_segmentation needs at least one phrase")
        if subsets is not None and len(subsets) != len(predictions):
            raise ValueError(f"subsets has {len(subsets)} entries for {len(predictions)} phrases")
        intersections, unions = [], []
        for index, (prediction, instances) in enumerate(zip(predictions, references)):
            predicted_size = check_rle(prediction, f"prediction {index}")
            if not instances:
                raise ValueError(f"reference {index} has no instance mask")
            for number, rle in enumerate(instances):
                size = check_rle(rle, f"reference {index}, instance {number}")
                if size != predicted_size:
                    raise ValueError(
                        f"phrase {index}: the prediction is {list(predicted_size)} ([height, width]), its reference"
                        f" (instance {number}) is {list(size)}; masks must have the image's size"
                    )
            intersection, union = intersection_and_union(prediction, instances)
            intersections.append(intersection)
            unions.append(union)
        result = summarize(intersections, unions, thresholds, protocol)
        if subsets is not None:
            members: dict[str, list[int]] = defaultdict(list)
            for index, names in enumerate(subsets):
                for name in dict.fromkeys(names):
                    members[name].append(index)
            for name in sorted(members):
                group = members[name]
                stats = summarize([intersections[i] for i in group], [unions[i] for i in group], thresholds, protocol)
                result.update({f"{key}/{name}": value for key, value in stats.items()})
        return result
