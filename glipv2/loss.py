"""Every loss of the GLIPv2 family, in one module.

- Grounding (detection and phrase grounding): ATSS assignment, token sigmoid focal loss, GIoU and centerness,
  faithful to ``ATSSLossComputation`` in the official ``maskrcnn_benchmark/modeling/rpn/loss.py`` (dot-product token
  branch) and ``token_sigmoid_binary_focal_loss`` in ``maskrcnn_benchmark/layers/sigmoid_focal_loss.py``.
- VQA: the soft-score BCE of VQAv2 classifiers; captioning and MLM: token cross-entropies.
- Contrastive: CLIP's symmetric InfoNCE and GLIPv2's inter-image region-word loss, gathered across processes
  ([`gather_with_grad`]).
- Masks: Mask R-CNN's per-pixel binary cross-entropy on the mask head's logits, against the ground-truth masks
  resampled into each box ([`mask_targets`], torchvision's `project_masks_on_boxes`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn

from .box_ops import Glipv2BoxCoder, box_iou_legacy, elementwise_giou

# Official defaults: loss_cls is the dot-product token loss (FUSE_CONFIG.DOT_PRODUCT_TOKEN_LOSS_WEIGHT = 1.0),
# loss_box the GIoU loss (MODEL.ATSS.REG_LOSS_WEIGHT = 2.0, applied inside ATSSLossComputation.__call__),
# loss_centerness unweighted; all in maskrcnn_benchmark/config/defaults.py.
DEFAULT_GROUNDING_LOSS_WEIGHTS = {"loss_cls": 1.0, "loss_box": 2.0, "loss_centerness": 1.0}

# Sentinel IoU of non-candidate anchors (official INF = 1e8 in modeling/rpn/loss.py).
_INF = 1e8
# Official ATSS keeps a candidate only if its centre is more than 0.01 px inside the gt box.
_MIN_INSIDE_DISTANCE = 0.01
# Official positive maps are 256 wide (MAX_QUERY_LEN) and background anchors get target 1 at the last column,
# the "[NoObj]" token (prepare_targets: ``unmatched_labels[-1] = 1``). It only matters when that position is a real
# token, i.e. for captions of 256 tokens; index 255 reproduces that whatever the padding strategy.
OFFICIAL_NO_OBJECT_TOKEN_INDEX = 255


def atss_assign(
    anchors: torch.Tensor, num_anchors_per_level: list[int], gt_boxes: torch.Tensor, topk: int = 9
) -> torch.Tensor:
    """Adaptive Training Sample Selection (official ``ATSSLossComputation.prepare_targets``).

    Per level, the ``topk`` anchors closest (centre distance) to each gt are candidates; a candidate is positive if
    its IoU (legacy "+1") is ``>= mean + std`` (unbiased std) of the gt's candidate IoUs and its centre lies more than
    0.01 px inside the gt. An anchor positive for several gts goes to the one with the highest IoU.

    Args:
        anchors: ``(A, 4)`` xyxy pixels, levels concatenated.
        num_anchors_per_level: anchors per level, summing to ``A``.
        gt_boxes: ``(N, 4)`` xyxy pixels (``N`` may be 0).
        topk: candidates per level and gt (official ``MODEL.ATSS.TOPK`` = 9, one anchor per location).

    Returns:
        ``(A,)`` long: index of the matched gt, -1 for background.
    """
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    if sum(num_anchors_per_level) != num_anchors:
        raise ValueError(f"num_anchors_per_level sums to {sum(num_anchors_per_level)}, not {num_anchors} anchors")
    matched = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    if num_gt == 0 or num_anchors == 0:
        return matched
    ious = box_iou_legacy(anchors, gt_boxes)  # (A, N)
    anchor_centres = torch.stack(((anchors[:, 0] + anchors[:, 2]) / 2.0, (anchors[:, 1] + anchors[:, 3]) / 2.0), 1)
    gt_centres = torch.stack(((gt_boxes[:, 0] + gt_boxes[:, 2]) / 2.0, (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2.0), 1)
    distances = (anchor_centres[:, None, :] - gt_centres[None, :, :]).pow(2).sum(-1).sqrt()  # (A, N)

    candidate_idxs, start = [], 0
    for level_size in num_anchors_per_level:
        k = min(topk, level_size)
        if k > 0:
            _, level_idxs = distances[start : start + level_size].topk(k, dim=0, largest=False)
            candidate_idxs.append(level_idxs + start)
        start += level_size
    candidate_idxs = torch.cat(candidate_idxs, dim=0)  # (K, N)

    candidate_ious = ious.gather(0, candidate_idxs)  # (K, N)
    if candidate_ious.shape[0] > 1:
        iou_threshold = candidate_ious.mean(0) + candidate_ious.std(0)
    else:  # torch.std of one value is NaN in the official code: nothing passes the threshold
        iou_threshold = torch.full_like(candidate_ious[0], math.nan)
    is_pos = candidate_ious >= iou_threshold[None, :]

    candidate_cx = anchor_centres[:, 0][candidate_idxs]
    candidate_cy = anchor_centres[:, 1][candidate_idxs]
    inside = (
        torch.stack(
            (
                candidate_cx - gt_boxes[:, 0],
                candidate_cy - gt_boxes[:, 1],
                gt_boxes[:, 2] - candidate_cx,
                gt_boxes[:, 3] - candidate_cy,
            ),
            dim=1,
        ).min(dim=1)[0]
        > _MIN_INSIDE_DISTANCE
    )
    is_pos = is_pos & inside

    gt_idxs = torch.arange(num_gt, device=anchors.device).expand_as(candidate_idxs)
    pos_anchor, pos_gt = candidate_idxs[is_pos], gt_idxs[is_pos]
    ious_inf = torch.full_like(ious, -_INF)
    ious_inf[pos_anchor, pos_gt] = ious[pos_anchor, pos_gt]
    best_iou, best_gt = ious_inf.max(dim=1)
    return torch.where(best_iou == -_INF, matched, best_gt)


def token_sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, text_mask: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Binary sigmoid focal loss over (anchor x real token), summed (official ``token_sigmoid_binary_focal_loss``).

    Args:
        logits: ``(B, A, T)`` region-word logits.
        targets: ``(B, A, T)`` 0/1 targets.
        text_mask: ``(B, T)``, nonzero for real tokens; other positions are left out.
        alpha: positive-class weight (no weighting if negative).
        gamma: focusing exponent.

    Returns:
        Scalar: the sum over all kept elements.
    """
    keep = (text_mask.to(logits.device) > 0).unsqueeze(1).expand_as(logits)
    logits, targets = logits[keep], targets[keep].to(logits.dtype)
    prob = torch.sigmoid(logits)
    ce_loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.sum()


def giou_loss(
    pred_boxes: torch.Tensor, target_boxes: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Summed ``1 - GIoU`` (official ``ATSSLossComputation.GIoULoss``, after decoding both box sets; see
    :func:`~glipv2.box_ops.elementwise_giou` for its arithmetic).

    Args:
        pred_boxes: ``(P, 4)`` xyxy.
        target_boxes: ``(P, 4)`` xyxy.
        weight: ``(P,)`` per-box weights (centerness targets), used when their sum is > 0.

    Returns:
        Scalar ``sum(weight * (1 - giou))`` (or the unweighted sum).
    """
    losses = 1 - elementwise_giou(pred_boxes, target_boxes)
    if weight is not None and weight.sum() > 0:
        return (losses * weight).sum()
    return losses.sum()


def centerness_targets(target_boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Centerness of each anchor centre inside its gt box (official ``compute_centerness_targets``).

    Args:
        target_boxes: ``(P, 4)`` xyxy gt boxes (official: decoded from the regression targets).
        anchors: ``(P, 4)`` xyxy anchors.

    Returns:
        ``(P,)`` ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``.
    """
    anchors_cx = (anchors[:, 2] + anchors[:, 0]) / 2
    anchors_cy = (anchors[:, 3] + anchors[:, 1]) / 2
    left_right = torch.stack((anchors_cx - target_boxes[:, 0], target_boxes[:, 2] - anchors_cx), dim=1)
    top_bottom = torch.stack((anchors_cy - target_boxes[:, 1], target_boxes[:, 3] - anchors_cy), dim=1)
    horizontal = left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0]
    vertical = top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0]
    return torch.sqrt(horizontal * vertical)


def _mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """Sum over processes divided by the world size (official ``reduce_sum(x) / get_world_size()``)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / dist.get_world_size()
    return value


def _validate_target(index: int, target: dict, num_tokens: int, text_mask: torch.Tensor) -> None:
    """Raise ``ValueError`` naming image, box and field for malformed boxes or positive maps."""
    for field in ("boxes", "positive_map"):
        if field not in target:
            raise ValueError(f"image {index}: target has no '{field}' field")
    boxes, positive_map = target["boxes"], target["positive_map"]
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"image {index}: 'boxes' must be (N, 4) xyxy, got shape {tuple(boxes.shape)}")
    if positive_map.shape != (boxes.shape[0], num_tokens):
        raise ValueError(
            f"image {index}: 'positive_map' must be ({boxes.shape[0]}, {num_tokens}), got {tuple(positive_map.shape)}"
        )
    finite = torch.isfinite(boxes).all(dim=1)
    if not finite.all():
        raise ValueError(f"image {index}, box {int((~finite).nonzero()[0])}: 'boxes' has a NaN or infinite value")
    empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if empty.any():
        box = int(empty.nonzero()[0])
        raise ValueError(f"image {index}, box {box}: 'boxes' has zero or negative area: {boxes[box].tolist()}")
    real_positive = (positive_map > 0) & (text_mask.to(positive_map.device) > 0)
    no_token = ~real_positive.any(dim=1)
    if no_token.any():
        box = int(no_token.nonzero()[0])
        raise ValueError(f"image {index}, box {box}: 'positive_map' row has no positive real (unpadded) token")


class Glipv2GroundingLoss(nn.Module):
    """ATSS grounding losses of GLIP (official ``ATSSLossComputation``, dot-product token branch); no parameters.

    Returns the three losses UNWEIGHTED (multiply by ``DEFAULT_GROUNDING_LOSS_WEIGHTS`` to get the official total):

    - ``loss_cls``: token sigmoid focal loss over (anchor x real token) / ``num_pos``. The per-anchor token target is
      the BINARY positive-map row of its matched box (official ``collate_batch`` casts the map to bool); background
      anchors have target 0 except 1 at ``no_object_token_index`` (the official "[NoObj]" column, masked out unless
      it is a real token).
    - ``loss_box``: GIoU loss weighted by the centerness targets / their sum.
    - ``loss_centerness``: centerness BCE / ``num_pos``.

    ``num_pos`` and the centerness-target sum are averaged over processes (``all_reduce`` sum / world size) when
    ``torch.distributed`` is initialised; ``num_pos`` is clamped to at least 1. Computed in float32, as the official
    ``custom_fwd(cast_inputs=torch.float32)``.

    Args:
        topk: ATSS candidates per level and gt.
        focal_alpha: focal loss alpha (official ``FUSE_CONFIG.TOKEN_ALPHA`` = 0.25).
        focal_gamma: focal loss gamma (official ``FUSE_CONFIG.TOKEN_GAMMA`` = 2.0).
        box_coder: defaults to ``Glipv2BoxCoder()``.
        no_object_token_index: token given target 1 on background anchors, ``None`` to disable (see
            ``OFFICIAL_NO_OBJECT_TOKEN_INDEX``).
    """

    def __init__(
        self,
        topk: int = 9,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_coder: Glipv2BoxCoder | None = None,
        no_object_token_index: int | None = OFFICIAL_NO_OBJECT_TOKEN_INDEX,
    ) -> None:
        super().__init__()
        self.topk = topk
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.box_coder = box_coder if box_coder is not None else Glipv2BoxCoder()
        self.no_object_token_index = no_object_token_index

    @torch.no_grad()
    def prepare_targets(
        self,
        anchors: torch.Tensor,
        num_anchors_per_level: list[int],
        targets: list[dict[str, torch.Tensor]],
        num_tokens: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ATSS-assign every image's boxes to anchors.

        Args:
            anchors: ``(A, 4)`` xyxy pixels.
            num_anchors_per_level: anchors per level.
            targets: per image ``{"boxes": (N_i, 4), "positive_map": (N_i, T)}`` (already validated).
            num_tokens: ``T``.

        Returns:
            matched: ``(B, A)`` long, matched box index or -1.
            token_targets: ``(B, A, T)`` float 0/1 token targets.
        """
        matched, token_targets = [], []
        for target in targets:
            boxes = target["boxes"].to(device=anchors.device, dtype=anchors.dtype)
            positive_map = (target["positive_map"].to(anchors.device) > 0).to(anchors.dtype)
            matched_per_image = atss_assign(anchors, num_anchors_per_level, boxes, self.topk)
            tokens = torch.zeros(anchors.shape[0], num_tokens, dtype=anchors.dtype, device=anchors.device)
            positive = matched_per_image >= 0
            tokens[positive] = positive_map[matched_per_image[positive]]
            if self.no_object_token_index is not None and self.no_object_token_index < num_tokens:
                tokens[~positive, self.no_object_token_index] = 1.0
            matched.append(matched_per_image)
            token_targets.append(tokens)
        return torch.stack(matched), torch.stack(token_targets)

    def forward(
        self,
        logits: torch.Tensor,
        box_regression: torch.Tensor,
        centerness: torch.Tensor,
        anchors: torch.Tensor,
        num_anchors_per_level: list[int],
        text_attention_mask: torch.Tensor,
        targets: list[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Compute the unweighted grounding losses.

        Args:
            logits: ``(B, A, T)`` region-word logits.
            box_regression: ``(B, A, 4)`` box deltas (already scaled per level).
            centerness: ``(B, A)`` centerness logits.
            anchors: ``(A, 4)`` xyxy input pixels, shared by the batch.
            num_anchors_per_level: anchors per level, summing to ``A``.
            text_attention_mask: ``(B, T)``, 1 for real tokens.
            targets: per image ``{"boxes": (N_i, 4) xyxy input pixels, "positive_map": (N_i, T) 0/1}``.

        Returns:
            ``{"loss_cls", "loss_box", "loss_centerness"}`` scalar float32 tensors.
        """
        batch_size, num_anchors, num_tokens = logits.shape
        if box_regression.shape != (batch_size, num_anchors, 4) or centerness.shape != (batch_size, num_anchors):
            raise ValueError(
                f"box_regression {tuple(box_regression.shape)} / centerness {tuple(centerness.shape)} do not match "
                f"logits {tuple(logits.shape)}"
            )
        if anchors.shape != (num_anchors, 4) or text_attention_mask.shape != (batch_size, num_tokens):
            raise ValueError(
                f"anchors {tuple(anchors.shape)} / text_attention_mask "
                f"{tuple(text_attention_mask.shape)} do not match logits {tuple(logits.shape)}"
            )
        if len(targets) != batch_size:
            raise ValueError(f"got {len(targets)} targets for a batch of {batch_size}")
        for index, target in enumerate(targets):
            _validate_target(index, target, num_tokens, text_attention_mask[index])

        logits, box_regression, centerness = logits.float(), box_regression.float(), centerness.float()
        anchors = anchors.to(device=logits.device, dtype=torch.float32)
        matched, token_targets = self.prepare_targets(anchors, num_anchors_per_level, targets, num_tokens)
        positive = matched >= 0  # (B, A)

        num_pos = _mean_over_processes(positive.sum().to(torch.float32)).clamp(min=1.0)
        loss_cls = (
            token_sigmoid_focal_loss(logits, token_targets, text_attention_mask, self.focal_alpha, self.focal_gamma)
            / num_pos
        )

        pos_regression, pos_centerness = box_regression[positive], centerness[positive]
        if pos_regression.shape[0] == 0:
            _mean_over_processes(torch.zeros((), device=logits.device))  # keep collectives in step (official)
            return {"loss_cls": loss_cls, "loss_box": pos_regression.sum(), "loss_centerness": pos_centerness.sum()}

        pos_anchors = anchors.expand(batch_size, num_anchors, 4)[positive]
        batch_index = positive.nonzero()[:, 0]
        gt_boxes = torch.cat([t["boxes"].to(device=logits.device, dtype=torch.float32) for t in targets])
        offsets = torch.tensor([0] + [len(t["boxes"]) for t in targets], device=logits.device).cumsum(0)
        matched_gt = gt_boxes[offsets[batch_index] + matched[positive]]
        # Official: regression targets are encoded, then decoded again for GIoU and centerness.
        target_boxes = self.box_coder.decode(self.box_coder.encode(matched_gt, pos_anchors), pos_anchors)
        ctr_targets = centerness_targets(target_boxes, pos_anchors)
        sum_ctr_targets = _mean_over_processes(ctr_targets.sum())
        pred_boxes = self.box_coder.decode(pos_regression, pos_anchors)
        loss_box = giou_loss(pred_boxes, target_boxes, weight=ctr_targets) / sum_ctr_targets
        loss_centerness = F.binary_cross_entropy_with_logits(pos_centerness, ctr_targets, reduction="sum") / num_pos
        return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_centerness": loss_centerness}


# ------------------------------------------------------------------------------------------- vqa, captioning, mlm
def vqa_soft_score_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """VQAv2 soft-score loss: `BCE-with-logits(logits, labels)` averaged over all entries, times the number of
    answers (the BUTD / ViLBERT / UNITER recipe: a per-question sum over answers, averaged over questions).

    Args:
        logits: `(B, A)`; labels: `(B, A)` soft scores in [0, 1] (official accuracy of each answer; answers
            outside the vocabulary are simply absent, so a question may have an all-zero row).
    """
    if labels.shape != logits.shape:
        raise ValueError(
            f"VQA labels must be (batch, num_answers) = {tuple(logits.shape)} soft scores, got "
            f"{tuple(labels.shape)} (see vqa_targets)."
        )
    labels = labels.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, labels) * labels.shape[1]


def shifted_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy: logits at position t predict `labels[t + 1]`; -100 is ignored (shifted once here).

    Args:
        logits: `(B, T, V)`; labels: `(B, T)` the input ids with -100 on padding.
    """
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(shifted_logits, labels[:, 1:].reshape(-1), ignore_index=-100)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked-LM cross-entropy over the positions whose label is not -100 (`(B, T, V)`, `(B, T)`)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


# ------------------------------------------------------------------------------------------------- contrastive
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenates `tensor` `(N_r, ...)` of every process along dim 0 (rank order), differentiably.

    Sizes may differ between processes: rows are padded to the largest `N_r` for the collective and the padding is
    dropped again. Without an initialised process group (or with one process) `tensor` is returned unchanged.

    Returns:
        `(sum_r N_r, ...)`.
    """
    if not _distributed():
        return tensor
    from torch.distributed.nn.functional import all_gather

    world_size = dist.get_world_size()
    local_size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(local_size) for _ in range(world_size)]
    dist.all_gather(sizes, local_size)
    sizes = [int(size.item()) for size in sizes]
    padded = F.pad(tensor, (0, 0) * (tensor.dim() - 1) + (0, max(sizes) - tensor.shape[0]))
    gathered = all_gather(padded)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes)], dim=0)


def clip_contrastive_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, gather: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE: `(CE(s * I T^T, diag) + CE(s * T I^T, diag)) / 2`, image i paired with text i.

    Args:
        image_embeds: `(B, P)` L2-normalised image embeddings.
        text_embeds: `(B, P)` L2-normalised text embeddings.
        logit_scale: scalar, the already exponentiated (and clamped) temperature `s`.
        gather: gather both sides from every process first (the loss of the global batch).
    """
    if gather:
        image_embeds, text_embeds = gather_with_grad(image_embeds), gather_with_grad(text_embeds)
    logits_per_image = logit_scale * image_embeds @ text_embeds.T
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2


def _multi_positive_cross_entropy(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Mean over rows with at least one positive of `-sum_j q_ij log softmax(logits)_ij`, q uniform on positives."""
    has_positive = positives.any(dim=1)
    if not has_positive.any():
        return logits.sum() * 0.0
    targets = positives[has_positive].float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    log_probs = logits[has_positive].log_softmax(dim=1)
    return -(targets * log_probs).sum(dim=1).mean()


def region_word_contrastive_loss(
    region_embeds: torch.Tensor,
    region_labels: torch.Tensor,
    word_embeds: torch.Tensor,
    word_labels: torch.Tensor,
    logit_scale: torch.Tensor,
    gather: bool = True,
) -> torch.Tensor:
    """GLIPv2 inter-image region-word contrastive loss (arXiv 2206.05836, §3.2, "inter-image region-word").

    Exact definition used here (GLIPv2's code was never released): after gathering the regions and words of every
    image of every process, with `S = logit_scale * R W^T` (`(N, M)`, cosine similarities) and `Y_ij = 1` when
    region i and word j carry the same label (so a region's own phrase and every same-class phrase of any other image
    are positives, every other word of the batch a negative),

        loss = ( CE_multi(S, Y) + CE_multi(S^T, Y^T) ) / 2

    where `CE_multi` is the multi-positive softmax cross-entropy (UniCL-style target: uniform over a row's positives)
    averaged over the rows that have at least one positive. Returns 0 (keeping the graph) with no positive pair.

    Args:
        region_embeds: `(N_local, P)` L2-normalised region embeddings (projected pre-fusion anchor features).
        region_labels: `(N_local,)` label of each region (the class of its matched box).
        word_embeds: `(M_local, P)` L2-normalised word embeddings (projected pre-fusion token features).
        word_labels: `(M_local,)` label of each word (the class of the phrase it belongs to).
        logit_scale: scalar, the already exponentiated temperature.
        gather: gather regions and words of every process first.
    """
    if gather:
        region_embeds, word_embeds = gather_with_grad(region_embeds), gather_with_grad(word_embeds)
        region_labels, word_labels = gather_with_grad(region_labels), gather_with_grad(word_labels)
    logits = logit_scale * region_embeds @ word_embeds.T
    positives = region_labels[:, None] == word_labels[None, :]
    return (
        _multi_positive_cross_entropy(logits, positives) + _multi_positive_cross_entropy(logits.T, positives.T)
    ) / 2


# ------------------------------------------------------------------------------------------------------ masks
# Training boxes of the mask head: each ground-truth box, moved and scaled by up to this fraction of its size, so the
# head sees boxes as loose as the detector's (Mask R-CNN trains on its proposals).
MASK_BOX_JITTER = 0.1


def jitter_boxes(boxes: torch.Tensor, amount: float = MASK_BOX_JITTER) -> torch.Tensor:
    """`(N, 4)` continuous xyxy boxes with each side moved by up to `amount` x the box's width or height (uniform,
    from torch's global generator), kept at least one pixel wide."""
    if amount <= 0 or boxes.numel() == 0:
        return boxes
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    moved = boxes + (torch.rand_like(boxes) * 2 - 1) * amount * size
    low, high = moved[:, :2], torch.maximum(moved[:, 2:], moved[:, :2] + 1.0)
    return torch.cat([low, high], dim=1)


def mask_targets(masks: torch.Tensor, boxes: torch.Tensor, resolution: int) -> torch.Tensor:
    """Ground-truth masks `(N, H, W)` (0/1, the model input frame) resampled into their boxes `(N, 4)` (continuous
    pixel xyxy): `(N, resolution, resolution)` soft targets in [0, 1] (torchvision's `project_masks_on_boxes`,
    RoIAlign with `aligned=True`)."""
    from torchvision.ops import roi_align

    if masks.shape[0] == 0:
        return masks.new_zeros(0, resolution, resolution, dtype=torch.float32)
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device)[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(masks[:, None].float(), rois.float(), resolution, 1.0, sampling_ratio=2, aligned=True)[:, 0]


def mask_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy of `(R, M, M)` mask logits (Mask R-CNN); 0 (with a graph) for no RoI."""
    if logits.numel() == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


__all__ = [
    "DEFAULT_GROUNDING_LOSS_WEIGHTS",
    "MASK_BOX_JITTER",
    "Glipv2GroundingLoss",
    "atss_assign",
    "centerness_targets",
    "clip_contrastive_loss",
    "gather_with_grad",
    "giou_loss",
    "jitter_boxes",
    "mask_loss",
    "mask_targets",
    "mlm_loss",
    "region_word_contrastive_loss",
    "shifted_lm_loss",
    "token_sigmoid_focal_loss",
    "vqa_soft_score_loss",
]
