"""Grounding post-processing on hand-made outputs, NMS paths, and the official selection rules."""

import math
import time

import pytest
import torch

from glipv2 import post_processing
from glipv2.box_ops import box_iou, box_iou_legacy, cxcywh_to_xyxy, xyxy_to_normalized_cxcywh
from glipv2.post_processing import batched_nms, nms, post_process_grounding

try:
    import torchvision.ops as torchvision_ops
except (ImportError, RuntimeError, OSError):  # the hand-made tests still run without torchvision
    torchvision_ops = None

needs_torchvision = pytest.mark.skipif(torchvision_ops is None, reason="torchvision is not importable")

SPATIAL_SHAPES = torch.tensor([[2, 2], [1, 1]])  # anchors 0-3 on level 0, anchor 4 on level 1


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _hand_made() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Two labels: label 0 = tokens {1, 2}, label 1 = token {3}. Every other logit is -10 (probability 4.5e-5)."""
    logits = torch.full((1, 5, 4), -10.0)
    logits[0, 0, 1:3] = 2.0  # label 0: mean sigmoid(2)
    logits[0, 1, 1:3] = 1.0  # label 0: sigmoid(1); a near-duplicate box of anchor 0 -> suppressed
    logits[0, 2, 1:3] = -3.0  # label 0: sigmoid(-3) = 0.047 < 0.05 -> dropped despite high centerness
    logits[0, 3, 1], logits[0, 3, 2] = 3.0, -4.0  # label 0: mean 0.485 > 0.05; low centerness -> low score
    logits[0, 4, 3] = 0.5  # label 1: sigmoid(0.5), same box as anchor 0 but another label -> kept
    centerness = torch.tensor([[1.0, 1.0, 5.0, -5.0, 0.0]])
    boxes = torch.tensor(
        [
            [0.30, 0.30, 0.20, 0.20],  # xyxy [0.2, 0.2, 0.4, 0.4]
            [0.31, 0.30, 0.20, 0.20],  # IoU 0.905 with anchor 0
            [0.50, 0.50, 0.10, 0.10],
            [0.95, 0.90, 0.20, 0.40],  # xyxy [0.85, 0.7, 1.05, 1.1] -> clipped to [0.85, 0.7, 1.0, 1.0]
            [0.30, 0.30, 0.20, 0.20],
        ]
    )[None]
    positive_maps = [torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])]
    return logits, boxes, centerness, positive_maps


def test_hand_made_detections() -> None:
    logits, boxes, centerness, positive_maps = _hand_made()
    (result,) = post_process_grounding(logits, boxes, centerness, SPATIAL_SHAPES, positive_maps)
    score_0 = math.sqrt(_sigmoid(2.0) * _sigmoid(1.0))
    score_4 = math.sqrt(_sigmoid(0.5) * _sigmoid(0.0))
    score_3 = math.sqrt((_sigmoid(3.0) + _sigmoid(-4.0)) / 2 * _sigmoid(-5.0))
    torch.testing.assert_close(result["scores"], torch.tensor([score_0, score_4, score_3]))
    assert result["labels"].tolist() == [0, 1, 0] and result["labels"].dtype == torch.int64
    expected_boxes = torch.tensor([[0.2, 0.2, 0.4, 0.4], [0.2, 0.2, 0.4, 0.4], [0.85, 0.7, 1.0, 1.0]])
    torch.testing.assert_close(result["boxes"], expected_boxes)


def test_threshold_is_applied_before_centerness() -> None:
    logits, boxes, centerness, positive_maps = _hand_made()
    (result,) = post_process_grounding(logits, boxes, centerness, SPATIAL_SHAPES, positive_maps, threshold=0.5)
    assert result["labels"].tolist() == [0, 1]  # anchor 3 (mean 0.485) is gone; anchor 4 (0.62) stays
    (result,) = post_process_grounding(logits, boxes, centerness, SPATIAL_SHAPES, positive_maps, threshold=0.9)
    assert result["scores"].numel() == 0 and result["boxes"].shape == (0, 4) and result["labels"].dtype == torch.int64


def test_nms_off_keeps_duplicate_and_limits() -> None:
    logits, boxes, centerness, positive_maps = _hand_made()
    (result,) = post_process_grounding(logits, boxes, centerness, SPATIAL_SHAPES, positive_maps, nms_threshold=0)
    assert len(result["scores"]) == 4
    torch.testing.assert_close(result["scores"][1], torch.tensor(_sigmoid(1.0)))  # the duplicate: sqrt(s(1) * s(1))
    (result,) = post_process_grounding(logits, boxes, centerness, SPATIAL_SHAPES, positive_maps, max_detections=2)
    assert result["labels"].tolist() == [0, 1]
    # pre_nms_top_n applies per level: level 0 keeps only anchor 0, level 1 anchor 4.
    (result,) = post_process_grounding(
        logits, boxes, centerness, SPATIAL_SHAPES, positive_maps, pre_nms_top_n=1, nms_threshold=0
    )
    assert len(result["scores"]) == 2 and result["labels"].tolist() == [0, 1]


def test_target_sizes_scale_boxes() -> None:
    logits, boxes, centerness, positive_maps = _hand_made()
    normalised = post_process_grounding(logits, boxes, centerness, SPATIAL_SHAPES, positive_maps)[0]
    for target_sizes in (torch.tensor([[100, 200]]), [(100, 200)]):  # (height, width)
        (result,) = post_process_grounding(
            logits, boxes, centerness, SPATIAL_SHAPES, positive_maps, target_sizes=target_sizes
        )
        torch.testing.assert_close(result["boxes"], normalised["boxes"] * torch.tensor([200.0, 100.0, 200.0, 100.0]))
        torch.testing.assert_close(result["scores"], normalised["scores"])
    torch.testing.assert_close(result["boxes"][0], torch.tensor([40.0, 20.0, 80.0, 40.0]))


def test_batch_with_different_label_sets() -> None:
    logits, boxes, centerness, positive_maps = _hand_made()
    logits, boxes, centerness = logits.repeat(2, 1, 1), boxes.repeat(2, 1, 1), centerness.repeat(2, 1)
    positive_maps = positive_maps + [torch.tensor([[0.0, 0.0, 0.0, 1.0]])]  # image 1: one label = token 3
    first, second = post_process_grounding(logits, boxes, centerness, SPATIAL_SHAPES, positive_maps)
    assert first["labels"].tolist() == [0, 1, 0]
    assert second["labels"].tolist() == [0]
    torch.testing.assert_close(second["scores"], torch.tensor([math.sqrt(_sigmoid(0.5) * 0.5)]))


def test_bad_inputs_raise() -> None:
    logits, boxes, centerness, positive_maps = _hand_made()
    with pytest.raises(ValueError, match=r"image 0: 'positive_maps' must be \(num_labels, 4\)"):
        post_process_grounding(logits, boxes, centerness, SPATIAL_SHAPES, [torch.ones(2, 3)])
    with pytest.raises(ValueError, match="spatial_shapes"):
        post_process_grounding(logits, boxes, centerness, torch.tensor([[2, 2]]), positive_maps)
    with pytest.raises(ValueError, match="one entry per image"):
        post_process_grounding(logits, boxes, centerness, SPATIAL_SHAPES, positive_maps * 2)


def _random_boxes(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=generator) * 100
    boxes = torch.cat([xy, xy + 1 + torch.rand(num, 2, generator=generator) * 40], dim=1)
    return boxes, torch.rand(num, generator=generator)


@needs_torchvision
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_fallback_equals_torchvision(iou_threshold: float) -> None:
    boxes, scores = _random_boxes(1500, seed=int(iou_threshold * 10))  # > one chunk of the fallback
    expected = torchvision_ops.nms(boxes, scores, iou_threshold)
    assert torch.equal(nms(boxes, scores, iou_threshold), expected)
    labels = torch.randint(0, 7, (1500,), generator=torch.Generator().manual_seed(1))
    expected = torchvision_ops.batched_nms(boxes, scores, labels, iou_threshold)
    assert torch.equal(batched_nms(boxes, scores, labels, iou_threshold, use_torchvision=False), expected)
    assert torch.equal(batched_nms(boxes, scores, labels, iou_threshold), expected)


@needs_torchvision
def test_post_processing_without_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    logits, boxes, centerness, positive_maps = _random_outputs(num_labels=30, seed=3)
    with_torchvision = post_process_grounding(logits, boxes, centerness, _LEVELS, positive_maps)
    monkeypatch.setattr(post_processing, "_torchvision_batched_nms", None)
    without = post_process_grounding(logits, boxes, centerness, _LEVELS, positive_maps)
    for ours, reference in zip(without, with_torchvision):
        for key in ("scores", "boxes", "labels"):
            torch.testing.assert_close(ours[key], reference[key])


def test_box_format_helpers_round_trip() -> None:
    xyxy = torch.tensor([[[10.0, 20.0, 50.0, 60.0]], [[0.0, 0.0, 30.0, 15.0]]])
    sizes = torch.tensor([[100, 200], [30, 60]])  # (height, width)
    cxcywh = xyxy_to_normalized_cxcywh(xyxy, sizes)
    torch.testing.assert_close(cxcywh[0, 0], torch.tensor([30 / 200, 40 / 100, 40 / 200, 40 / 100]))
    scale = torch.tensor([[200.0, 100.0, 200.0, 100.0], [60.0, 30.0, 60.0, 30.0]])[:, None]
    torch.testing.assert_close(cxcywh_to_xyxy(cxcywh) * scale, xyxy)


# Random outputs on five levels, compared with a transcription of the official ATSSPostProcessor.
_LEVELS = torch.tensor([[12, 16], [6, 8], [3, 4], [2, 2], [1, 1]])


def _random_outputs(num_labels: int, seed: int, batch_size: int = 2, num_tokens: int = 40) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    num_anchors = int((_LEVELS[:, 0] * _LEVELS[:, 1]).sum())
    logits = torch.randn(batch_size, num_anchors, num_tokens, generator=generator) * 2 - 3
    centres = torch.rand(batch_size, num_anchors, 2, generator=generator)
    sizes = torch.rand(batch_size, num_anchors, 2, generator=generator) * 0.4 + 0.02
    centerness = torch.randn(batch_size, num_anchors, generator=generator)
    positive_maps = []
    for _ in range(batch_size):
        # Distinct start tokens: no two labels share a token set (their scores would tie).
        starts = torch.randperm(num_tokens - 3, generator=generator)[:num_labels]
        lengths = torch.randint(1, 4, (num_labels,), generator=generator)
        token = torch.arange(num_tokens)
        positive_maps.append(((token >= starts[:, None]) & (token < (starts + lengths)[:, None])).float())
    return logits, torch.cat([centres, sizes], dim=-1), centerness, positive_maps


def _official_reference(logits, boxes, centerness, positive_map, thresh=0.05, top_n=1000, nms_th=0.6, keep=100):
    """Transcription of ATSSPostProcessor (dot product, MEAN) for one image, with plain-IoU NMS per class."""
    label_to_tokens = {j: row.nonzero()[:, 0].tolist() for j, row in enumerate(positive_map)}
    all_boxes, all_scores, all_labels, start = [], [], [], 0
    for height, width in _LEVELS.tolist():
        level = slice(start, start + height * width)
        start += height * width
        probs = logits[level].sigmoid()
        box_cls = torch.zeros(probs.shape[0], len(label_to_tokens))
        for label, tokens in label_to_tokens.items():
            box_cls[:, label] = probs[:, tokens].mean(-1)
        candidate_inds = box_cls > thresh
        pre_nms_top_n = int(candidate_inds.sum().clamp(max=top_n))
        box_cls = box_cls * centerness[level].sigmoid()[:, None]
        per_box_cls, top_k_indices = box_cls[candidate_inds].topk(pre_nms_top_n, sorted=False)
        nonzeros = candidate_inds.nonzero()[top_k_indices, :]
        all_boxes.append(cxcywh_to_xyxy(boxes[level][nonzeros[:, 0]]).clamp(0, 1))
        all_scores.append(torch.sqrt(per_box_cls))
        all_labels.append(nonzeros[:, 1])
    boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    kept = []
    for label in torch.unique(labels):  # the official CPU path of boxlist_ml_nms
        inds = (labels == label).nonzero().view(-1)
        kept.append(inds[torchvision_ops.nms(boxes[inds], scores[inds], nms_th)])
    kept = torch.cat(kept)
    boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
    if len(scores) > keep:
        image_thresh, _ = torch.kthvalue(scores, len(scores) - keep + 1)
        keep_mask = scores >= image_thresh
        boxes, scores, labels = boxes[keep_mask], scores[keep_mask], labels[keep_mask]
    order = scores.argsort(descending=True)
    return scores[order], boxes[order], labels[order]


@needs_torchvision
@pytest.mark.parametrize(("num_labels", "top_n"), [(5, 1000), (30, 1000), (30, 20)])
def test_matches_official_transcription(num_labels: int, top_n: int) -> None:
    logits, boxes, centerness, positive_maps = _random_outputs(num_labels, seed=num_labels + top_n)
    results = post_process_grounding(logits, boxes, centerness, _LEVELS, positive_maps, pre_nms_top_n=top_n)
    for index, result in enumerate(results):
        scores, ref_boxes, labels = _official_reference(
            logits[index], boxes[index], centerness[index], positive_maps[index], top_n=top_n
        )
        assert len(scores) == len(result["scores"]) > 10
        torch.testing.assert_close(result["scores"], scores)
        torch.testing.assert_close(result["boxes"], ref_boxes)
        assert torch.equal(result["labels"], labels)


def test_lvis_sized_vocabulary_is_fast() -> None:
    # 1,203 labels over 256 tokens on a 1,600-anchor map: one matmul per level, no loop over labels.
    levels = torch.tensor([[32, 40], [16, 20], [8, 10], [4, 5], [2, 3]])
    num_anchors = int((levels[:, 0] * levels[:, 1]).sum())
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, num_anchors, 256, generator=generator) - 2
    boxes = torch.rand(1, num_anchors, 4, generator=generator) * 0.5 + 0.1
    token_of_label = torch.arange(1203) % 250
    positive_map = torch.zeros(1203, 256)
    positive_map[torch.arange(1203), token_of_label] = 1
    positive_map[torch.arange(1203), token_of_label + 1] = 1
    start = time.perf_counter()
    (result,) = post_process_grounding(logits, boxes, torch.zeros(1, num_anchors), levels, [positive_map])
    assert time.perf_counter() - start < 10.0
    assert len(result["scores"]) == 100 and int(result["labels"].max()) < 1203


@needs_torchvision
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    logits, boxes, centerness, positive_maps = _random_outputs(num_labels=30, seed=7)
    on_cpu = post_process_grounding(logits, boxes, centerness, _LEVELS, positive_maps, target_sizes=[(480, 640)] * 2)
    on_cuda = post_process_grounding(
        logits.cuda(), boxes.cuda(), centerness.cuda(), _LEVELS.cuda(), positive_maps, target_sizes=[(480, 640)] * 2
    )
    for ours, reference in zip(on_cuda, on_cpu):
        for key in ("scores", "boxes", "labels"):
            torch.testing.assert_close(ours[key].cpu(), reference[key], rtol=1e-4, atol=1e-4)


def test_plain_iou_of_continuous_boxes_is_official_plus_one_iou() -> None:

    inclusive, _ = _random_boxes(50, seed=11)
    continuous = inclusive + torch.tensor([0.0, 0.0, 1.0, 1.0])
    expected = box_iou_legacy(inclusive, inclusive)
    torch.testing.assert_close(box_iou(continuous, continuous), expected)
    # and per-axis scaling (normalisation) leaves it unchanged
    scale = torch.tensor([1 / 640, 1 / 480, 1 / 640, 1 / 480])
    torch.testing.assert_close(box_iou(continuous * scale, continuous * scale), expected)
