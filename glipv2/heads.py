"""The task heads on the shared GLIPv2 backbone, the one list of their names and the factory that builds them.

Every head keeps its module name in every class (`grounding_head`, `vqa_head`, `caption_head`, `mlm_head`,
`contrastive_head`), so a [`Glipv2ForPreTraining`] checkpoint loads into each single-task class, PEFT's
`modules_to_save=["<task>_head"]` works, and a class ignores the heads it does not hold ([`unexpected_head_keys`]).

- grounding: the dot-product branch of the official `VLDyHead` (`maskrcnn_benchmark/modeling/rpn/vldyhead.py`):
  region-word logits, box deltas and centerness per anchor;
- vqa: answer classifier on pooled fused text and vision (BUTD / ViLBERT / UNITER style);
- caption, mlm: BERT's LM prediction head, decoder tied to the word embeddings;
- contrastive: CLIP-style projections of the pre-fusion features with a learnable temperature;
- mask (only with `config.use_mask_head`): a Mask R-CNN mask head on the fused features, one class-agnostic mask
  per box (instance and referring segmentation).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

# RoIAlign as matrix products (`roi_align_separable`) on CPU maps up to this many cells (64 x 64), torchvision's kernel
# beyond: the dense products grow with the map, the sampled ones with the boxes only
SEPARABLE_ROI_ALIGN_MAX_CELLS = 4096

# Every head a checkpoint of this family may hold, in the order the all-heads class builds them.
HEAD_NAMES: tuple[str, ...] = (
    "grounding_head",
    "vqa_head",
    "caption_head",
    "mlm_head",
    "contrastive_head",
    "mask_head",
)
# Heads a model holds only when its config asks for them (`use_<name>`), so older checkpoints keep their keys.
OPTIONAL_HEADS: tuple[str, ...] = ("mask_head",)

# Official VLDyHead clamps dot-product logits to +-50000 (FUSE_CONFIG.CLAMP_DOT_PRODUCT, True in the GLIP-T/L configs).
DOT_PRODUCT_LOGIT_CLAMP = 50000.0
# Logit given to padded text positions. It is the clamp floor, i.e. the lowest logit the official head can emit,
# so sigmoid() is exactly 0 and any max/mean over tokens ignores padding; the loss masks padding anyway.
PADDED_TOKEN_LOGIT = -DOT_PRODUCT_LOGIT_CLAMP
# CLIP (arXiv 2103.00020, §2.5): the temperature is clipped so that the logits are scaled by at most 100.
LOGIT_SCALE_MAX = math.log(100.0)


def unexpected_head_keys(own_heads: tuple[str, ...]) -> list[str]:
    """`_keys_to_ignore_on_load_unexpected` patterns of a class holding `own_heads`: every other head."""
    return [rf"^{head}\." for head in HEAD_NAMES if head not in own_heads]


# ------------------------------------------------------------------------------------------------------ pooling
def masked_mean(features: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """`(B, T, D)` text features -> `(B, D)` mean over real tokens (special tokens included)."""
    if attention_mask is None:
        return features.mean(dim=1)
    weights = attention_mask.to(features.dtype).unsqueeze(-1)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def pool_levels(levels: tuple[torch.Tensor, ...], pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Levels `(B, C, H_l, W_l)` -> `(B, C)`: each level's average over real pixels, then the mean over levels.

    Every level (P3..P7) counts equally, so the pooled vector is not dominated by the finest level's many positions.
    With a `(B, H, W)` pixel mask each cell is weighted by the fraction of real pixels it covers.
    """
    pooled = []
    for level in levels:
        if pixel_mask is None:
            pooled.append(level.mean(dim=(2, 3)))
            continue
        weights = F.adaptive_avg_pool2d(pixel_mask[:, None].to(level.dtype), level.shape[-2:])
        pooled.append((level * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp(min=1e-6))
    return torch.stack(pooled).mean(dim=0)


def _flatten_level(feature: torch.Tensor) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B, H * W, C)`, row-major (official `permute_and_flatten` with one anchor)."""
    batch_size, channels = feature.shape[:2]
    return feature.permute(0, 2, 3, 1).reshape(batch_size, -1, channels)


# ---------------------------------------------------------------------------------------------------- grounding
class Glipv2Scale(nn.Module):
    """A learnable scalar multiplier (official `maskrcnn_benchmark.layers.Scale`); parameter `scale`: [1]."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([float(init_value)]))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Returns `hidden_states * scale` (any shape)."""
        return hidden_states * self.scale


class Glipv2GroundingHead(nn.Module):
    """Region-word alignment head: token logits, box deltas and centerness for every anchor.

    The dot-product branch of the official `VLDyHead`, without the unused `cls_logits` conv (its loss weight is 0
    when `USE_CLASSIFICATION_LOSS` is False, as in every GLIP config). Built alone (outside a model) it is
    initialised as the official code does ([`reset_parameters`]).

    Args:
        hidden_size: visual channels `C` (256 in GLIP).
        text_hidden_size: text channels `D` (768 for BERT-base).
        num_levels: number of feature levels (one `Glipv2Scale` each).
        prior_prob: focal-loss prior; `bias0 = -log((1 - p) / p)`.
        log_scale_init: initial temperature `log_scale` (official `DYHEAD.LOG_SCALE` = 0.0).
    """

    def __init__(
        self,
        hidden_size: int = 256,
        text_hidden_size: int = 768,
        num_levels: int = 5,
        prior_prob: float = 0.01,
        log_scale_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.text_hidden_size = text_hidden_size
        self.num_levels = num_levels
        self.prior_prob = prior_prob
        self.log_scale_init = log_scale_init
        self.bbox_pred = nn.Conv2d(hidden_size, 4, kernel_size=1)
        self.centerness = nn.Conv2d(hidden_size, 1, kernel_size=1)
        self.scales = nn.ModuleList([Glipv2Scale(1.0) for _ in range(num_levels)])
        self.text_projection = nn.Linear(text_hidden_size, hidden_size, bias=True)
        self.log_scale = nn.Parameter(torch.tensor([float(log_scale_init)]))
        self.bias_lang = nn.Parameter(torch.zeros(text_hidden_size))
        self.bias0 = nn.Parameter(torch.tensor([self.prior_bias]))
        self.reset_parameters()

    @property
    def prior_bias(self) -> float:
        """`-log((1 - p) / p)`: the initial logit giving probability `prior_prob`."""
        return -math.log((1 - self.prior_prob) / self.prior_prob)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Official initialisation: convs N(0, 0.01) with zero bias, scales 1, `bias_lang` 0, `bias0` prior.

        `text_projection` keeps PyTorch's default `nn.Linear` init, as the official `dot_product_projection_text`
        does (the official init loop only touches `nn.Identity` there).
        """
        for conv in (self.bbox_pred, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, 0.0)
        for scale in self.scales:
            scale.scale.fill_(1.0)
        self.text_projection.reset_parameters()
        self.log_scale.fill_(self.log_scale_init)
        self.bias_lang.zero_()
        self.bias0.fill_(self.prior_bias)

    def forward(
        self,
        vision_features: tuple[torch.Tensor, ...],
        text_features: torch.Tensor,
        text_attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-anchor outputs over all levels (fine to coarse, row-major within a level).

        Args:
            vision_features: `num_levels` fused maps, each `(B, C, H_l, W_l)`.
            text_features: `(B, T, D)` fused text features (official `language_dict_features["hidden"]` with
                `USE_FUSED_FEATURES_DOT_PRODUCT`).
            text_attention_mask: `(B, T)`, 1 for real tokens, 0 for padding.

        Returns:
            logits: `(B, A, T)` region-word logits `(visual . proj(text)) / exp(log_scale) + bias`, clamped to
                +-50000; padded text positions are set to `PADDED_TOKEN_LOGIT` (-50000, sigmoid 0).
            box_regression: `(B, A, 4)` box deltas, already multiplied by the level's scale.
            centerness: `(B, A)` centerness logits.
        """
        if len(vision_features) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} feature levels, got {len(vision_features)}")
        normalized_text = F.normalize(text_features, p=2, dim=-1)
        projected_text = self.text_projection(normalized_text / 2.0)  # (B, T, C); "/ 2.0" is official
        token_bias = torch.matmul(normalized_text, self.bias_lang) + self.bias0  # (B, T)
        temperature = self.log_scale.exp()
        padding = ~text_attention_mask.bool()
        logits, box_regression, centerness = [], [], []
        for level, feature in enumerate(vision_features):
            box_regression.append(_flatten_level(self.scales[level](self.bbox_pred(feature))))
            centerness.append(_flatten_level(self.centerness(feature)).squeeze(-1))
            visual = _flatten_level(feature)  # (B, HW, C)
            level_logits = torch.matmul(visual, projected_text.transpose(-1, -2)) / temperature
            level_logits = level_logits + token_bias.unsqueeze(1)
            level_logits = level_logits.clamp(min=-DOT_PRODUCT_LOGIT_CLAMP, max=DOT_PRODUCT_LOGIT_CLAMP)
            logits.append(level_logits.masked_fill(padding.unsqueeze(1), PADDED_TOKEN_LOGIT))
        return torch.cat(logits, dim=1), torch.cat(box_regression, dim=1), torch.cat(centerness, dim=1)


# ----------------------------------------------------------------------------------------------- understanding
class Glipv2VqaHead(nn.Module):
    """Answer classifier: `[pooled fused text ; pooled fused vision]` -> Linear -> GELU -> LayerNorm -> Linear.

    The two-layer classifier of BUTD / ViLBERT / UNITER VQA heads; text is the attention-masked mean of the fused
    text features, vision the [`pool_levels`] mean over all fused pyramid levels.
    """

    def __init__(self, vision_dim: int, text_dim: int, hidden_size: int, num_answers: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(vision_dim + text_dim, hidden_size)
        self.activation = nn.GELU()
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.classifier = nn.Linear(hidden_size, num_answers)

    def forward(
        self,
        vision_features: tuple[torch.Tensor, ...],
        text_features: torch.Tensor,
        text_attention_mask: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused levels `(B, C, H_l, W_l)`, fused text `(B, T, D)`, mask `(B, T)` -> answer logits `(B, A)`."""
        pooled = torch.cat(
            [masked_mean(text_features, text_attention_mask), pool_levels(vision_features, pixel_mask)], -1
        )
        return self.classifier(self.layer_norm(self.activation(self.dense(pooled))))


class Glipv2LMHead(nn.Module):
    """BERT's LM prediction head: dense -> activation -> LayerNorm -> decoder (tied to the word embeddings) + bias.

    Used as `caption_head` (next-token prediction) and `mlm_head` (masked tokens), each with its own transform.
    """

    def __init__(self, hidden_size: int, vocab_size: int, hidden_act: str, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = ACT2FN[hidden_act]
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.decoder = nn.Linear(hidden_size, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(B, T, D)` -> vocabulary logits `(B, T, V)`."""
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden_states)))) + self.bias


class Glipv2ContrastiveHead(nn.Module):
    """Dual-encoder projections on PRE-fusion features (CLIP-style) with a learnable temperature.

    `visual_projection` / `text_projection` serve image-text (pooled) and region-word (per anchor / per token)
    contrast alike; `logit_scale` starts at ln(1/0.07) and `scale()` clamps its exponential at 100 (CLIP).
    """

    def __init__(self, vision_dim: int, text_dim: int, projection_dim: int, logit_scale_init: float) -> None:
        super().__init__()
        self.visual_projection = nn.Linear(vision_dim, projection_dim, bias=False)
        self.text_projection = nn.Linear(text_dim, projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))

    def scale(self) -> torch.Tensor:
        """`exp(logit_scale)` clamped to at most 100."""
        return self.logit_scale.clamp(max=LOGIT_SCALE_MAX).exp()

    def embed_regions(self, features: torch.Tensor) -> torch.Tensor:
        """`(..., C)` visual features -> `(..., P)` L2-normalised embeddings."""
        return F.normalize(self.visual_projection(features), dim=-1)

    def embed_words(self, features: torch.Tensor) -> torch.Tensor:
        """`(..., D)` text features -> `(..., P)` L2-normalised embeddings."""
        return F.normalize(self.text_projection(features), dim=-1)

    def embed_image(self, levels: tuple[torch.Tensor, ...], pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-fusion levels -> `(B, P)` image embeddings ([`pool_levels`] mean over P3..P7, then projection)."""
        return self.embed_regions(pool_levels(levels, pixel_mask))

    def embed_text(self, features: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Pre-fusion text `(B, T, D)` -> `(B, P)` embeddings (masked mean pooling, as sentence-transformers)."""
        return self.embed_words(masked_mean(features, attention_mask))


# ------------------------------------------------------------------------------------------------------ masks
def _bilinear_axis_weights(
    start: torch.Tensor, length: torch.Tensor, bins: int, samples: int, size: int
) -> torch.Tensor:
    """`(N, bins, size)` weights of RoIAlign along one axis: for each bin the average over its `samples` points of
    their bilinear weights on the `size` cells (torchvision's rules: a point beyond [-1, size] adds nothing, one in
    [-1, 0] reads cell 0, one past the last cell reads the last)."""
    steps = (torch.arange(bins * samples, dtype=start.dtype, device=start.device) + 0.5) / samples
    points = start[:, None] + steps[None] * (length / bins)[:, None]  # (N, bins * samples)
    inside = (points >= -1.0) & (points <= size)
    points = points.clamp(min=0.0)
    low = points.floor().clamp(max=size - 1)
    points = torch.where(low >= size - 1, low, points)
    high = (low + 1).clamp(max=size - 1)
    frac = points - low
    weights = torch.zeros(*points.shape, size, dtype=start.dtype, device=start.device)
    weights.scatter_add_(-1, low.long()[..., None], ((1 - frac) * inside)[..., None])
    weights.scatter_add_(-1, high.long()[..., None], (frac * inside)[..., None])
    return weights.view(len(start), bins, samples, size).mean(dim=2)


def roi_align_separable(
    features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float, sampling_ratio: int
) -> torch.Tensor:
    """torchvision's `roi_align(..., aligned=True)` with a fixed `sampling_ratio`, computed as two matrix products:
    bilinear sampling averaged over a bin is separable, `out[n] = A_y[n] @ features[b_n] @ A_x[n]^T`. Equal to
    torchvision's up to float rounding. Its backward is matrix products too, where torchvision's CPU kernel scatters
    sample by sample (23 ms of a 0.8 s demo training step with masks); the dense products cost
    `H * W / (4 * output_size * sampling_ratio ** 2)` times the sampled ones, so [`Glipv2MaskHead`] uses it for
    small CPU maps only.

    Args:
        features: `(B, C, H, W)`.
        rois: `(N, 5)` rows `(batch index, x1, y1, x2, y2)` in input coordinates.
        output_size: side of the pooled grid.
        spatial_scale: input coordinates -> feature cells.
        sampling_ratio: sample points per bin and axis (> 0).
    """
    if sampling_ratio <= 0:
        raise ValueError(f"roi_align_separable needs a fixed sampling_ratio > 0, got {sampling_ratio}")
    boxes = rois[:, 1:].to(features.dtype) * spatial_scale - 0.5
    height, width = features.shape[-2:]
    rows = _bilinear_axis_weights(boxes[:, 1], boxes[:, 3] - boxes[:, 1], output_size, sampling_ratio, height)
    cols = _bilinear_axis_weights(boxes[:, 0], boxes[:, 2] - boxes[:, 0], output_size, sampling_ratio, width)
    pooled = features.new_empty(len(rois), features.shape[1], output_size, output_size)
    images = rois[:, 0].long()
    with torch.autocast(features.device.type, enabled=False):  # in the features' precision, as torchvision's
        for image in images.unique().tolist():
            selected = images == image
            pooled[selected] = torch.einsum("nph,chw,nqw->ncpq", rows[selected], features[image], cols[selected])
    return pooled


class Glipv2MaskHead(nn.Module):
    """One class-agnostic mask per box, from the fused image features (instance and referring segmentation).

    Mask R-CNN's mask head (He et al. 2017) on a stride-4 map: P2 (the FPN's stride-4 level, before the fusion) plus
    the fused P3 upsampled 2x, merged by a 3x3 convolution with ReLU, so that the masks follow the image at 4-pixel
    resolution and the prompt through P3 (a referring expression shapes them). RoIAlign (`aligned=True`, 2 samples
    per bin) of a `roi_size` x `roi_size` grid from that map, `num_convs` 3x3 convolutions with ReLU, a 2x transposed
    convolution with ReLU and a 1x1 convolution to one mask logit per position (`2 * roi_size` square). The masks are
    class-agnostic: a box's class is the phrase it is grounded to, so the vocabulary stays the prompt's. GLIPv2's
    text available to this project does not specify its mask head; this is the standard one, except that every box
    is pooled from the stride-4 map rather than from the level FPN's size rule picks (strides 8-32 gave the
    4-cell-wide objects of the demo too coarse a grid for masks at IoU 0.75-0.95).

    Args:
        hidden_size: channels of the fused levels and of P2 (and of the head's convolutions).
        num_convs: 3x3 convolutions before the upsampling.
        roi_size: RoIAlign grid side; masks are `2 * roi_size` square.
        stride: the stride of P2 (the fused P3 is upsampled to it).
    """

    def __init__(self, hidden_size: int, num_convs: int, roi_size: int, stride: int = 4) -> None:
        super().__init__()
        self.roi_size = roi_size
        self.stride = int(stride)
        self.merge = nn.Conv2d(hidden_size, hidden_size, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(hidden_size, hidden_size, 3, padding=1) for _ in range(num_convs))
        self.upsample = nn.ConvTranspose2d(hidden_size, hidden_size, 2, stride=2)
        self.predictor = nn.Conv2d(hidden_size, 1, 1)

    def pool(
        self,
        features: tuple[torch.Tensor, torch.Tensor],
        boxes: list[torch.Tensor],
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """RoIAlign of every image's boxes (`(N_i, 4)` continuous pixel xyxy of the model input) from the merged
        stride-4 map of `features` (the fused P3, P2): `(sum N_i, C, roi_size, roi_size)` in image order. With
        `image_sizes` (`(B, 2)` unpadded input sizes) each image's map is built and pooled from its own part of the
        padded batch (`ceil(size / 4)` cells), so that it gets the masks it gets alone (the merging convolution and
        RoIAlign read the border of that part, beyond which a batch has padding)."""
        from torchvision.ops import roi_align

        fused, fine = features
        if fine is None:
            raise ValueError("The mask head needs P2 (`mask_features`): build the model with use_mask_head=True.")
        counts = [len(box) for box in boxes]
        # boxes stay float32 (half precision would round pixel coordinates); RoIAlign runs in float32 (torchvision
        # has no bfloat16 kernel) and its result takes the features' dtype
        rois = torch.cat([box.reshape(-1, 4) for box in boxes]).float()
        pooled = fine.new_zeros(len(rois), fine.shape[1], self.roi_size, self.roi_size)
        if len(rois) == 0:
            return pooled
        scale = round(fine.shape[-1] / fused.shape[-1])  # 2: the padded batch is a multiple of P3's stride
        upsampled = F.interpolate(fused, scale_factor=scale, mode="nearest")[..., : fine.shape[-2], : fine.shape[-1]]
        images = torch.repeat_interleave(torch.arange(len(boxes)), torch.tensor(counts)).to(rois.device)
        # images of one size are pooled together (training pads every image to one size: one call)
        sizes = [None] * len(boxes) if image_sizes is None else [tuple(size) for size in image_sizes.tolist()]
        for size in dict.fromkeys(sizes):
            members = [index for index, other in enumerate(sizes) if other == size]
            selected = torch.isin(images, torch.tensor(members, device=images.device))
            if not selected.any():
                continue
            merged = fine[members] + upsampled[members]
            if size is not None:
                height, width = (math.ceil(side / self.stride) for side in size)
                merged = merged[:, :, :height, :width]
            merged = F.relu(self.merge(merged))
            position = torch.full((len(boxes),), -1, dtype=rois.dtype, device=rois.device)
            position[members] = torch.arange(len(members), dtype=rois.dtype, device=rois.device)
            indexed = torch.cat([position[images[selected]][:, None], rois[selected]], dim=1)
            if merged.device.type == "cpu" and merged.shape[-2] * merged.shape[-1] <= SEPARABLE_ROI_ALIGN_MAX_CELLS:
                aligned = roi_align_separable(merged.float(), indexed, self.roi_size, 1.0 / self.stride, 2)
            else:
                aligned = roi_align(
                    merged.float(),
                    indexed,
                    output_size=self.roi_size,
                    spatial_scale=1.0 / self.stride,
                    sampling_ratio=2,
                    aligned=True,
                )
            pooled[selected] = aligned.to(pooled.dtype)
        return pooled

    def forward(
        self,
        features: tuple[torch.Tensor, torch.Tensor],
        boxes: list[torch.Tensor],
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`features` (the fused P3 `(B, C, H_3, W_3)`, P2 `(B, C, H_2, W_2)`; see [`mask_inputs`]) and per image
        `(N_i, 4)` boxes (and the `(B, 2)` unpadded sizes, see [`pool`]) -> `(sum N_i, 2 roi, 2 roi)` mask logits."""
        x = self.pool(features, boxes, image_sizes)
        for conv in self.convs:
            x = F.relu(conv(x))
        return self.predictor(F.relu(self.upsample(x)))[:, 0]


def mask_inputs(vision_features: tuple[torch.Tensor, ...], mask_features: torch.Tensor | None) -> tuple:
    """What [`Glipv2MaskHead`] reads from a [`Glipv2ModelOutput`]: the fused P3 and P2."""
    return vision_features[0], mask_features


# ------------------------------------------------------------------------------------------------------ factory
def build_head(name: str, config: Any) -> nn.Module:
    """The head called `name` (one of [`HEAD_NAMES`]) sized for a [`Glipv2Config`]; the one place that reads the
    config for a head."""
    text = config.text_config
    if name == "grounding_head":
        return Glipv2GroundingHead(
            hidden_size=config.hidden_size,
            text_hidden_size=text.hidden_size,
            num_levels=config.num_feature_levels,
            prior_prob=config.prior_prob,
            log_scale_init=config.log_scale_init,
        )
    if name == "vqa_head":
        hidden = config.vqa_hidden_size or 2 * (config.hidden_size + text.hidden_size)
        return Glipv2VqaHead(config.hidden_size, text.hidden_size, hidden, len(config.id2label), text.layer_norm_eps)
    if name in ("caption_head", "mlm_head"):
        return Glipv2LMHead(text.hidden_size, text.vocab_size, text.hidden_act, text.layer_norm_eps)
    if name == "contrastive_head":
        return Glipv2ContrastiveHead(
            config.hidden_size, text.hidden_size, config.projection_dim, config.logit_scale_init
        )
    if name == "mask_head":
        return Glipv2MaskHead(
            config.hidden_size, config.mask_head_convs, config.mask_roi_size, config.anchor_strides[0] // 2
        )
    raise ValueError(f"Unknown head {name!r}; heads: {HEAD_NAMES}.")


__all__ = [
    "DOT_PRODUCT_LOGIT_CLAMP",
    "HEAD_NAMES",
    "LOGIT_SCALE_MAX",
    "OPTIONAL_HEADS",
    "PADDED_TOKEN_LOGIT",
    "SEPARABLE_ROI_ALIGN_MAX_CELLS",
    "Glipv2ContrastiveHead",
    "Glipv2GroundingHead",
    "Glipv2LMHead",
    "Glipv2MaskHead",
    "Glipv2Scale",
    "Glipv2VqaHead",
    "build_head",
    "mask_inputs",
    "masked_mean",
    "pool_levels",
    "roi_align_separable",
    "unexpected_head_keys",
]
