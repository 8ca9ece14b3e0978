"""Segmentation data: the ``mask`` of every loaded object, checked against hand-drawn arrays and pycocotools' own
reading -- COCO instances (polygons, crowd RLE, compressed RLE), LVIS, RefCOCO through MDETR's files and COCO's
``original_id``, PhraseCut's official files -- and the synthetic generator's exact masks and referring expressions.
Bad input names its file, record and field."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools.coco import COCO
from tasks_test_utils import FIXTURES, METRICS

from tasks.common import Glipv2DataError, SkipReport
from tasks.detection import load_coco_detection
from tasks.grounding import PHRASECUT_FEATURES, load_mdetr_grounding, load_phrasecut, phrasecut_files
from tasks.grounding.phrasecut import official_polygons_mask, official_polygons_rle
from tasks.masks import EMPTY_MASK, decode_rle, encode_mask
from tasks.synthetic import COLORS, generate_synthetic_multitask, split_paths
from tasks.synthetic.scenes import BACKGROUND, SceneObject, draw_scene, shape_mask, visible_masks

COCO_FILE = FIXTURES / "segmentation_coco_instances.json"
LVIS_FILE = FIXTURES / "segmentation_lvis_v1.json"
REFCOCO_FILE = FIXTURES / "segmentation_finetune_refcoco_train.json"
REFCOCO_INSTANCES = FIXTURES / "segmentation_refcoco_instances_train2014.json"
PHRASECUT = FIXTURES / "phrasecut"


def drawn(*rows: str) -> np.ndarray:
    """A mask drawn by hand: one string per row, ``#`` for a set pixel, ``.`` for background."""
    return np.array([[char == "#" for char in row] for row in rows], dtype=np.uint8)


def write_images(root: Path, entries: list[tuple[str, int, int]]) -> Path:
    """Write a tiny image of each ``(relative path, width, height)`` under ``root``."""
    for name, width, height in entries:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (width, height), (90, 120, 150)).save(path)
    return root


def write_json(path: Path, data: Any) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return os.fspath(path)


def read_fixture(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def quiet_coco(path: Path | str) -> COCO:
    """pycocotools' COCO API on ``path`` (it prints while indexing)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(os.fspath(path))


def masks_by_id(records: Any) -> dict[int, np.ndarray]:
    """Every loaded object's decoded mask, by annotation id."""
    return {
        annotation_id: decode_rle(mask)
        for record in records
        for annotation_id, mask in zip(record["objects"]["id"], record["objects"]["mask"])
    }


# ----------------------------------------------------------------------------------------------------------------
# COCO instances and LVIS
COCO_MASKS = {
    11: drawn(  # two polygons of one object, corners on pixel edges
        "..........",
        "..####....",
        "..####....",
        "..####....",
        "..........",
        ".......##.",
        ".......##.",
        "..........",
    ),
    12: drawn(  # iscrowd: COCO's uncompressed, column-major RLE [5, 3, 5, 3, 64]
        "..........",
        "..........",
        "..........",
        "..........",
        "..........",
        "##........",
        "##........",
        "##........",
    ),
    21: drawn(  # compressed RLE "5231000O3"
        ".##...",
        ".###..",
        "..###.",
        "...##.",
        "......",
    ),
}


@pytest.fixture
def coco_images(tmp_path: Path) -> Path:
    return write_images(tmp_path / "val2017", [("seg_a.jpg", 10, 8), ("seg_b.jpg", 6, 5)])


def test_coco_polygons_crowd_rle_and_compressed_rle(coco_images: Path) -> None:
    dataset, _ = load_coco_detection(COCO_FILE, coco_images)
    first, second = dataset
    assert [m["size"] for m in first["objects"]["mask"]] == [[8, 10], [8, 10]]
    assert second["objects"]["mask"][1:] == [EMPTY_MASK, EMPTY_MASK]  # no "segmentation", and "segmentation": []
    masks = masks_by_id(dataset)
    coco = quiet_coco(COCO_FILE)
    for annotation_id, expected in COCO_MASKS.items():
        assert np.array_equal(masks[annotation_id], expected), annotation_id
        assert np.array_equal(masks[annotation_id], coco.annToMask(coco.anns[annotation_id])), annotation_id
    # the crowd region is stored compressed, at the image's size, as pycocotools compresses it
    assert first["objects"]["iscrowd"] == [0, 1]
    assert first["objects"]["mask"][1] == {"size": [8, 10], "counts": coco.annToRLE(coco.anns[12])["counts"].decode()}
    # the same records while streaming
    streamed = list(load_coco_detection(COCO_FILE, coco_images, streaming=True)[0])
    assert [r["objects"]["mask"] for r in streamed] == [first["objects"]["mask"], second["objects"]["mask"]]


def test_coco_without_masks_reads_no_segmentation(coco_images: Path, tmp_path: Path) -> None:
    data = read_fixture(COCO_FILE)
    data["annotations"][0]["segmentation"] = [[1.0, 2.0]]  # would fail if read
    dataset, _ = load_coco_detection(write_json(tmp_path / "boxes.json", data), coco_images, masks=False)
    assert all(mask == EMPTY_MASK for record in dataset for mask in record["objects"]["mask"])


def test_lvis_polygons(tmp_path: Path) -> None:
    root = write_images(tmp_path / "coco", [("val2017/000000000139.jpg", 10, 8)])
    dataset, categories = load_coco_detection(LVIS_FILE, root, prefer_coco_url=True)
    assert [c["name"] for c in categories] == ["aerosol_can", "air_conditioner", "alarm_clock"]
    (record,) = dataset
    assert record["file_name"] == "val2017/000000000139.jpg" and record["objects"]["iscrowd"] == [0, 0]
    masks = masks_by_id(dataset)
    expected = {
        1: drawn(
            "..........",
            ".###......",
            ".###......",
            "..........",
            ".....###..",
            ".....###..",
            ".....###..",
            "..........",
        ),
        2: drawn(
            "..........",
            "..........",
            "..........",
            "..........",
            "..........",
            "##........",
            "##........",
            "##........",
        ),
    }
    coco = quiet_coco(LVIS_FILE)  # LVIS v1 files read with COCO's API, as the LVIS API's ann_to_mask does
    for annotation_id, mask in expected.items():
        assert np.array_equal(masks[annotation_id], mask)
        assert np.array_equal(masks[annotation_id], coco.annToMask(coco.anns[annotation_id]))


def test_lvis_bad_polygon_names_file_record_and_field(tmp_path: Path) -> None:
    root = write_images(tmp_path / "coco", [("val2017/000000000139.jpg", 10, 8)])
    data = read_fixture(LVIS_FILE)
    data["annotations"][1]["segmentation"].append([3.0, 3.0, 4.0, 4.0])
    path = write_json(tmp_path / "lvis_v1_val.json", data)
    with pytest.raises(Glipv2DataError, match="polygon 1: 2 points; a polygon needs at least 3") as error:
        load_coco_detection(path, root, prefer_coco_url=True)
    assert (error.value.file, error.value.record, error.value.field) == (
        path,
        "annotation id=2 (image id=139)",
        "segmentation",
    )
    report = SkipReport()
    dataset, _ = load_coco_detection(path, root, prefer_coco_url=True, skip_invalid=True, report=report)
    assert report.counts == {"segmentation": 1} and dataset[0]["objects"]["id"] == [1]


# ----------------------------------------------------------------------------------------------------------------
# RefCOCO: MDETR's refexp files carry no segmentation; the mask comes from COCO's annotation `original_id`.
REFCOCO_MASKS = {
    1038967: drawn(
        "............",
        "............",
        ".####.......",
        ".####.......",
        ".####.......",
        ".####.......",
        ".####.......",
        "............",
        "............",
    ),
    1039564: drawn(
        ".......####.",
        ".......####.",
        ".......####.",
        "............",
        "............",
        "........##..",
        "........##..",
        "........##..",
        "........##..",
    ),
}


@pytest.fixture
def train2014(tmp_path: Path) -> Path:
    return write_images(tmp_path / "train2014", [("COCO_train2014_000000000009.jpg", 12, 9)])


def test_refcoco_masks_from_coco_original_id(train2014: Path) -> None:
    dataset = load_mdetr_grounding(REFCOCO_FILE, train2014, segmentation_file=REFCOCO_INSTANCES)
    assert [record["caption"] for record in dataset] == ["man on the left", "left guy", "person right"]
    coco = quiet_coco(REFCOCO_INSTANCES)
    for record, original_id in zip(dataset, (1038967, 1038967, 1039564)):
        (mask,) = record["objects"]["mask"]
        assert mask["size"] == [9, 12]
        assert np.array_equal(decode_rle(mask), REFCOCO_MASKS[original_id])
        assert np.array_equal(decode_rle(mask), coco.annToMask(coco.anns[original_id]))
    # without the COCO file the objects have no mask
    plain = load_mdetr_grounding(REFCOCO_FILE, train2014)
    assert [record["objects"]["mask"] for record in plain] == [[EMPTY_MASK]] * 3


def test_refcoco_own_segmentation_comes_first(train2014: Path, tmp_path: Path) -> None:
    data = read_fixture(REFCOCO_FILE)
    data["annotations"][2]["segmentation"] = [[0.0, 0.0, 2.0, 0.0, 2.0, 1.0, 0.0, 1.0]]
    dataset = load_mdetr_grounding(
        write_json(tmp_path / "own.json", data), train2014, segmentation_file=REFCOCO_INSTANCES
    )
    assert np.array_equal(decode_rle(dataset[2]["objects"]["mask"][0])[:2, :3], drawn("##.", "..."))
    assert decode_rle(dataset[2]["objects"]["mask"][0]).sum() == 2


def test_refcoco_bad_original_id_names_the_refexp_file(train2014: Path, tmp_path: Path) -> None:
    data = read_fixture(REFCOCO_FILE)
    data["annotations"][1]["original_id"] = 5
    path = write_json(tmp_path / "finetune_refcoco_train.json", data)
    with pytest.raises(Glipv2DataError, match="no annotation id=5 in .*segmentation_refcoco_instances") as error:
        load_mdetr_grounding(path, train2014, segmentation_file=REFCOCO_INSTANCES)
    assert (error.value.file, error.value.record, error.value.field) == (
        path,
        "annotation id=1 (image id=1)",
        "original_id",
    )
    del data["annotations"][1]["original_id"]
    path = write_json(tmp_path / "finetune_refcoco_train.json", data)
    with pytest.raises(Glipv2DataError, match="missing key") as error:
        load_mdetr_grounding(path, train2014, segmentation_file=REFCOCO_INSTANCES)
    assert error.value.field == "original_id"
    report = SkipReport()
    dataset = load_mdetr_grounding(
        path, train2014, segmentation_file=REFCOCO_INSTANCES, skip_invalid=True, report=report
    )
    assert report.counts == {"original_id": 1} and [len(r["objects"]["id"]) for r in dataset] == [1, 0, 1]


def test_refcoco_bad_coco_segmentation_names_the_coco_file(train2014: Path, tmp_path: Path) -> None:
    instances = read_fixture(REFCOCO_INSTANCES)
    instances["annotations"][1]["segmentation"] = {"size": [12, 9], "counts": [108]}  # width and height swapped
    coco_path = write_json(tmp_path / "instances_train2014.json", instances)
    with pytest.raises(Glipv2DataError, match=r"RLE size \[12, 9\] differs from the image's size \[9, 12\]") as error:
        load_mdetr_grounding(REFCOCO_FILE, train2014, segmentation_file=coco_path)
    assert error.value.file == coco_path and error.value.field == "segmentation"
    assert error.value.record.startswith("annotation id=1039564 (for annotation id=2 (image id=2) of ")
    assert str(REFCOCO_FILE) in error.value.record


# ----------------------------------------------------------------------------------------------------------------
# PhraseCut, from the official refer_<split>.json and image_data_split.json
PHRASECUT_INSTANCE_MASKS = [
    # "white plate": one polygon, float corners truncated by int() as the official polygons_to_mask does
    [
        drawn(
            "............",
            ".####.......",
            ".####.......",
            ".####.......",
            "............",
            "............",
            "............",
            "............",
            "............",
            "............",
        )
    ],
    # "people on the right": an instance of two polygons (and a one-point polygon the official code skips), and an
    # instance whose only polygon has two points (drawn as a line, outline=1)
    [
        drawn(
            "............",
            "............",
            "............",
            "............",
            "............",
            "......###...",
            "......###...",
            ".........##.",
            ".........##.",
            "............",
        ),
        drawn(
            "............",
            "............",
            "............",
            "............",
            "............",
            "............",
            "............",
            "............",
            ".######.....",
            "............",
        ),
    ],
    # "dog": a polygon reaching past the left border, clipped by the drawing
    [
        drawn(
            "........",
            "........",
            "####....",
            "####....",
            "####....",
            "........",
        )
    ],
]


def phrasecut_dir(root: Path, refer: list[dict[str, Any]] | None = None, info: list[Any] | None = None) -> Path:
    """The official layout (``data/VGPhraseCut_v0``) with the fixture files (or replacements) and tiny images."""
    folder = root / "VGPhraseCut_v0"
    write_json(folder / "refer_miniv.json", read_fixture(PHRASECUT / "refer_miniv.json") if refer is None else refer)
    write_json(
        folder / "image_data_split.json", read_fixture(PHRASECUT / "image_data_split.json") if info is None else info
    )
    write_images(folder / "images", [("2354.jpg", 12, 10), ("2367.jpg", 8, 6)])
    return folder


def official_ground_truth(task: dict[str, Any], width: int, height: int) -> np.ndarray:
    """The official evaluation's ground truth for a task, written out the way its code does it: every instance's
    polygons in one list, each of 2+ points drawn on its own blank image, the drawings summed, then > 0."""
    polygons = [polygon for instance in task["Polygons"] for polygon in instance]
    total = np.zeros((height, width))
    for polygon in polygons:
        if len(polygon) < 2:
            continue
        canvas = Image.new("L", (width, height), 0)
        ImageDraw.Draw(canvas).polygon([(int(x), int(y)) for x, y in polygon], outline=1, fill=1)
        total += np.array(canvas)
    return total > 0


def load_metric_module() -> Any:
    """The referring segmentation metric's module (it rasterises PhraseCut's polygons for itself)."""
    path = METRICS / "referring_segmentation" / "referring_segmentation.py"
    spec = importlib.util.spec_from_file_location("referring_segmentation_metric", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phrasecut_records_field_by_field(tmp_path: Path) -> None:
    files = phrasecut_files(phrasecut_dir(tmp_path), "miniv")
    dataset = load_phrasecut(**files)
    assert dataset.features == PHRASECUT_FEATURES
    plate, people, dog = dataset
    assert {key: plate[key] for key in ("image_id", "file_name", "width", "height", "caption", "task_id")} == {
        "image_id": 2354,
        "file_name": "2354.jpg",
        "width": 12,
        "height": 10,
        "caption": "white plate",
        "task_id": "2354__3001",
    }
    assert plate["image"].size == (12, 10)
    assert (plate["tokens_positive_eval"], plate["sentence_id"], plate["original_img_id"]) == ([], -1, -1)
    assert plate["phrase_structure"] == {
        "name": "plate",
        "attributes": ["white"],
        "relation_descriptions": [],
        "type": "attribute",
    }
    assert people["phrase_structure"]["relation_descriptions"] == [["on", "right"]]
    assert (plate["coco_id"], dog["coco_id"]) == (-1, 262145)
    objects = {key: value for key, value in people["objects"].items() if key != "mask"}
    assert objects == {
        "id": [1, 2],
        "bbox": [[6.0, 5.0, 5.0, 4.0], [1.0, 8.0, 6.0, 1.0]],
        "tokens_positive": [[[0, 19]], [[0, 19]]],  # each instance is the whole phrase
        "phrase_ids": [-1, -1],
        "category_id": [-1, -1],
    }
    assert plate["objects"]["bbox"] == [[1.9, 1.2, 3.8, 3.7]]
    assert dog["objects"]["bbox"] == [[0.0, 2.0, 4.0, 3.0]]  # [-3, 2, 7, 3] clipped to the image
    for record, expected in zip(dataset, PHRASECUT_INSTANCE_MASKS):
        assert [decode_rle(mask).tolist() for mask in record["objects"]["mask"]] == [m.tolist() for m in expected]
        union = np.logical_or.reduce(expected).astype(np.uint8)
        assert np.array_equal(decode_rle(record["gt_mask"]), union)


def test_phrasecut_ground_truth_is_the_official_one(tmp_path: Path) -> None:
    dataset = load_phrasecut(**phrasecut_files(phrasecut_dir(tmp_path), "miniv"))
    metric = load_metric_module()
    for task, record in zip(read_fixture(PHRASECUT / "refer_miniv.json"), dataset):
        width, height = record["width"], record["height"]
        official = official_ground_truth(task, width, height)
        assert np.array_equal(decode_rle(record["gt_mask"]), official)
        # the referring segmentation metric rasterises the same ground truth
        assert record["gt_mask"] == metric.phrasecut_polygons_to_rle(task["Polygons"], height, width)


def test_official_polygons_rle_matches_the_mask() -> None:
    """The encoder's shortcut (encoding only the region the points span) changes nothing, also for polygons
    reaching past the borders, two-point lines and skipped one-point polygons."""
    rng = random.Random(0)
    height, width = 23, 31
    for _ in range(200):
        polygons = [
            [[rng.uniform(-15, 45), rng.uniform(-15, 35)] for _ in range(rng.randint(1, 6))]
            for _ in range(rng.randint(0, 3))
        ]
        mask = official_polygons_mask(polygons, height, width)
        assert mask.shape == (height, width)
        assert official_polygons_rle(polygons, height, width) == encode_mask(mask)


def _mutated(mutate: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    tasks = read_fixture(PHRASECUT / "refer_miniv.json")
    mutate(tasks)
    return tasks


def _set(index: int, key: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
    def mutate(tasks: list[dict[str, Any]]) -> None:
        tasks[index][key] = value

    return mutate


def _set_point(tasks: list[dict[str, Any]]) -> None:
    tasks[0]["Polygons"][0][0][1] = [4.7]


def _drop_instance_polygons(tasks: list[dict[str, Any]]) -> None:
    tasks[1]["Polygons"].pop()


BAD_TASKS = [
    ("empty phrase", _set(0, "phrase", "  "), "task id='2354__3001'", "phrase", "empty string"),
    ("missing phrase", _set(2, "phrase", None), "task id='2367__4001'", "phrase", "expected str, got NoneType"),
    ("one-number point", _set_point, "task id='2354__3001'", "Polygons", r"instance 0, polygon 0: expected \[x, y\]"),
    ("fewer polygon lists", _drop_instance_polygons, "task id='2354__3002_3003'", "Polygons", "1 instance polygon"),
    ("unknown image", _set(2, "image_id", 99), "task id='2367__4001'", "image_id", "image id 99 is not in"),
    ("duplicate task", _set(1, "task_id", "2354__3001"), "task id='2354__3001'", "task_id", "duplicate id"),
    ("empty task id", _set(1, "task_id", ""), "task id=''", "task_id", "empty string"),
    (
        "box outside",
        _set(2, "instance_boxes", [[9.0, 1.0, 2.0, 2.0]]),
        "task id='2367__4001'",
        "instance_boxes",
        "outside the 8x6",
    ),
    (
        "bad structure",
        _set(0, "phrase_structure", {"attributes": []}),
        "task id='2354__3001'",
        "phrase_structure",
        "'name'",
    ),
]


@pytest.mark.parametrize(
    ("case", "mutate", "record", "field", "problem"), BAD_TASKS, ids=[case[0] for case in BAD_TASKS]
)
def test_phrasecut_bad_task_names_file_record_and_field(
    tmp_path: Path, case: str, mutate: Callable, record: str, field: str, problem: str
) -> None:
    files = phrasecut_files(phrasecut_dir(tmp_path, refer=_mutated(mutate)), "miniv")
    with pytest.raises(Glipv2DataError, match=problem) as error:
        load_phrasecut(**files)
    assert (error.value.file, error.value.record, error.value.field) == (files["refer_file"], record, field)
    report = SkipReport()
    dataset = load_phrasecut(**files, skip_invalid=True, report=report)
    assert report.counts == {field: 1} and len(dataset) == 2


def test_phrasecut_bad_image_entry_or_file(tmp_path: Path) -> None:
    info = read_fixture(PHRASECUT / "image_data_split.json")
    del info[1]["width"]
    files = phrasecut_files(phrasecut_dir(tmp_path / "a", info=info), "miniv")
    with pytest.raises(Glipv2DataError, match="missing key") as error:
        load_phrasecut(**files)
    assert (error.value.file, error.value.record, error.value.field) == (
        files["image_info_file"],
        "image id=2367",
        "width",
    )
    files = phrasecut_files(phrasecut_dir(tmp_path / "b"), "miniv")
    os.remove(Path(files["image_dir"]) / "2367.jpg")
    with pytest.raises(Glipv2DataError, match="image file not found") as error:
        load_phrasecut(**files)
    assert (error.value.file, error.value.record, error.value.field) == (
        files["refer_file"],
        "task id='2367__4001'",
        "image_id",
    )
    with pytest.raises(ValueError, match="unknown PhraseCut split 'dev'"):
        phrasecut_files(tmp_path, "dev")


# ----------------------------------------------------------------------------------------------------------------
# The synthetic generator: exact masks (visible part after occlusion) and referring expressions


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_multitask(root, seed=11, num_train=12, num_val=4)
    return root


def test_visible_masks_follow_the_drawing_order() -> None:
    square = SceneObject("red", "square", (4, 4, 20, 20))
    circle = SceneObject("blue", "circle", (14, 12, 30, 28))
    star = SceneObject("green", "star", (1, 18, 13, 30))
    objects = [square, circle, star]
    pixels = np.asarray(draw_scene(objects, 32))
    visible = visible_masks(objects, 32)
    for obj, mask in zip(objects, visible):
        assert np.array_equal(mask, (pixels == COLORS[obj.color]).all(-1)), obj.name
    # the circle and the star cover part of the square; nothing covers the star, drawn last
    assert (shape_mask(square, 32) & ~visible[0]).sum() > 0
    assert np.array_equal(visible[2], shape_mask(star, 32))
    square_only = np.zeros((32, 32), dtype=bool)
    square_only[4:20, 4:20] = True
    assert np.array_equal(shape_mask(square, 32), square_only)  # the square fills its box's pixels x0..x1-1


def test_synthetic_masks_are_the_visible_pixels(synthetic: Path) -> None:
    names = {c["id"]: c["name"] for c in json.loads((synthetic / "metadata.json").read_text())["categories"]}
    checked = 0
    for split in ("train", "val", "val_unseen"):
        paths = split_paths(synthetic, split)
        dataset, _ = load_coco_detection(paths.instances, paths.image_dir)
        for record in dataset:
            pixels = np.asarray(record["image"].convert("RGB"))
            masks = [decode_rle(mask).astype(bool) for mask in record["objects"]["mask"]]
            colors = [names[category].split()[0] for category in record["objects"]["category_id"]]
            for mask, color, (x, y, w, h) in zip(masks, colors, record["objects"]["bbox"]):
                assert mask.shape == pixels.shape[:2] and mask.any()
                assert not mask[: int(y)].any() and not mask[:, : int(x)].any()  # inside the object's box
                assert not mask[int(y + h) :].any() and not mask[:, int(x + w) :].any()
                if colors.count(color) == 1:  # the colour is this object's alone: its pixels are the mask
                    assert np.array_equal(mask, (pixels == COLORS[color]).all(-1))
                    checked += 1
            assert sum(mask.astype(int) for mask in masks).max() <= 1  # no pixel belongs to two objects
            assert np.array_equal(np.logical_or.reduce(masks), (pixels != BACKGROUND).any(-1))
    assert checked >= 20


def test_synthetic_segmentation_in_every_file(synthetic: Path) -> None:
    paths = split_paths(synthetic, "val")
    instances = json.loads(Path(paths.instances).read_text())
    for annotation in instances["annotations"]:
        segmentation = annotation["segmentation"]
        assert segmentation["size"] == [128, 128] and isinstance(segmentation["counts"], str)
    detection, _ = load_coco_detection(paths.instances, paths.image_dir)
    grounding = load_mdetr_grounding(paths.grounding, paths.image_dir)
    for det, ground in zip(detection["objects"], grounding["objects"]):
        assert ground["bbox"] == det["bbox"] and ground["mask"] == det["mask"]
        assert det["mask"] == [encode_mask(decode_rle(mask)) for mask in det["mask"]]  # canonical compressed RLE


def test_synthetic_referring_expressions(synthetic: Path, tmp_path: Path) -> None:
    paths = split_paths(synthetic, "train")
    detection, categories = load_coco_detection(paths.instances, paths.image_dir)
    names = {c["id"]: c["name"] for c in categories}
    instances = {
        annotation_id: (record["file_name"], bbox, names[category], mask)
        for record in detection
        for annotation_id, bbox, category, mask in zip(
            record["objects"]["id"],
            record["objects"]["bbox"],
            record["objects"]["category_id"],
            record["objects"]["mask"],
        )
    }
    refexp = load_mdetr_grounding(paths.refexp, paths.image_dir)
    assert len(refexp) == len(instances)  # one expression per object
    for record in refexp:
        (annotation_id,) = record["objects"]["id"]
        file_name, bbox, name, mask = instances[annotation_id]
        assert record["caption"] == f"the {name}" and record["file_name"] == file_name
        ((begin, end),) = record["objects"]["tokens_positive"][0]
        assert record["caption"][begin:end] == name
        assert record["objects"]["bbox"] == [bbox] and record["objects"]["mask"] == [mask]
    # RefCOCO's way: without its own segmentation, each expression's mask comes from the instances file
    data = json.loads(Path(paths.refexp).read_text())
    for annotation in data["annotations"]:
        del annotation["segmentation"]
    stripped = write_json(tmp_path / "refexp_no_masks.json", data)
    via_original_id = load_mdetr_grounding(stripped, paths.image_dir, segmentation_file=paths.instances)
    assert via_original_id["objects"] == refexp["objects"]
