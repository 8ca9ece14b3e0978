"""Resize / flip arithmetic by hand, the left/right span shift, and od_to_grounding."""

from __future__ import annotations

import logging
import random

import pytest
from PIL import Image

from tasks.transforms import (
    MultiScaleResize,
    clean_category_name,
    horizontal_flip,
    od_to_grounding,
    resize_output_size,
    swap_left_right,
)


def test_resize_output_size_matches_official_arithmetic() -> None:
    # 640x480 to shorter side 800: long side 800 * 640 / 480 = 1066.67 -> int 1066 (under 1333)
    assert resize_output_size(640, 480, 800, 1333) == (800, 1066)
    # 1000x200 to 800 would make the long side 4000 > 1333: short side = round(1333 * 200 / 1000) = 267,
    # long side int(267 * 1000 / 200) = 1335 (the official code can exceed max_size by rounding)
    assert resize_output_size(1000, 200, 800, 1333) == (267, 1335)
    # portrait: width is the shorter side
    assert resize_output_size(300, 500, 600, None) == (1000, 600)
    # already at the target size: unchanged
    assert resize_output_size(800, 600, 600, 1333) == (600, 800)


def test_multiscale_resize_scales_boxes_per_axis() -> None:
    image = Image.new("RGB", (640, 480))
    transform = MultiScaleResize(min_sizes=(240, 480), max_size=1333)
    rng = random.Random(0)
    sizes = set()
    for _ in range(20):
        resized, boxes = transform(image, [[64.0, 48.0, 320.0, 240.0]], rng)
        sizes.add(resized.size)
        ratio_x, ratio_y = resized.width / 640, resized.height / 480
        assert boxes == [[64.0 * ratio_x, 48.0 * ratio_y, 320.0 * ratio_x, 240.0 * ratio_y]]
    assert sizes == {(320, 240), (640, 480)}


def test_flip_boxes_by_hand() -> None:
    image = Image.new("RGB", (100, 50))
    image.putpixel((0, 0), (255, 0, 0))
    flipped, boxes, caption, spans = horizontal_flip(image, [[10.0, 5.0, 30.0, 20.0], [0.0, 0.0, 100.0, 50.0]])
    assert boxes == [[70.0, 5.0, 90.0, 20.0], [0.0, 0.0, 100.0, 50.0]]
    assert flipped.getpixel((99, 0)) == (255, 0, 0)
    assert caption is None and spans == []
    # flipping twice is the identity
    _, twice, _, _ = horizontal_flip(flipped, boxes)
    assert twice == [[10.0, 5.0, 30.0, 20.0], [0.0, 0.0, 100.0, 50.0]]


def test_left_right_swap_shifts_spans() -> None:
    caption = "the dog on the left is bright, the cat on the right sits left of it"
    phrases = ["the dog on the left", "bright", "the cat", "the right", "sits left of it"]
    spans = [[[caption.index(p), caption.index(p) + len(p)]] for p in phrases]
    new_caption, new_spans = swap_left_right(caption, spans)
    assert new_caption == "the dog on the right is bright, the cat on the left sits right of it"
    # by hand: "left"(15-19) becomes "right"(15-20): everything after shifts +1 ...
    assert new_spans[0] == [[0, 20]]
    assert new_spans[1] == [[24, 30]]  # "bright" was [23, 29]; not a whole word, not swapped
    assert new_spans[2] == [[32, 39]]
    # ... "the right" was [42, 51]: starts at 43 now, and its "right" (46-51, shifted to 47-52) becomes
    # "left" (47-51), so its end is back at 51 and the net shift after it is 0
    assert new_spans[3] == [[43, 51]]
    assert new_spans[4] == [[52, 68]]  # "sits left of it" was [52, 67]: "left" -> "right" inside, one longer
    assert [new_caption[b:e] for [[b, e]] in new_spans] == [
        "the dog on the right",
        "bright",
        "the cat",
        "the left",
        "sits right of it",
    ]


def test_left_right_swap_keeps_case_and_multi_span_objects() -> None:
    caption, spans = swap_left_right("Left hand, right foot", [[[0, 4], [11, 21]], [[5, 9]]])
    assert caption == "Right hand, left foot"
    assert [[caption[b:e] for b, e in obj] for obj in spans] == [["Right", "left foot"], ["hand"]]


def test_flip_with_caption() -> None:
    image = Image.new("RGB", (10, 10))
    _, boxes, caption, spans = horizontal_flip(image, [[0.0, 0.0, 4.0, 4.0]], "a cat to the left.", [[[13, 17]]])
    assert (boxes, caption, spans) == ([[6.0, 0.0, 10.0, 4.0]], "a cat to the right.", [[[13, 18]]])


CATEGORIES = {1: "person", 2: "dog", 3: "traffic_light", 5: "bow_(weapon)", 7: "chair", 9: "cup", 11: "car"}


def test_od_to_grounding_spans_slice_back_to_names() -> None:
    prompt = od_to_grounding([2, 1, 2, 7], CATEGORIES, random.Random(0), num_negatives=3)
    assert sorted(prompt.positive_ids) == [1, 2, 7]
    assert len(prompt.negative_ids) == 3 and not set(prompt.negative_ids) & {1, 2, 7}
    for label, (begin, end) in prompt.label_to_span.items():
        assert prompt.caption[begin:end] == clean_category_name(CATEGORIES[label])
    assert [prompt.caption[b:e] for [[b, e]] in prompt.tokens_positive] == ["dog", "person", "dog", "chair"]
    assert prompt.keep == [True] * 4
    names = [clean_category_name(CATEGORIES[label]) for label in prompt.label_to_span]
    assert prompt.caption == ". ".join(names)
    assert clean_category_name("bow_(weapon)") == "bow " and clean_category_name("traffic_light") == "traffic light"


def test_od_to_grounding_is_deterministic() -> None:
    first = od_to_grounding([1, 2], CATEGORIES, random.Random(7), num_negatives=4)
    second = od_to_grounding([1, 2], CATEGORIES, random.Random(7), num_negatives=4)
    assert first == second
    captions = {od_to_grounding([1, 2], CATEGORIES, random.Random(seed), 4).caption for seed in range(10)}
    assert len(captions) > 1


def test_overflow_drops_negatives_before_positives() -> None:
    # one token per word and per ". ": "person. " = 2 tokens, "traffic light. " = 3
    prompt = od_to_grounding([1, 2], CATEGORIES, random.Random(0), num_negatives=5, max_tokens=7)
    assert sorted(prompt.positive_ids) == [1, 2] and prompt.dropped_positive_ids == []
    assert sum(len(clean_category_name(CATEGORIES[n]).split()) + 1 for n in prompt.negative_ids) <= 3


def test_positive_overflow_is_reported_not_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        prompt = od_to_grounding([1, 2, 7, 9], CATEGORIES, random.Random(0), num_negatives=5, max_tokens=5)
    assert len(prompt.positive_ids) == 2 and len(prompt.dropped_positive_ids) == 2
    assert prompt.negative_ids == []
    assert "dropped 2 positive classes" in caplog.text
    dropped = set(prompt.dropped_positive_ids)
    assert prompt.keep == [label not in dropped for label in [1, 2, 7, 9]]
    assert all((spans == []) == (label in dropped) for label, spans in zip([1, 2, 7, 9], prompt.tokens_positive))


def test_token_counter_is_pluggable() -> None:
    prompt = od_to_grounding([1], CATEGORIES, random.Random(0), 6, max_tokens=10, count_tokens=lambda s: len(s))
    assert len(prompt.caption) <= 10 + 2 * len(prompt.label_to_span)
    with pytest.raises(ValueError, match="unknown category ids"):
        od_to_grounding([42], CATEGORIES, random.Random(0), 1)
