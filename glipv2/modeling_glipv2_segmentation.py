"""Instance and referring segmentation: GLIPv2's localization tasks with masks, on the shared backbone.

Masks belong to grounded boxes: the grounding head finds and names the boxes (any prompt, so the vocabulary stays
open) and the mask head ([`Glipv2MaskHead`], `config.use_mask_head`) gives each box one class-agnostic mask from the
fused features. [`Glipv2ForInstanceSegmentation`] takes any prompt (class names for instance segmentation, a
referring expression for referring segmentation); [`Glipv2ForSegmentation`] is the closed-vocabulary detector
([`Glipv2ForObjectDetection`]) with masks, for transformers' stock `image-segmentation` pipeline. The all-heads
class trains the mask head too when its labels carry masks.

At inference a model gives a mask to its `config.mask_candidates` most confident anchors per image (token or label
probability x centerness, the quantity post-processing ranks by); `post_process_instance_segmentation` reports the
detections among them, each with its mask pasted into the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .box_ops import cxcywh_to_xyxy
from .configuration_glipv2 import Glipv2Config
from .heads import build_head, mask_inputs
from .loss import jitter_boxes, mask_loss, mask_targets
from .modeling_glipv2 import return_output
from .modeling_glipv2_detection import Glipv2ForGrounding, Glipv2ForObjectDetection, Glipv2GroundingOutput

MASK_LOSS_WEIGHT = 1.0  # Mask R-CNN weighs its mask loss 1, like its box losses


@dataclass
class Glipv2SegmentationOutput(Glipv2GroundingOutput):
    """Output of [`Glipv2ForInstanceSegmentation`] and [`Glipv2ForSegmentation`]: the grounding outputs
    ([`Glipv2GroundingOutput`]; `loss_dict` adds `loss_mask` when the labels carry masks), and at inference:

    Args:
        pred_masks (`torch.FloatTensor` of shape `(B, K, M, M)`): mask logits of the K mask candidates of each
            image, in their boxes (M = 2 x `config.mask_roi_size`).
        mask_anchor_indices (`torch.LongTensor` of shape `(B, K)`): the anchor of each candidate (with several
            prompt chunks, `chunk * A + anchor`); -1 pads images with fewer than K anchors.
    """

    pred_masks: torch.FloatTensor | None = None
    mask_anchor_indices: torch.LongTensor | None = None


def _pixel_boxes(boxes: torch.Tensor, image_size: torch.Tensor, clip: bool = False) -> torch.Tensor:
    """`(N, 4)` normalised cxcywh -> continuous pixel xyxy in the model input frame of an image `(height, width)`;
    with `clip`, clipped to the image first (as post-processing clips the boxes it pastes the masks into)."""
    height, width = image_size.tolist()
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=boxes.device)
    xyxy = cxcywh_to_xyxy(boxes.float())
    return (xyxy.clamp(0.0, 1.0) if clip else xyxy) * scale


class Glipv2MaskMixin:
    """The mask head's loss and inference masks, for classes holding a `mask_head` and a grounding head."""

    config: Glipv2Config

    def init_masks(self) -> None:
        """The mask head (`config.use_mask_head` must be set) and its loss weight."""
        if not self.config.use_mask_head:
            raise ValueError(
                f"{type(self).__name__} needs a mask head: build it from a config with use_mask_head=True "
                "(e.g. Glipv2Config.from_preset(..., use_mask_head=True) or from_pretrained(..., use_mask_head=True))."
            )
        with torch.random.fork_rng(devices=[]):  # construction draws nothing: the other modules' init is unchanged
            self.mask_head = build_head("mask_head", self.config)
        self.loss_weights["loss_mask"] = MASK_LOSS_WEIGHT

    def mask_training_loss(
        self,
        labels: list[dict[str, torch.Tensor]],
        features: tuple[torch.Tensor, torch.Tensor],
        image_sizes: torch.Tensor,
    ) -> torch.Tensor | None:
        """Mask R-CNN's mask loss over the boxes of the images whose labels carry `masks` (`(N, H, W)` 0/1 at the
        image's size in the model input, one per box); None when no label does. In training the boxes are jittered
        ([`jitter_boxes`]); with `config.mask_loss_to_backbone` False the loss trains the mask head and P2's own
        convolutions, not the shared backbone."""
        boxes, targets = [], []
        resolution = 2 * self.config.mask_roi_size
        for index, label in enumerate(labels):
            masks = label.get("masks")
            if masks is None:
                boxes.append(label["boxes"].new_zeros(0, 4))
                continue
            height, width = image_sizes[index].tolist()
            if (
                masks.dim() != 3
                or masks.shape[0] != label["boxes"].shape[0]
                or tuple(masks.shape[1:])
                != (
                    height,
                    width,
                )
            ):
                raise ValueError(
                    f"labels[{index}]['masks'] must be (num_boxes={label['boxes'].shape[0]}, {height}, {width}) "
                    f"(one mask per box at the image's size in the model input), got {tuple(masks.shape)}."
                )
            pixel_boxes = _pixel_boxes(label["boxes"], image_sizes[index])
            if self.training:
                pixel_boxes = jitter_boxes(pixel_boxes)
            boxes.append(pixel_boxes)
            targets.append(mask_targets(masks.to(pixel_boxes.device), pixel_boxes, resolution))
        if not targets:
            return None
        if not self.config.mask_loss_to_backbone:  # P2 is built from detached inputs (Glipv2FeaturePyramid)
            features = (features[0].detach(), features[1])
        logits = self.mask_head(features, boxes, image_sizes)
        return mask_loss(logits, torch.cat(targets))

    def candidate_masks(
        self,
        scores: torch.Tensor,
        pred_boxes: torch.Tensor,
        features: tuple[torch.Tensor, torch.Tensor],
        image_sizes: torch.Tensor,
        count: int | None = None,
        eligible: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks of the `count` (default `config.mask_candidates`) best anchors of each image.

        Args:
            scores: `(B, A)` anchor confidence (token or label probability x centerness).
            pred_boxes: `(B, A, 4)` normalised cxcywh boxes.
            features: the mask head's input ([`mask_inputs`]).
            image_sizes: `(B, 2)` unpadded input sizes.
            count: how many anchors per image get a mask.
            eligible: `(B, A)` bool; a chosen anchor outside it gets no mask (index -1, zero logits).

        Returns:
            `pred_masks` `(B, K, M, M)` logits and `indices` `(B, K)` anchor indices (-1 where an image has fewer).
        """
        batch, num_anchors = scores.shape
        count = min(count or self.config.mask_candidates, num_anchors)
        indices = scores.topk(count, dim=1).indices
        kept = None if eligible is None else eligible.gather(1, indices)
        boxes = [
            _pixel_boxes(
                pred_boxes[index, indices[index] if kept is None else indices[index][kept[index]]],
                image_sizes[index],
                clip=True,
            )
            for index in range(batch)
        ]
        if kept is None:
            logits = self.mask_head(features, boxes, image_sizes)
            return logits.view(batch, count, *logits.shape[-2:]), indices
        size = 2 * self.config.mask_roi_size
        masks = pred_boxes.new_zeros(batch, count, size, size)
        if kept.any():
            logits = self.mask_head(features, boxes, image_sizes)
            masks = masks.to(logits.dtype)
            masks[kept] = logits
        return masks, indices.masked_fill(~kept, -1)


def mask_inputs_of(outputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask head's input ([`mask_inputs`]) from a [`Glipv2ModelOutput`]."""
    return mask_inputs(outputs.vision_features, outputs.mask_features)


def _best_probability(logits: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
    """`(B, A)` best probability over the real tokens (or labels) of each anchor."""
    probabilities = logits.float().sigmoid()
    if token_mask is not None:
        probabilities = probabilities * token_mask[:, None, :].to(probabilities.dtype)
    return probabilities.amax(dim=-1)


def _anchor_confidence(
    logits: torch.Tensor, centerness: torch.Tensor, token_mask: torch.Tensor | None
) -> torch.Tensor:
    """`(B, A)` best probability over the real tokens (or labels) of each anchor, times its centerness."""
    return _best_probability(logits, token_mask) * centerness.float().sigmoid()


class Glipv2ForInstanceSegmentation(Glipv2MaskMixin, Glipv2ForGrounding):
    """Open-vocabulary instance segmentation and referring segmentation: [`Glipv2ForGrounding`] plus a mask per box.

    The prompt is class names (instance segmentation: `processor(images=..., text=[labels])`) or a referring
    expression (its best box's mask is the expression's mask). `labels` are the grounding labels with, per image,
    `masks` `(N, H, W)` (one per box, at the image's size in the model input; [`Glipv2Processor`] resizes them
    with the image); the loss adds `loss_mask`. At inference the output carries `pred_masks` for the mask candidates;
    `processor.post_process_instance_segmentation(outputs, ...)` turns them into instances.
    """

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.init_masks()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict[str, torch.Tensor]] | None = None,
        image_features: tuple[torch.Tensor, ...] | None = None,
        text_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
        mask_candidates: int | None = None,
        mask_threshold: float | None = None,
        **kwargs: Any,
    ) -> Glipv2SegmentationOutput | tuple:
        """As [`Glipv2ForGrounding.forward`]; `labels` may carry `masks` (see the class docstring).
        `mask_candidates`: how many of each image's most confident anchors get a mask at inference (default
        `config.mask_candidates`); a referring expression's best box needs a few only, and the mask head's cost
        grows with this number. `mask_threshold`: a candidate whose best token probability is at most this gets no
        mask (index -1); post-processing at that threshold keeps a label only when its mean token probability is
        above it, so it would drop that candidate anyway."""
        outputs = self.model(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_mask=pixel_mask,
            image_features=image_features,
            text_features=text_features,
        )
        predictions = self.head_forward(outputs)
        loss = loss_dict = pred_masks = anchor_indices = None
        if labels is not None:
            loss, loss_dict = self.grounding_loss(labels, predictions)
            masks = self.mask_training_loss(labels, mask_inputs_of(outputs), outputs.image_sizes)
            if masks is not None:
                loss_dict["loss_mask"] = masks
                loss = loss + self.loss_weights.get("loss_mask", MASK_LOSS_WEIGHT) * masks
        else:
            best = _best_probability(predictions.logits, outputs.text_attention_mask)
            pred_masks, anchor_indices = self.candidate_masks(
                best * predictions.centerness.float().sigmoid(),
                predictions.pred_boxes,
                mask_inputs_of(outputs),
                outputs.image_sizes,
                mask_candidates,
                eligible=best > mask_threshold if mask_threshold is not None else None,
            )
        if input_ids is not None:
            input_ids = input_ids.expand(predictions.logits.shape[0], -1)
        output = Glipv2SegmentationOutput(
            loss=loss,
            loss_dict=loss_dict,
            logits=predictions.logits,
            pred_boxes=predictions.pred_boxes,
            centerness=predictions.centerness,
            spatial_shapes=predictions.spatial_shapes,
            image_sizes=outputs.image_sizes,
            input_ids=input_ids,
            text_attention_mask=outputs.text_attention_mask,
            pred_masks=pred_masks,
            mask_anchor_indices=anchor_indices,
        )
        return return_output(output, return_dict)


class Glipv2ForSegmentation(Glipv2MaskMixin, Glipv2ForObjectDetection):
    """Closed-vocabulary instance segmentation: [`Glipv2ForObjectDetection`] (labels of `config.id2label`, no prompt)
    with a mask per detection, for transformers' stock `image-segmentation` pipeline.

    `labels` per image `{"boxes", "class_labels", "masks"}` (masks as in [`Glipv2ForInstanceSegmentation`]). With
    several prompt chunks the candidates are chosen over all chunks' anchors (each chunk's boxes and fused features
    give its masks), indexed `chunk * A + anchor`.
    """

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.init_masks()
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict[str, torch.Tensor]] | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Glipv2SegmentationOutput | tuple:
        """`pixel_values` `(B, 3, H, W)`; `labels` per image `{"boxes", "class_labels", "masks"}`."""
        chunks = self.run_chunks(pixel_values, pixel_mask, labels)
        output = Glipv2SegmentationOutput(**chunks.grounding_output())
        if labels is not None:
            parts = [
                self.mask_training_loss(labels, mask_inputs(features, chunks.mask_features), chunks.image_sizes)
                for features in chunks.features
            ]
            parts = [part for part in parts if part is not None]
            if parts:
                masks = sum(parts) / len(parts)
                output.loss_dict["loss_mask"] = masks
                output.loss = output.loss + self.loss_weights.get("loss_mask", MASK_LOSS_WEIGHT) * masks
        else:
            output.pred_masks, output.mask_anchor_indices = self._closed_vocabulary_masks(chunks)
        return return_output(output, return_dict)

    def _closed_vocabulary_masks(self, chunks: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates over every chunk's anchors, by the best probability of the chunk's labels x centerness."""
        num_anchors = chunks.boxes[0].shape[1]
        confidence = torch.cat(
            [
                _anchor_confidence(
                    chunks.label_logits, centerness, (chunks.label_chunks == chunk)[None].expand(len(centerness), -1)
                )
                for chunk, centerness in enumerate(chunks.centerness)
            ],
            dim=1,
        )
        count = min(self.config.mask_candidates, confidence.shape[1])
        indices = confidence.topk(count, dim=1).indices
        masks = confidence.new_zeros(
            confidence.shape[0], count, 2 * self.config.mask_roi_size, 2 * self.config.mask_roi_size
        )
        for chunk, (boxes, features) in enumerate(zip(chunks.boxes, chunks.features)):
            in_chunk = indices // num_anchors == chunk
            if not in_chunk.any():
                continue
            anchors = (indices % num_anchors).clamp(max=num_anchors - 1)
            per_image = [
                _pixel_boxes(boxes[index, anchors[index][in_chunk[index]]], chunks.image_sizes[index], clip=True)
                for index in range(len(indices))
            ]
            inputs = mask_inputs(features, chunks.mask_features)
            logits = self.mask_head(inputs, per_image, chunks.image_sizes).to(masks.dtype)
            masks[in_chunk] = logits
        return masks, indices


__all__ = [
    "Glipv2ForInstanceSegmentation",
    "Glipv2ForSegmentation",
    "Glipv2MaskMixin",
    "Glipv2SegmentationOutput",
    "mask_inputs_of",
]
