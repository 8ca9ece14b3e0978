"""MDETR grounding loader: fields, spans, and bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from tasks_test_utils import FIXTURES, Mutation, WriteVariant, delete_key, set_key

from tasks.common import Glipv2DataError, SkipReport
from tasks.grounding import GROUNDING_FEATURES, MISSING_ID, load_mdetr_grounding
from tasks.grounding.task import TASK, caption_phrases

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
        "mask": [{"size": [0, 0], "counts": ""}] * 3,  # MDETR's Flickr30k files have no segmentation
    }
    phrases = [[first["caption"][b:e] for b, e in spans] for spans in first["objects"]["tokens_positive"]]
    assert phrases == [["Two young guys"], ["Two young guys"], ["shaggy hair"]]
    assert first["tokens_positive_eval"] == [[[0, 14]], [[20, 31]], [[40, 51]], [[73, 81]]]
    assert (first["sentence_id"], first["original_img_id"]) == (0, 1000092795)
    second = dataset[1]
    assert [second["caption"][b:e] for b, e in second["objects"]["tokens_positive"][0]] == ["Two young", "White males"]
    assert (second["sentence_id"], second["original_img_id"]) == (1, 1000092795)


def test_sizes_written_as_digit_strings_and_absent_mdetr_fields(image_dir: Path, write_variant: WriteVariant) -> None:
    def mutate(data: dict) -> None:  # MDETR's Flickr30k files carry the XML's sizes as strings
        data["images"][0].update(width="500", height="333")
        for key in ("tokens_positive_eval", "sentence_id", "original_img_id"):
            del data["images"][1][key]

    first, second = load_mdetr_grounding(write_variant("mdetr_flickr.json", mutate), image_dir)
    assert (first["width"], first["height"]) == (500, 333)
    assert second["tokens_positive_eval"] == [] and second["sentence_id"] == second["original_img_id"] == MISSING_ID


def test_each_mention_is_a_phrase() -> None:
    """Coreferent mentions ("A boy ... he") are scored apart, each with its entity's boxes, as the official
    Flickr30k evaluation does; a mention without a box is not scored; without tokens_positive_eval the phrases are
    the distinct span lists."""
    caption = "A boy throws a ball and he runs ."
    objects = {
        "bbox": [[1.0, 2.0, 10.0, 20.0], [30.0, 5.0, 4.0, 4.0], [40.0, 5.0, 4.0, 4.0]],
        "tokens_positive": [[[0, 5], [24, 26]], [[13, 19]], [[13, 19]]],
    }
    mentions = [[[0, 5]], [[13, 19]], [[24, 26]], [[27, 31]]]
    record = {"caption": caption, "objects": objects, "tokens_positive_eval": mentions}
    spans, references = caption_phrases(record)
    assert spans == [[[0, 5]], [[13, 19]], [[24, 26]]]  # "runs" has no box
    boy, balls = [[1.0, 2.0, 11.0, 22.0]], [[30.0, 5.0, 34.0, 9.0], [40.0, 5.0, 44.0, 9.0]]
    assert references == [boy, balls, boy]
    spans, references = caption_phrases({"caption": caption, "objects": objects, "tokens_positive_eval": []})
    assert spans == [[[0, 5], [24, 26]], [[13, 19]]] and references == [boy, balls]


def test_predict_ranks_boxes_per_mention(processor: Any) -> None:
    from PIL import Image

    from glipv2 import Glipv2ForGrounding
    from tasks.spec import PredictOptions
    from tests.conftest import tiny_config

    model = Glipv2ForGrounding(tiny_config()).eval()
    objects = {"bbox": [[1.0, 2.0, 10.0, 20.0]], "tokens_positive": [[[0, 5], [24, 26]]]}
    record = {
        "image": Image.new("RGB", (64, 48)),
        "image_id": 3,
        "caption": "A boy throws a ball and he runs .",
        "objects": objects,
        "tokens_positive_eval": [[[0, 5]], [[24, 26]]],
    }
    with torch.no_grad():
        (prediction,) = TASK.predict(model, processor, [record], None, PredictOptions())
    assert prediction["image_id"] == 3 and len(prediction["phrases"]) == 2
    assert all(phrase["references"] == [[1.0, 2.0, 11.0, 22.0]] for phrase in prediction["phrases"])
    assert all(0 < len(phrase["boxes"]) <= 10 for phrase in prediction["phrases"])


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
    (
        "mention past caption",
        set_key(("images", 1, "tokens_positive_eval"), [[[41, 90]]]),
        "tokens_positive_eval",
        "image id=1",
    ),
    ("mentions not a list", set_key(("images", 1, "tokens_positive_eval"), 3), "tokens_positive_eval", "image id=1"),
    ("sentence id as text", set_key(("images", 1, "sentence_id"), "1"), "sentence_id", "image id=1"),
    ("size not a number", set_key(("images", 0, "width"), "wide"), "width", "image id=0"),
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
