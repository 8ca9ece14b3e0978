"""Grounding losses: ATSS, token focal loss, GIoU, centerness, normalisation, validation; values by hand."""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from glipv2 import (
    vqa_targets,
)
from glipv2.box_ops import Glipv2BoxCoder, box_iou_legacy, generate_anchors
from glipv2.loss import (
    DEFAULT_GROUNDING_LOSS_WEIGHTS,
    Glipv2GroundingLoss,
    atss_assign,
    centerness_targets,
    clip_contrastive_loss,
    giou_loss,
    mlm_loss,
    region_word_contrastive_loss,
    shifted_lm_loss,
    token_sigmoid_focal_loss,
    vqa_soft_score_loss,
)

# Six anchors (scale 1): level 0 (stride 8) [0,0,7,7] [8,0,15,7] [16,0,23,7] [24,0,31,7], centres x = 3.5 + 8i, y 3.5;
# level 1 (stride 16) [0,0,15,15] [16,0,31,15], centres (7.5, 7.5), (23.5, 7.5).
SPATIAL_SHAPES = torch.tensor([[1, 4], [1, 2]])
NUM_PER_LEVEL = [4, 2]


def _anchors() -> torch.Tensor:
    return generate_anchors(SPATIAL_SHAPES, strides=[8, 16], anchor_scale=1.0)


def test_pairwise_iou_plus_one_by_hand() -> None:
    # [0,0,7,7] has area 8 * 8 = 64 (+1 convention); [4,0,11,7]: intersection 4 * 8 = 32 -> 32 / 96.
    iou = box_iou_legacy(torch.tensor([[0.0, 0.0, 7.0, 7.0]]), torch.tensor([[4.0, 0.0, 11.0, 7.0], [8, 8, 9, 9]]))
    torch.testing.assert_close(iou, torch.tensor([[1 / 3, 0.0]]))


def test_atss_single_gt_by_hand() -> None:
    # gt [0,0,11,7] (12 x 8, centre (5.5, 3.5)); topk 2 per level -> candidates anchors 0, 1 (level 0), 4, 5 (level 1).
    # IoUs: a0 64/96 = 2/3, a1 32/128 = 1/4, a4 96/256 = 3/8, a5 0. mean 0.3229, unbiased std 0.2772 -> thr 0.6001.
    # Only a0 passes, and its centre (3.5, 3.5) is inside the gt.
    anchors = _anchors()
    gt = torch.tensor([[0.0, 0.0, 11.0, 7.0]])
    candidate_ious = torch.tensor([2 / 3, 1 / 4, 3 / 8, 0.0])
    assert 2 / 3 >= candidate_ious.mean() + candidate_ious.std() > 3 / 8
    torch.testing.assert_close(box_iou_legacy(anchors, gt)[[0, 1, 4, 5], 0], candidate_ious)
    assert atss_assign(anchors, NUM_PER_LEVEL, gt, topk=2).tolist() == [0, -1, -1, -1, -1, -1]


def test_atss_conflict_goes_to_highest_iou() -> None:
    # gt1 [0,0,9,7]: a0 IoU 64/80 = 0.8 (> its threshold 0.661); gt0 [0,0,11,7]: a0 IoU 2/3 (> 0.600).
    # a0 is positive for both and goes to the higher IoU, whatever the gt order.
    anchors = _anchors()
    gts = torch.tensor([[0.0, 0.0, 11.0, 7.0], [0.0, 0.0, 9.0, 7.0]])
    assert atss_assign(anchors, NUM_PER_LEVEL, gts, topk=2).tolist() == [1, -1, -1, -1, -1, -1]
    assert atss_assign(anchors, NUM_PER_LEVEL, gts.flip(0), topk=2).tolist() == [0, -1, -1, -1, -1, -1]


def test_atss_centre_must_be_inside() -> None:
    # gt [-6,0,3,7]: a0 IoU 32/112 = 0.2857 passes mean + std = 0.2325, but its centre x 3.5 > x2 = 3: not positive.
    anchors = _anchors()
    gt = torch.tensor([[-6.0, 0.0, 3.0, 7.0]])
    candidate_ious = torch.tensor([32 / 112, 0.0, 32 / 304, 0.0])
    assert 32 / 112 >= candidate_ious.mean() + candidate_ious.std()
    assert atss_assign(anchors, NUM_PER_LEVEL, gt, topk=2).tolist() == [-1] * 6


def test_atss_no_boxes() -> None:
    assert atss_assign(_anchors(), NUM_PER_LEVEL, torch.zeros(0, 4)).tolist() == [-1] * 6


def _official_atss(anchors: torch.Tensor, num_per_level: list[int], gt: torch.Tensor, topk: int) -> torch.Tensor:
    """Line-by-line transcription of the official ATSSLossComputation.prepare_targets assignment."""
    inf = 1e8
    num_gt = len(gt)
    area1 = (anchors[:, 2] - anchors[:, 0] + 1) * (anchors[:, 3] - anchors[:, 1] + 1)
    area2 = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    lt = torch.max(anchors[:, None, :2], gt[:, :2])
    rb = torch.min(anchors[:, None, 2:], gt[:, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    ious = inter / (area1[:, None] + area2 - inter)
    gt_points = torch.stack(((gt[:, 2] + gt[:, 0]) / 2.0, (gt[:, 3] + gt[:, 1]) / 2.0), dim=1)
    anchors_cx = (anchors[:, 2] + anchors[:, 0]) / 2.0
    anchors_cy = (anchors[:, 3] + anchors[:, 1]) / 2.0
    anchor_points = torch.stack((anchors_cx, anchors_cy), dim=1)
    distances = (anchor_points[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()
    candidate_idxs, star_idx = [], 0
    for level_size in num_per_level:
        end_idx = star_idx + level_size
        _, topk_idxs = distances[star_idx:end_idx, :].topk(min(topk, level_size), dim=0, largest=False)
        candidate_idxs.append(topk_idxs + star_idx)
        star_idx = end_idx
    candidate_idxs = torch.cat(candidate_idxs, dim=0)
    candidate_ious = ious[candidate_idxs, torch.arange(num_gt)]
    is_pos = candidate_ious >= (candidate_ious.mean(0) + candidate_ious.std(0))[None, :]
    anchor_num = anchors_cx.shape[0]
    for ng in range(num_gt):
        candidate_idxs[:, ng] += ng * anchor_num
    e_anchors_cx = anchors_cx.view(1, -1).expand(num_gt, anchor_num).contiguous().view(-1)
    e_anchors_cy = anchors_cy.view(1, -1).expand(num_gt, anchor_num).contiguous().view(-1)
    candidate_idxs = candidate_idxs.view(-1)
    left = e_anchors_cx[candidate_idxs].view(-1, num_gt) - gt[:, 0]
    top = e_anchors_cy[candidate_idxs].view(-1, num_gt) - gt[:, 1]
    right = gt[:, 2] - e_anchors_cx[candidate_idxs].view(-1, num_gt)
    bottom = gt[:, 3] - e_anchors_cy[candidate_idxs].view(-1, num_gt)
    is_pos = is_pos & (torch.stack([left, top, right, bottom], dim=1).min(dim=1)[0] > 0.01)
    ious_inf = torch.full_like(ious, -inf).t().contiguous().view(-1)
    index = candidate_idxs.view(-1)[is_pos.view(-1)]
    ious_inf[index] = ious.t().contiguous().view(-1)[index]
    values, indexes = ious_inf.view(num_gt, -1).t().max(dim=1)
    indexes[values == -inf] = -1
    return indexes


def test_atss_matches_official_transcription_on_random_boxes() -> None:
    generator = torch.Generator().manual_seed(0)
    spatial_shapes = torch.tensor([[12, 16], [6, 8], [3, 4], [2, 2], [1, 1]])
    anchors = generate_anchors(spatial_shapes, strides=[8, 16, 32, 64, 128])
    num_per_level = (spatial_shapes[:, 0] * spatial_shapes[:, 1]).tolist()
    total_positive = 0
    for _ in range(20):
        num_gt = int(torch.randint(1, 8, (1,), generator=generator))
        xy = torch.rand(num_gt, 2, generator=generator) * torch.tensor([100.0, 70.0])
        gt = torch.cat([xy, xy + 4 + torch.rand(num_gt, 2, generator=generator) * 80], dim=1)
        ours = atss_assign(anchors, num_per_level, gt, topk=9)
        assert torch.equal(ours, _official_atss(anchors, num_per_level, gt, topk=9))
        total_positive += int((ours >= 0).sum())
    assert total_positive > 50


def test_token_focal_loss_by_hand() -> None:
    logits = torch.tensor([[[0.0, 1.0, -2.0], [3.0, -1.0, 0.5]]])
    targets = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])
    text_mask = torch.tensor([[1, 1, 0]])  # the third token is padding: left out

    def positive(x: float, alpha: float = 0.25) -> float:
        p = 1 / (1 + math.exp(-x))
        return -alpha * (1 - p) ** 2 * math.log(p)

    def negative(x: float, alpha: float = 0.25) -> float:
        p = 1 / (1 + math.exp(-x))
        return -(1 - alpha) * p**2 * math.log(1 - p)

    expected = positive(0.0) + negative(1.0) + negative(3.0) + positive(-1.0)
    assert expected == pytest.approx(2.81987, abs=1e-4)
    loss = token_sigmoid_focal_loss(logits, targets, text_mask)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # alpha < 0 disables the alpha weighting (official: ``if alpha >= 0``).
    unweighted = positive(0.0, 1.0) + negative(1.0, 0.0) + negative(3.0, 0.0) + positive(-1.0, 1.0)
    assert token_sigmoid_focal_loss(logits, targets, text_mask, alpha=-1).item() == pytest.approx(unweighted, rel=1e-6)


def test_giou_loss_by_hand() -> None:
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 1.0]])
    # pair 0: inter 1, union 7, enclosing 9 -> giou 1/7 - 2/9; pair 1: disjoint, union 2, enclosing 3 -> -1/3;
    # pair 2: x2 raised to x1 = 2 -> zero-area pred inside the target's enclosing box (area 2) -> giou 0.
    losses = [1 - (1 / 7 - 2 / 9), 1 + 1 / 3, 1.0]
    assert giou_loss(pred, target).item() == pytest.approx(sum(losses), rel=1e-5)
    weight = torch.tensor([0.5, 1.0, 2.0])
    assert giou_loss(pred, target, weight).item() == pytest.approx(
        0.5 * losses[0] + losses[1] + 2 * losses[2], rel=1e-5
    )
    # A zero weight sum falls back to the unweighted sum (official).
    assert giou_loss(pred, target, torch.zeros(3)).item() == pytest.approx(sum(losses), rel=1e-5)


def test_centerness_targets_by_hand() -> None:
    anchors = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 10.0, 10.0]])  # centres (4.5, 4.5), (5, 5)
    targets = torch.tensor([[0.0, 2.0, 19.0, 5.5], [2.0, 3.0, 8.0, 7.0]])
    # l, r = 4.5, 14.5; t, b = 2.5, 1.0 -> sqrt(4.5/14.5 * 1/2.5); second anchor is centred -> 1.
    expected = torch.tensor([math.sqrt(4.5 / 14.5 * 1.0 / 2.5), 1.0])
    torch.testing.assert_close(centerness_targets(targets, anchors), expected)


def _outputs(batch_size: int, num_tokens: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, 6, num_tokens, generator=generator)
    box_regression = torch.randn(batch_size, 6, 4, generator=generator) * 0.3
    centerness = torch.randn(batch_size, 6, generator=generator)
    return logits, box_regression, centerness


def test_grounding_loss_by_composition() -> None:
    # Image 0: one box [0,0,11,7] on tokens {1}; ATSS gives anchor 0 only (see test_atss_single_gt_by_hand).
    # Image 1: no box. num_pos = 1.
    logits, box_regression, centerness = _outputs(2, 3)
    logits.requires_grad_(True)
    box_regression.requires_grad_(True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    gt = torch.tensor([[0.0, 0.0, 11.0, 7.0]])
    targets = [
        {"boxes": gt, "positive_map": torch.tensor([[0.0, 1.0, 0.0]])},
        {"boxes": torch.zeros(0, 4), "positive_map": torch.zeros(0, 3)},
    ]
    losses = Glipv2GroundingLoss(topk=2)(logits, box_regression, centerness, _anchors(), NUM_PER_LEVEL, mask, targets)
    assert set(losses) == {"loss_cls", "loss_box", "loss_centerness"}

    token_targets = torch.zeros(2, 6, 3)
    token_targets[0, 0, 1] = 1.0
    expected_cls = token_sigmoid_focal_loss(logits, token_targets, mask)
    torch.testing.assert_close(losses["loss_cls"], expected_cls)

    anchor = _anchors()[:1]
    pred_box = Glipv2BoxCoder().decode(box_regression[0, :1], anchor)
    expected_ctr = math.sqrt(3.5 / 7.5)  # centre (3.5, 3.5) in [0,0,11,7]: l/r = 3.5/7.5, t/b = 1
    # Weighted by the centerness target and divided by its sum: the plain GIoU loss of the one positive.
    torch.testing.assert_close(losses["loss_box"], giou_loss(pred_box, gt), rtol=1e-5, atol=1e-6)
    expected_bce = F.binary_cross_entropy_with_logits(centerness[0, 0], torch.tensor(expected_ctr))
    torch.testing.assert_close(losses["loss_centerness"], expected_bce, rtol=1e-5, atol=1e-6)
    sum(losses.values()).backward()
    assert box_regression.grad[0, 0].abs().sum() > 0 and box_regression.grad[0, 1:].abs().sum() == 0


def test_num_pos_and_centerness_normalisation() -> None:
    # Two images, each with anchor 0 positive: num_pos 2; GIoU divided by the sum of the 2 centerness targets.
    logits, box_regression, centerness = _outputs(2, 3, seed=1)
    box = {"boxes": torch.tensor([[0.0, 0.0, 11.0, 7.0]]), "positive_map": torch.tensor([[1.0, 0.0, 0.0]])}
    mask = torch.ones(2, 3)
    losses = Glipv2GroundingLoss(topk=2)(
        logits, box_regression, centerness, _anchors(), NUM_PER_LEVEL, mask, [box] * 2
    )
    token_targets = torch.zeros(2, 6, 3)
    token_targets[:, 0, 0] = 1.0
    torch.testing.assert_close(losses["loss_cls"], token_sigmoid_focal_loss(logits, token_targets, mask) / 2)
    ctr = torch.full((2,), math.sqrt(3.5 / 7.5))
    torch.testing.assert_close(
        losses["loss_centerness"],
        F.binary_cross_entropy_with_logits(centerness[:, 0], ctr, reduction="sum") / 2,
    )
    pred = Glipv2BoxCoder().decode(box_regression[:, 0], _anchors()[:1].expand(2, 4))
    expected_box = giou_loss(pred, box["boxes"].expand(2, 4), ctr) / ctr.sum()
    torch.testing.assert_close(losses["loss_box"], expected_box, rtol=1e-5, atol=1e-6)


def test_zero_box_batch() -> None:
    logits, box_regression, centerness = _outputs(1, 4)
    box_regression.requires_grad_(True)
    targets = [{"boxes": torch.zeros(0, 4), "positive_map": torch.zeros(0, 4)}]
    losses = Glipv2GroundingLoss()(
        logits, box_regression, centerness, _anchors(), NUM_PER_LEVEL, torch.ones(1, 4), targets
    )
    # All anchors are background; num_pos is clamped to 1.
    torch.testing.assert_close(
        losses["loss_cls"], token_sigmoid_focal_loss(logits, torch.zeros(1, 6, 4), torch.ones(1, 4))
    )
    assert losses["loss_box"].item() == 0.0 and losses["loss_centerness"].item() == 0.0
    sum(losses.values()).backward()  # the graph stays connected
    assert box_regression.grad is not None and box_regression.grad.abs().sum() == 0


def test_no_object_token_on_background() -> None:
    # Official positive maps are 256 wide and background anchors get target 1 on column 255 ("[NoObj]"); the text
    # mask removes it unless token 255 is real.
    logits, box_regression, centerness = _outputs(1, 256)
    targets = [{"boxes": torch.zeros(0, 4), "positive_map": torch.zeros(0, 256)}]
    loss = Glipv2GroundingLoss()
    full = loss(logits, box_regression, centerness, _anchors(), NUM_PER_LEVEL, torch.ones(1, 256), targets)
    no_object = torch.zeros(1, 6, 256)
    no_object[..., 255] = 1.0
    torch.testing.assert_close(full["loss_cls"], token_sigmoid_focal_loss(logits, no_object, torch.ones(1, 256)))
    padded_mask = torch.ones(1, 256)
    padded_mask[:, 200:] = 0
    padded = loss(logits, box_regression, centerness, _anchors(), NUM_PER_LEVEL, padded_mask, targets)
    torch.testing.assert_close(
        padded["loss_cls"], token_sigmoid_focal_loss(logits, torch.zeros(1, 6, 256), padded_mask)
    )
    disabled = Glipv2GroundingLoss(no_object_token_index=None)
    out = disabled(logits, box_regression, centerness, _anchors(), NUM_PER_LEVEL, torch.ones(1, 256), targets)
    torch.testing.assert_close(
        out["loss_cls"], token_sigmoid_focal_loss(logits, torch.zeros(1, 6, 256), torch.ones(1, 256))
    )


def test_default_weights() -> None:
    assert DEFAULT_GROUNDING_LOSS_WEIGHTS == {"loss_cls": 1.0, "loss_box": 2.0, "loss_centerness": 1.0}
    assert list(Glipv2GroundingLoss().parameters()) == []


@pytest.mark.parametrize(
    ("boxes", "positive_map", "message"),
    [
        ([[0.0, 0.0, 5.0, 5.0], [0.0, float("nan"), 5.0, 5.0]], [[1, 0], [1, 0]], r"image 1, box 1: 'boxes'.*NaN"),
        (
            [[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, float("inf"), 5.0]],
            [[1, 0], [1, 0]],
            r"image 1, box 1: 'boxes'.*infinite",
        ),
        ([[0.0, 0.0, 5.0, 5.0], [3.0, 0.0, 3.0, 5.0]], [[1, 0], [1, 0]], r"image 1, box 1: 'boxes'.*area"),
        ([[0.0, 0.0, 5.0, 5.0], [0.0, 6.0, 5.0, 5.0]], [[1, 0], [1, 0]], r"image 1, box 1: 'boxes'.*area"),
        ([[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 5.0, 5.0]], [[1, 0], [0, 0]], r"image 1, box 1: 'positive_map'"),
        ([[0.0, 0.0, 5.0, 5.0]], [[0, 1]], r"image 1, box 0: 'positive_map'.*real"),  # only on a padded token
        ([[0.0, 0.0, 5.0, 5.0]], [[1, 0, 0]], r"image 1: 'positive_map' must be"),
    ],
)
def test_bad_targets_raise(boxes: list, positive_map: list, message: str) -> None:
    logits, box_regression, centerness = _outputs(2, 2)
    mask = torch.tensor([[1, 1], [1, 0]])
    good = {"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]), "positive_map": torch.tensor([[1.0, 0.0]])}
    bad = {"boxes": torch.tensor(boxes), "positive_map": torch.tensor(positive_map, dtype=torch.float32)}
    with pytest.raises(ValueError, match=message):
        Glipv2GroundingLoss()(logits, box_regression, centerness, _anchors(), NUM_PER_LEVEL, mask, [good, bad])


def test_missing_field_and_batch_mismatch_raise() -> None:
    logits, box_regression, centerness = _outputs(1, 2)
    loss = Glipv2GroundingLoss()
    with pytest.raises(ValueError, match="image 0: target has no 'positive_map'"):
        loss(
            logits,
            box_regression,
            centerness,
            _anchors(),
            NUM_PER_LEVEL,
            torch.ones(1, 2),
            [{"boxes": torch.zeros(0, 4)}],
        )
    with pytest.raises(ValueError, match="2 targets"):
        loss(logits, box_regression, centerness, _anchors(), NUM_PER_LEVEL, torch.ones(1, 2), [{}, {}])


def _distributed_worker(rank: int, store_path: str, result_path: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        # Rank 0: one image with one positive; rank 1: two such images -> num_pos averaged = (1 + 2) / 2 = 1.5.
        batch_size = 1 + rank
        logits, box_regression, centerness = _outputs(batch_size, 3, seed=rank)
        box = {"boxes": torch.tensor([[0.0, 0.0, 11.0, 7.0]]), "positive_map": torch.tensor([[1.0, 0.0, 0.0]])}
        losses = Glipv2GroundingLoss(topk=2)(
            logits,
            box_regression,
            centerness,
            _anchors(),
            NUM_PER_LEVEL,
            torch.ones(batch_size, 3),
            [box] * batch_size,
        )
        ctr = torch.full((batch_size,), math.sqrt(3.5 / 7.5))
        expected_ctr = F.binary_cross_entropy_with_logits(centerness[:, 0], ctr, reduction="sum") / 1.5
        pred = Glipv2BoxCoder().decode(box_regression[:, 0], _anchors()[:1].expand(batch_size, 4))
        # Sum of centerness targets averaged over processes: 3 * ctr / 2.
        expected_box = giou_loss(pred, box["boxes"].expand(batch_size, 4), ctr) / (1.5 * ctr[0])
        ok = torch.allclose(losses["loss_centerness"], expected_ctr) and torch.allclose(
            losses["loss_box"], expected_box
        )
        with open(f"{result_path}.{rank}", "w") as handle:
            handle.write("ok" if ok else f"{losses} {expected_ctr} {expected_box}")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_num_pos_averaged_over_processes(tmp_path) -> None:
    mp.spawn(_distributed_worker, args=(str(tmp_path / "store"), str(tmp_path / "result")), nprocs=2, join=True)
    assert [(tmp_path / f"result.{rank}").read_text() for rank in range(2)] == ["ok", "ok"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    logits, box_regression, centerness = _outputs(2, 3, seed=5)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    targets = [
        {"boxes": torch.tensor([[0.0, 0.0, 11.0, 7.0]]), "positive_map": torch.tensor([[0.0, 1.0, 0.0]])},
        {"boxes": torch.zeros(0, 4), "positive_map": torch.zeros(0, 3)},
    ]
    loss = Glipv2GroundingLoss(topk=2)
    on_cpu = loss(logits, box_regression, centerness, _anchors(), NUM_PER_LEVEL, mask, targets)
    # Targets and mask stay on the CPU: the loss moves them.
    on_cuda = loss(
        logits.cuda(), box_regression.cuda(), centerness.cuda(), _anchors().cuda(), NUM_PER_LEVEL, mask, targets
    )
    for key, value in on_cpu.items():
        torch.testing.assert_close(on_cuda[key].cpu(), value, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------- VQA, LM, MLM and contrastive losses
# ------------------------------------------------------------------------------------------ hand-computed losses
def _bce(x: float, y: float) -> float:
    sig = 1 / (1 + math.exp(-x))
    return -(y * math.log(sig) + (1 - y) * math.log(1 - sig))


def test_vqa_soft_score_loss_hand_computed() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 0.5]])
    labels = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.0, 0.9]])
    expected = sum(_bce(x, y) for x, y in zip(logits.flatten().tolist(), labels.flatten().tolist())) / 6 * 3
    assert vqa_soft_score_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # loader format -> dense targets; an out-of-vocabulary id is an error, a dropped answer an all-zero row
    targets = vqa_targets([[0, 2], []], [[1.0, 0.3], []], 3)
    assert targets.tolist() == [[1.0, 0.0, pytest.approx(0.3)], [0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="outside the vocabulary of 3"):
        vqa_targets([[3]], [[1.0]], 3)
    with pytest.raises(ValueError, match="soft scores"):
        vqa_soft_score_loss(logits, labels[:, :2])


def test_shifted_lm_and_mlm_losses_hand_computed() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[0, 2, -100]])  # position 0 predicts token 2; position 1 predicts padding (ignored)
    expected = -math.log(math.exp(0.0) / (math.exp(2.0) + 2))
    assert shifted_lm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    mlm_labels = torch.tensor([[-100, 2, 1]])  # positions 1 and 2 are masked
    expected_mlm = (-math.log(math.exp(3) / (1 + math.e + math.exp(3))) + math.log(3)) / 2
    assert mlm_loss(logits, mlm_labels).item() == pytest.approx(expected_mlm, rel=1e-6)


def test_clip_loss_hand_computed() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = torch.tensor(10.0)
    # logits_per_image = 10 * [[1, 0.6], [0, 0.8]]
    row = [-math.log(math.exp(10) / (math.exp(10) + math.exp(6))), -math.log(math.exp(8) / (1 + math.exp(8)))]
    col = [-math.log(math.exp(10) / (math.exp(10) + 1)), -math.log(math.exp(8) / (math.exp(6) + math.exp(8)))]
    expected = (sum(row) / 2 + sum(col) / 2) / 2
    assert clip_contrastive_loss(image, text, scale).item() == pytest.approx(expected, rel=1e-6)


def test_region_word_loss_hand_computed_two_images() -> None:
    """Image A: two regions of class 0, word "cat" (0). Image B: one region of class 1, words "cat" (0), "dog" (1)."""
    regions = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    region_labels = torch.tensor([0, 0, 1])
    words = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    word_labels = torch.tensor([0, 0, 1])
    s = 2.0
    sims = (regions @ words.T).tolist()
    positives = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]

    def multi_positive(rows: list[list[float]], pos: list[list[int]]) -> float:
        total = 0.0
        for row, mask in zip(rows, pos):
            log_z = math.log(sum(math.exp(s * v) for v in row))
            total += -sum(s * v - log_z for v, m in zip(row, mask) if m) / sum(mask)
        return total / len(rows)

    transposed = [list(column) for column in zip(*sims)]
    expected = (multi_positive(sims, positives) + multi_positive(transposed, [list(c) for c in zip(*positives)])) / 2
    got = region_word_contrastive_loss(regions, region_labels, words, word_labels, torch.tensor(s))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # rows without any positive are left out; no positive at all gives 0 with a graph
    lonely = region_word_contrastive_loss(regions[:1], torch.tensor([5]), words, word_labels, torch.tensor(s))
    assert lonely.item() == 0.0


DISTRIBUTED_WORKER = textwrap.dedent(
    """
    import os, sys, torch
    import torch.distributed as dist

    def main(rank, world, port, data, out):
        from glipv2.loss import clip_contrastive_loss, region_word_contrastive_loss

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        d = torch.load(data)
        # uneven split of regions: rank 0 holds 3, rank 1 holds 2 (sizes differ between processes)
        r_split = [d["regions"][:3], d["regions"][3:]][rank].clone().requires_grad_()
        r_labels = [d["region_labels"][:3], d["region_labels"][3:]][rank]
        w = d["words"].chunk(world)[rank].clone().requires_grad_()
        w_labels = d["word_labels"].chunk(world)[rank]
        loss = region_word_contrastive_loss(r_split, r_labels, w, w_labels, torch.tensor(3.0))
        loss.backward()
        img = d["images"].chunk(world)[rank].clone().requires_grad_()
        txt = d["texts"].chunk(world)[rank]
        itc = clip_contrastive_loss(img, txt, torch.tensor(5.0))
        itc.backward()
        torch.save({"loss": loss.detach(), "itc": itc.detach(), "grad": r_split.grad, "img_grad": img.grad},
                   f"{out}.{rank}")
        dist.destroy_process_group()

    if __name__ == "__main__":
        import torch.multiprocessing as mp
        mp.spawn(main, args=(2, int(sys.argv[1]), sys.argv[2], sys.argv[3]), nprocs=2)
    """
)


def test_cross_process_contrastive_losses_equal_single_process(tmp_path: pathlib.Path) -> None:
    import socket

    generator = torch.Generator().manual_seed(3)
    data = {
        "regions": F.normalize(torch.randn(5, 4, generator=generator), dim=-1),
        "region_labels": torch.tensor([0, 1, 0, 2, 1]),
        "words": F.normalize(torch.randn(4, 4, generator=generator), dim=-1),
        "word_labels": torch.tensor([1, 0, 2, 3]),
        "images": F.normalize(torch.randn(4, 4, generator=generator), dim=-1),
        "texts": F.normalize(torch.randn(4, 4, generator=generator), dim=-1),
    }
    torch.save(data, tmp_path / "data.pt")
    (tmp_path / "worker.py").write_text(DISTRIBUTED_WORKER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    repo = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(tmp_path / "worker.py"), str(port), str(tmp_path / "data.pt"), str(tmp_path / "out")],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"out.{rank}") for rank in range(2)]
    regions = data["regions"].clone().requires_grad_()
    single = region_word_contrastive_loss(
        regions, data["region_labels"], data["words"], data["word_labels"], torch.tensor(3.0)
    )
    single.backward()
    images = data["images"].clone().requires_grad_()
    single_itc = clip_contrastive_loss(images, data["texts"], torch.tensor(5.0))
    single_itc.backward()
    for rank in ranks:
        assert abs(rank["loss"].item() - single.item()) <= 1e-5
        assert abs(rank["itc"].item() - single_itc.item()) <= 1e-5
    # every process computes the global loss; all_gather's backward sums the processes' gradients, so DDP's
    # average over 2 processes gives exactly the single-process gradient
    torch.testing.assert_close(torch.cat([ranks[0]["grad"], ranks[1]["grad"]]) / 2, regions.grad)
    torch.testing.assert_close(torch.cat([ranks[0]["img_grad"], ranks[1]["img_grad"]]) / 2, images.grad)
