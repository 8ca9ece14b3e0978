"""MDETR grounding loader: fields, spans, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from tasks_test_utils import FIXTURES, Mutation, WriteVariant, delete_key, set_key

from tasks.common import Glipv2DataError, SkipReport
from tasks.grounding import GROUNDING_FEATURES, MISSING_ID, load_mdetr_grounding

MDETR = str(FIXTURES / "mdetr_flickr.json")


def test_records_field_by_field(image_dir: Path) -> None:
    dataset = load_mdetr_grounding(MDETR, image_dir)
    assert dataset.features == GROUNDING_FEATURES
    assert len(dataset) == 2
    first = dataset[0]
    assert first["image_id"] == 0 and first["file_name"] == "1000092795.jpg"
    assert (first["width"], first["height"]) == (500, 333) and first["image"].size == (500, 333)
    assert first["caption"].startswith("Two young guys with shaggy hair")
    assert first["objects"] == {
        "id": [0, 1, 2],
        "bbox": [[24.0, 14.0, 152.0, 115.0], [280.0, 60.0, 169.0, 204.0], [335.0, 75.0, 65.0, 42.0]],
        "tokens_positive": [[[0, 14]], [[0, 14]], [[20, 31]]],
        "phrase_ids": [0, 0, 1],
        "category_id": [1, 1, 1],
    }
    phrases = [[first["caption"][b:e] for b, e in spans] for spans in first["objects"]["tokens_positive"]]
    assert phrases == [["Two young guys"], ["Two young guys"], ["shaggy hair"]]
    second = dataset[1]
    assert [second["caption"][b:e] for b, e in second["objects"]["tokens_positive"][0]] == ["Two young", "White males"]


def test_absent_phrase_ids_become_missing_id(image_dir: Path, write_variant: WriteVariant) -> None:
    def drop(data: dict) -> None:
        for annotation in data["annotations"]:
            del annotation["phrase_ids"]

    dataset = load_mdetr_grounding(write_variant("mdetr_flickr.json", drop), image_dir, streaming=True)
    assert next(iter(dataset))["objects"]["phrase_ids"] == [MISSING_ID] * 3


BAD = [
    ("span past caption", set_key(("annotations", 2, "tokens_positive"), [[20, 300]]), "tokens_positive", "id=2"),
    ("reversed span", set_key(("annotations", 2, "tokens_positive"), [[31, 20]]), "tokens_positive", "id=2"),
    ("empty spans", set_key(("annotations", 2, "tokens_positive"), []), "tokens_positive", "id=2"),
    ("span of floats", set_key(("annotations", 2, "tokens_positive"), [[1.0, 2.0]]), "tokens_positive", "id=2"),
    ("missing spans", delete_key(("annotations", 2, "tokens_positive")), "tokens_positive", "id=2"),
    ("box outside", set_key(("annotations", 2, "bbox"), [335.0, 75.0, 65.0, 420.0]), "bbox", "id=2"),
    ("empty caption", set_key(("images", 0, "caption"), "  "), "caption", "image id=0"),
    ("missing caption", delete_key(("images", 0, "caption")), "caption", "image id=0"),
    ("unknown image", set_key(("annotations", 2, "image_id"), 7), "image_id", "id=2"),
]


@pytest.mark.parametrize(("case", "mutate", "field", "record"), BAD, ids=[case[0] for case in BAD])
def test_bad_input(
    image_dir: Path, write_variant: WriteVariant, case: str, mutate: Mutation, field: str, record: str
) -> None:
    path = write_variant("mdetr_flickr.json", mutate)
    with pytest.raises(Glipv2DataError) as error:
        load_mdetr_grounding(path, image_dir)
    assert path in str(error.value) and record in str(error.value) and f"field '{field}'" in str(error.value)
    report = SkipReport()
    load_mdetr_grounding(path, image_dir, skip_invalid=True, report=report)
    assert report.counts[field] == 1 and report.total == 1
