"""COCO instances loader: fields, streaming, and every kind of bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import pytest
from pycocotools import mask as mask_utils
from tasks_test_utils import FIXTURES, Mutation, WriteVariant, delete_key, set_key

from tasks.common import Glipv2DataError, SkipReport
from tasks.detection import DETECTION_FEATURES, load_coco_detection

COCO = str(FIXTURES / "coco_instances.json")


def test_records_field_by_field(image_dir: Path) -> None:
    dataset, categories = load_coco_detection(COCO, image_dir)
    assert isinstance(dataset, datasets.Dataset)
    assert dataset.features == DETECTION_FEATURES
    assert categories == [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 62, "name": "chair"}]
    assert len(dataset) == 2
    first, second = dataset[0], dataset[1]
    assert (first["image_id"], first["file_name"], first["width"], first["height"]) == (
        397133,
        "000000397133.jpg",
        640,
        427,
    )
    assert first["image"].size == (640, 427)
    masks = first["objects"].pop("mask")
    assert first["objects"] == {
        "id": [200887, 1218137],
        "bbox": [[388.66, 69.92, 109.41, 277.62], [0.0, 262.81, 62.16, 36.77]],
        "category_id": [1, 62],
        "area": [27789.11625, 1329.6],
        "iscrowd": [0, 0],
    }
    # the segmentation polygons as pycocotools' compressed RLE at the image's size
    assert [mask["size"] for mask in masks] == [[427, 640], [427, 640]]
    chair = mask_utils.merge(mask_utils.frPyObjects([[22.8, 210.12, 25.3, 206.6, 30.1, 215.4]], 427, 640))
    assert masks[1] == {"size": [427, 640], "counts": chair["counts"].decode()}
    assert second["image_id"] == 37777
    assert second["objects"]["id"] == [900100037777]
    assert second["objects"]["category_id"] == [18]
    assert second["objects"]["iscrowd"] == [1]
    crowd = mask_utils.frPyObjects({"counts": [179, 27, 392, 41, 80321], "size": [230, 352]}, 230, 352)
    assert second["objects"]["mask"] == [{"size": [230, 352], "counts": crowd["counts"].decode()}]


def test_streaming_gives_the_same_records(image_dir: Path) -> None:
    dataset, _ = load_coco_detection(COCO, image_dir)
    streamed, _ = load_coco_detection(COCO, image_dir, streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    rows = list(streamed.remove_columns("image"))
    assert rows == list(dataset.remove_columns("image"))


def test_box_may_end_within_one_pixel_of_the_border(image_dir: Path, write_variant: WriteVariant) -> None:
    path = write_variant("coco_instances.json", set_key(("annotations", 0, "bbox"), [600.0, 400.0, 40.9, 27.9]))
    dataset, _ = load_coco_detection(path, image_dir)
    assert dataset[0]["objects"]["bbox"][0] == [600.0, 400.0, 40.9, 27.9]


def test_missing_area_and_iscrowd_get_defaults(image_dir: Path, write_variant: WriteVariant) -> None:
    def drop(data: dict) -> None:
        del data["annotations"][0]["area"], data["annotations"][0]["iscrowd"]

    dataset, _ = load_coco_detection(write_variant("coco_instances.json", drop), image_dir)
    assert dataset[0]["objects"]["area"][0] == pytest.approx(109.41 * 277.62)
    assert dataset[0]["objects"]["iscrowd"][0] == 0


BAD_ANNOTATIONS = [
    ("negative box", set_key(("annotations", 0, "bbox"), [-20.0, 5.0, 10.0, 10.0]), "bbox"),
    ("slightly negative", set_key(("annotations", 0, "bbox"), [5.0, -0.5, 10.0, 10.0]), "bbox"),
    ("outside image", set_key(("annotations", 0, "bbox"), [600.0, 5.0, 100.0, 10.0]), "bbox"),
    ("nan", set_key(("annotations", 0, "bbox"), [float("nan"), 5.0, 10.0, 10.0]), "bbox"),
    ("zero area", set_key(("annotations", 0, "bbox"), [5.0, 5.0, 0.0, 10.0]), "bbox"),
    ("three numbers", set_key(("annotations", 0, "bbox"), [5.0, 5.0, 10.0]), "bbox"),
    ("string in box", set_key(("annotations", 0, "bbox"), ["5", 5.0, 10.0, 10.0]), "bbox"),
    ("unknown category", set_key(("annotations", 0, "category_id"), 999), "category_id"),
    ("unknown image", set_key(("annotations", 0, "image_id"), 123), "image_id"),
    ("category as string", set_key(("annotations", 0, "category_id"), "1"), "category_id"),
    ("missing bbox", delete_key(("annotations", 0, "bbox")), "bbox"),
    ("duplicate id", set_key(("annotations", 1, "id"), 200887), "id"),
    ("two-point polygon", set_key(("annotations", 0, "segmentation"), [[224.2, 297.1, 228.2, 297.1]]), "segmentation"),
    (
        "crowd RLE of the wrong size",
        set_key(("annotations", 2, "segmentation"), {"counts": [179, 27, 392, 41, 80321], "size": [352, 230]}),
        "segmentation",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "field"), BAD_ANNOTATIONS, ids=[case[0] for case in BAD_ANNOTATIONS])
def test_bad_annotation_raises_then_skips(
    image_dir: Path, write_variant: WriteVariant, case: str, mutate: Mutation, field: str
) -> None:
    path = write_variant("coco_instances.json", mutate)
    with pytest.raises(Glipv2DataError) as error:
        load_coco_detection(path, image_dir)
    message = str(error.value)
    assert path in message and f"field '{field}'" in message and "annotation id=" in message
    assert error.value.field == field
    report = SkipReport()
    dataset, _ = load_coco_detection(path, image_dir, skip_invalid=True, report=report)
    assert report.counts == {field: 1}
    assert sum(len(objects["id"]) for objects in dataset["objects"]) == 2


BAD_IMAGES = [
    ("missing file", set_key(("images", 0, "file_name"), "nope.jpg"), "file_name"),
    ("empty file name", set_key(("images", 0, "file_name"), ""), "file_name"),
    ("width as string", set_key(("images", 0, "width"), "640"), "width"),
    ("missing height", delete_key(("images", 0, "height")), "height"),
    ("duplicate image id", set_key(("images", 1, "id"), 397133), "id"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), BAD_IMAGES, ids=[case[0] for case in BAD_IMAGES])
def test_bad_image_raises_then_skips(
    image_dir: Path, write_variant: WriteVariant, case: str, mutate: Mutation, field: str
) -> None:
    path = write_variant("coco_instances.json", mutate)
    with pytest.raises(Glipv2DataError, match=rf"image id=397133: field '{field}'") as error:
        load_coco_detection(path, image_dir)
    assert path in str(error.value)
    report = SkipReport()
    dataset, _ = load_coco_detection(path, image_dir, skip_invalid=True, report=report)
    assert report.total >= 1 and report.counts[field] == 1
    assert len(dataset) == 1


def test_skips_are_logged(image_dir: Path, write_variant: WriteVariant, caplog: pytest.LogCaptureFixture) -> None:
    path = write_variant("coco_instances.json", set_key(("annotations", 0, "category_id"), 999))
    with caplog.at_level(logging.WARNING):
        load_coco_detection(path, image_dir, skip_invalid=True)
    assert "skipping invalid record" in caplog.text and "skipped 1 invalid records" in caplog.text


def test_corrupt_image_is_caught_by_verify(tmp_path: Path, image_dir: Path, write_variant: WriteVariant) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "000000037777.jpg").write_bytes((image_dir / "000000037777.jpg").read_bytes())
    path = write_variant("coco_instances.json", set_key(("images", 0, "file_name"), "broken.jpg"))
    load_coco_detection(path, tmp_path)  # only existence is checked by default
    with pytest.raises(Glipv2DataError, match=r"image id=397133: field 'file_name': corrupt image"):
        load_coco_detection(path, tmp_path, verify_images=True)


def test_unparseable_and_missing_files(tmp_path: Path, image_dir: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(Glipv2DataError, match="cannot parse JSON"):
        load_coco_detection(tmp_path / "bad.json", image_dir)
    with pytest.raises(Glipv2DataError, match="file not found"):
        load_coco_detection(tmp_path / "absent.json", image_dir)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(Glipv2DataError, match="expected a JSON dict"):
        load_coco_detection(tmp_path / "list.json", image_dir)


def test_missing_top_level_key(image_dir: Path, write_variant: WriteVariant) -> None:
    path = write_variant("coco_instances.json", delete_key(("categories",)))
    with pytest.raises(Glipv2DataError, match=r"<root>: field 'categories': missing key"):
        load_coco_detection(path, image_dir)


def test_streaming_verifies_images_as_records_are_produced(
    tmp_path: Path, image_dir: Path, write_variant: WriteVariant
) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "000000037777.jpg").write_bytes((image_dir / "000000037777.jpg").read_bytes())
    path = write_variant("coco_instances.json", set_key(("images", 0, "file_name"), "broken.jpg"))
    streamed, _ = load_coco_detection(path, tmp_path, streaming=True, verify_images=True)  # nothing read yet
    with pytest.raises(Glipv2DataError, match=r"image id=397133: field 'file_name': corrupt image"):
        list(streamed)
    report = SkipReport()
    streamed, _ = load_coco_detection(
        path, tmp_path, streaming=True, verify_images=True, skip_invalid=True, report=report
    )
    assert report.total == 0
    assert [row["image_id"] for row in streamed] == [37777]
    assert report.counts == {"file_name": 1}


def _lvis_style(data: dict) -> None:
    """LVIS v1 image entries: `coco_url` and no `file_name`."""
    for image in data["images"]:
        del image["file_name"]


@pytest.fixture
def coco_root(tmp_path: Path, image_dir: Path) -> Path:
    """A COCO image root: the fixture's two val2017 images in `val2017/`."""
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    for name in ("000000397133.jpg", "000000037777.jpg"):
        (root / "val2017" / name).write_bytes((image_dir / name).read_bytes())
    return root


def test_lvis_entries_take_their_path_from_coco_url(coco_root: Path, write_variant: WriteVariant) -> None:
    # as detectron2's load_lvis_json: the split folder and file name ending coco_url, under the COCO root
    dataset, _ = load_coco_detection(write_variant("coco_instances.json", _lvis_style), coco_root)
    assert dataset["file_name"] == ["val2017/000000397133.jpg", "val2017/000000037777.jpg"]
    assert dataset[0]["image"].size == (640, 427)


def test_file_name_wins_unless_coco_url_is_preferred(
    coco_root: Path, image_dir: Path, write_variant: WriteVariant
) -> None:
    dataset, _ = load_coco_detection(COCO, image_dir)  # a COCO file: file_name relative to val2017/ itself
    assert dataset["file_name"][0] == "000000397133.jpg"
    dataset, _ = load_coco_detection(COCO, coco_root, prefer_coco_url=True)  # the LVIS loaders' rule
    assert dataset["file_name"][0] == "val2017/000000397133.jpg"


BAD_LVIS_IMAGES = [
    ("neither file_name nor coco_url", delete_key(("images", 0, "coco_url")), "file_name", "missing key"),
    ("url without a folder", set_key(("images", 0, "coco_url"), "000000397133.jpg"), "coco_url", "expected a URL"),
    ("coco_url not a string", set_key(("images", 0, "coco_url"), 7), "coco_url", "expected str"),
    ("no such image", set_key(("images", 0, "coco_url"), "http://h/train2017/000000397133.jpg"), "coco_url",
     "image file not found"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "mutate", "field", "problem"), BAD_LVIS_IMAGES, ids=[c[0] for c in BAD_LVIS_IMAGES])
def test_bad_lvis_image_entry_names_file_record_and_field(
    coco_root: Path, write_variant: WriteVariant, case: str, mutate: Mutation, field: str, problem: str
) -> None:
    def variant(data: dict) -> None:
        _lvis_style(data)
        mutate(data)

    path = write_variant("coco_instances.json", variant)
    with pytest.raises(Glipv2DataError, match=rf"image id=397133: field '{field}': {problem}") as error:
        load_coco_detection(path, coco_root)
    assert error.value.file == path
    report = SkipReport()
    dataset, _ = load_coco_detection(path, coco_root, skip_invalid=True, report=report)
    assert report.counts == {field: 1} and dataset["image_id"] == [37777]
