"""COCO captions and Karpathy split loaders, and generic image-text pairs."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from PIL import Image
from tasks_test_utils import FIXTURES, Mutation, WriteVariant, set_key

from tasks.captioning import CAPTION_FEATURES, load_coco_captions, load_karpathy_split
from tasks.classification import PAIR_FEATURES, load_image_text_pairs
from tasks.common import Glipv2DataError, SkipReport

CAPTIONS = str(FIXTURES / "captions.json")
KARPATHY = str(FIXTURES / "dataset_coco.json")


def test_coco_captions_records(image_dir: Path) -> None:
    dataset = load_coco_captions(CAPTIONS, image_dir)
    assert dataset.features == CAPTION_FEATURES
    assert dataset[0]["image_id"] == 397133 and dataset[0]["file_name"] == "000000397133.jpg"
    assert dataset[0]["captions"] == [
        "A man is in a kitchen making pizzas.",
        "Man in apron standing on front of oven with pans and bakeware",
    ]
    assert dataset[0]["caption_ids"] == [370509, 370584]
    assert dataset[1]["captions"] == ["The dining table near the kitchen has a bowl of fruit on it."]
    assert dataset[1]["image"].size == (352, 230)


@pytest.mark.parametrize(
    ("mutate", "field", "record"),
    [
        (set_key(("annotations", 1, "caption"), ""), "caption", "caption id=370584"),
        (set_key(("annotations", 1, "image_id"), 1), "image_id", "caption id=370584"),
        (set_key(("annotations", 1, "id"), 370509), "id", "caption id=370509"),
        (set_key(("annotations", 1, "caption"), 7), "caption", "caption id=370584"),
    ],
)
def test_coco_captions_bad_input(
    image_dir: Path, write_variant: WriteVariant, mutate: Mutation, field: str, record: str
) -> None:
    path = write_variant("captions.json", mutate)
    with pytest.raises(Glipv2DataError, match=rf"{record}.*field '{field}'"):
        load_coco_captions(path, image_dir)
    report = SkipReport()
    dataset = load_coco_captions(path, image_dir, skip_invalid=True, report=report)
    assert report.counts == {field: 1} and len(dataset[0]["captions"]) == 1


def test_karpathy_split(image_dir: Path) -> None:
    test = load_karpathy_split(KARPATHY, image_dir, "test")
    assert len(test) == 1
    assert test[0]["image_id"] == 397133 and test[0]["file_name"] == "val2014/COCO_val2014_000000397133.jpg"
    assert test[0]["captions"] == ["A man is in a kitchen making pizzas.", "Man in apron standing on front of oven"]
    assert test[0]["caption_ids"] == [770337, 771687]
    train = load_karpathy_split(KARPATHY, image_dir, ("train", "restval"), streaming=True)
    assert [row["image_id"] for row in train] == [37777, 42]
    with pytest.raises(ValueError, match="unknown Karpathy split"):
        load_karpathy_split(KARPATHY, image_dir, "dev")


def test_karpathy_bad_input(image_dir: Path, write_variant: WriteVariant) -> None:
    path = write_variant("dataset_coco.json", set_key(("images", 0, "sentences", 1, "raw"), " "))
    with pytest.raises(Glipv2DataError, match=r"image id=397133: field 'raw'"):
        load_karpathy_split(path, image_dir, "test")
    path = write_variant("dataset_coco.json", set_key(("images", 0, "filename"), "missing.jpg"))
    with pytest.raises(Glipv2DataError, match=r"image id=397133: field 'file_name': image file not found"):
        load_karpathy_split(path, image_dir, "test")
    report = SkipReport()
    assert len(load_karpathy_split(path, image_dir, "test", skip_invalid=True, report=report)) == 0
    assert report.counts == {"file_name": 1}


def test_image_text_pairs_from_dataset(image_dir: Path) -> None:
    source = datasets.Dataset.from_dict(
        {
            "photo": [str(image_dir / "000000397133.jpg"), str(image_dir / "000000037777.jpg")],
            "alt": ["a kitchen", "fruit on a table"],
            "extra": [1, 2],
        }
    )
    pairs = load_image_text_pairs(source, image_column="photo", text_column="alt")
    assert pairs.features == PAIR_FEATURES
    assert pairs[1]["text"] == "fruit on a table" and isinstance(pairs[1]["image"], Image.Image)
    with pytest.raises(Glipv2DataError, match=r"field 'caption': missing column"):
        load_image_text_pairs(source, image_column="photo", text_column="caption")
    bad = source.map(lambda row, i: {"alt": "" if i == 0 else row["alt"]}, with_indices=True)
    with pytest.raises(Glipv2DataError, match=r"row 0: field 'alt'"):
        load_image_text_pairs(bad, image_column="photo", text_column="alt")
    report = SkipReport()
    kept = load_image_text_pairs(bad, image_column="photo", text_column="alt", skip_invalid=True, report=report)
    assert kept["text"] == ["fruit on a table"] and report.counts == {"alt": 1}


def test_image_text_pairs_from_jsonl(tmp_path: Path, image_dir: Path) -> None:
    (tmp_path / "a.jpg").write_bytes((image_dir / "000000037777.jpg").read_bytes())
    lines = [{"image": "a.jpg", "text": "fruit"}, {"image": "missing.jpg", "text": "gone"}]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    with pytest.raises(Glipv2DataError, match=r"pairs.jsonl: line 2: field 'file_name'"):
        load_image_text_pairs(tmp_path / "pairs.jsonl")
    report = SkipReport()
    pairs = load_image_text_pairs(tmp_path / "pairs.jsonl", skip_invalid=True, report=report, streaming=True)
    rows = list(pairs)
    assert [row["text"] for row in rows] == ["fruit"] and rows[0]["image"].size == (352, 230)
    (tmp_path / "broken.jsonl").write_text('{"image": "a.jpg", "text": "x"}\n{oops\n')
    with pytest.raises(Glipv2DataError, match=r"line 2: field '<line>': invalid JSON"):
        load_image_text_pairs(tmp_path / "broken.jsonl")
