"""Detection and phrase grounding: GLIP's region-word alignment head on the shared backbone.

Detection is grounding: class names become a prompt and every anchor scores every token. [`Glipv2ForGrounding`]
takes any prompt; [`Glipv2ForObjectDetection`] keeps a closed vocabulary (`config.id2label`) whose prompt is
tokenized once, stored in the config, and whose text features are encoded once per eval session.
[`Glipv2GroundingMixin`] holds the grounding outputs and losses, shared with the all-heads pre-training class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.utils import ModelOutput

from .box_ops import (
    Glipv2BoxCoder,
    continuous_to_inclusive,
    cxcywh_to_xyxy,
    generate_anchors,
    inclusive_to_continuous,
    xyxy_to_normalized_cxcywh,
)
from .configuration_glipv2 import Glipv2Config
from .fusion import spatial_shapes_tensor
from .heads import PADDED_TOKEN_LOGIT, build_head
from .loss import DEFAULT_GROUNDING_LOSS_WEIGHTS, Glipv2GroundingLoss
from .modeling_glipv2 import Glipv2Model, Glipv2ModelOutput, Glipv2PreTrainedModel, return_output


@dataclass
class Glipv2GroundingOutput(ModelOutput):
    """Output of [`Glipv2ForGrounding`] and [`Glipv2ForObjectDetection`].

    Args:
        loss (`torch.FloatTensor`, *optional*): weighted sum of the grounding losses (when `labels` are given).
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*): `loss_cls`, `loss_box`, `loss_centerness`, unweighted.
        logits (`torch.FloatTensor` of shape `(B, A, T)`): region-word alignment logits, A = anchors over all levels.
        pred_boxes (`torch.FloatTensor` of shape `(B, A, 4)`): boxes as normalised `(cx, cy, w, h)` relative to the
            unpadded input image (Grounding DINO's convention).
        centerness (`torch.FloatTensor` of shape `(B, A)`): centerness logits.
        spatial_shapes (`torch.LongTensor` of shape `(L, 2)`): `(H_l, W_l)` per level; A = sum of H_l * W_l.
        image_sizes (`torch.LongTensor` of shape `(B, 2)`): unpadded `(height, width)` of each input image.
        input_ids (`torch.LongTensor` of shape `(B, T)`): the prompt tokens (used by post-processing).
        text_attention_mask (`torch.LongTensor` of shape `(B, T)`): 1 for real tokens.
        label_chunks (`torch.LongTensor` of shape `(num_labels,)`, *optional*): [`Glipv2ForObjectDetection`] only:
            the prompt chunk of each label (`logits` are then label logits, see that class).
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict[str, torch.FloatTensor] | None = None
    logits: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    centerness: torch.FloatTensor | None = None
    spatial_shapes: torch.LongTensor | None = None
    image_sizes: torch.LongTensor | None = None
    input_ids: torch.LongTensor | None = None
    text_attention_mask: torch.LongTensor | None = None
    label_chunks: torch.LongTensor | None = None


@dataclass
class Glipv2GroundingPredictions:
    """What the grounding head predicts on fused features, with what the loss needs ([`Glipv2GroundingMixin`]).

    Args:
        logits: `(B, A, T)` region-word logits. pred_boxes: `(B, A, 4)` normalised continuous cxcywh.
        centerness: `(B, A)` logits. box_regression: `(B, A, 4)` deltas. anchors: `(A, 4)` inclusive-pixel xyxy.
        spatial_shapes: `(L, 2)` level sizes. text_attention_mask: `(B, T)`. image_sizes: `(B, 2)`.
    """

    logits: torch.Tensor
    pred_boxes: torch.Tensor
    centerness: torch.Tensor
    box_regression: torch.Tensor
    anchors: torch.Tensor
    spatial_shapes: torch.Tensor
    text_attention_mask: torch.Tensor
    image_sizes: torch.Tensor


def targets_to_pixels(
    labels: list[dict[str, torch.Tensor]], image_sizes: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    """Normalised continuous cxcywh targets -> inclusive-pixel xyxy boxes in the model's input frame."""
    targets = []
    for index, label in enumerate(labels):
        if "boxes" not in label or "positive_map" not in label:
            raise ValueError(
                f"labels[{index}] must hold 'boxes' (N, 4) normalised cxcywh and 'positive_map' (N, T); "
                f"got keys {sorted(label)} (Glipv2Processor(..., grounding_targets=...) builds them)."
            )
        height, width = image_sizes[index].tolist()
        boxes = cxcywh_to_xyxy(label["boxes"].float())
        scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
        targets.append({"boxes": continuous_to_inclusive(boxes * scale), "positive_map": label["positive_map"]})
    return targets


class Glipv2GroundingMixin:
    """Grounding outputs (region-word logits, decoded boxes, centerness) and the ATSS losses on fused features.

    For classes holding a `grounding_head`; call [`init_grounding`] in `__init__`. Loss weights are set from the
    training side (`model.loss_weights`, by loss name), defaulting to the official ones; never by the config.
    """

    config: Glipv2Config

    def init_grounding(self) -> None:
        """The box coder, the (parameter-free) loss module and the default loss weights."""
        self.box_coder = Glipv2BoxCoder(tuple(self.config.box_coder_weights))
        self.loss_function_grounding = Glipv2GroundingLoss(box_coder=self.box_coder)
        self.loss_weights: dict[str, float] = dict(DEFAULT_GROUNDING_LOSS_WEIGHTS)

    def anchors(
        self, spatial_shapes: torch.Tensor | list[tuple[int, int]], device: torch.device | None = None
    ) -> torch.Tensor:
        """`(A, 4)` anchors (inclusive-pixel xyxy) for the given level sizes."""
        return generate_anchors(spatial_shapes, self.config.anchor_strides, self.config.anchor_scale, device=device)

    def head_forward(self, outputs: Glipv2ModelOutput) -> Glipv2GroundingPredictions:
        """Grounding head + box decoding on the fused features of [`Glipv2Model`]."""
        vision_features, text_mask = outputs.vision_features, outputs.text_attention_mask
        logits, box_regression, centerness = self.grounding_head(vision_features, outputs.text_features, text_mask)
        if outputs.vision_masks is not None:  # anchors beyond an image (a batch of several sizes) find nothing
            outside = ~torch.cat([mask.flatten(1) for mask in outputs.vision_masks], dim=1)
            logits = logits.masked_fill(outside[..., None], PADDED_TOKEN_LOGIT)
        shapes = [tuple(f.shape[-2:]) for f in vision_features]
        spatial_shapes = spatial_shapes_tensor(vision_features, logits.device)
        # From the Python shapes, not the tensor: no device-to-host read (a graph break under torch.compile).
        anchors = self.anchors(shapes, device=logits.device).to(box_regression.dtype)
        decoded = inclusive_to_continuous(self.box_coder.decode(box_regression, anchors))
        pred_boxes = xyxy_to_normalized_cxcywh(decoded, outputs.image_sizes)
        return Glipv2GroundingPredictions(
            logits, pred_boxes, centerness, box_regression, anchors, spatial_shapes, text_mask, outputs.image_sizes
        )

    def grounding_loss(
        self, labels: list[dict[str, torch.Tensor]], predictions: Glipv2GroundingPredictions
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Weighted total and the named unweighted parts of the ATSS grounding loss. Labels with `masks` need a
        model with a mask head (they would otherwise be ignored)."""
        if len(labels) != predictions.logits.shape[0]:
            raise ValueError(f"Got {len(labels)} label dicts for a batch of {predictions.logits.shape[0]} images.")
        if getattr(self, "mask_head", None) is None and any("masks" in label for label in labels):
            raise ValueError(
                f"The labels carry masks but this {type(self).__name__} has no mask head: train masks with "
                "Glipv2ForInstanceSegmentation or a model whose config has use_mask_head=True."
            )
        targets = targets_to_pixels(labels, predictions.image_sizes)
        shapes = predictions.spatial_shapes
        parts = self.loss_function_grounding(
            predictions.logits,
            predictions.box_regression,
            predictions.centerness,
            predictions.anchors,
            (shapes[:, 0] * shapes[:, 1]).tolist(),
            predictions.text_attention_mask,
            targets,
        )
        total = sum(self.loss_weights.get(name, 1.0) * value for name, value in parts.items())
        return total, parts


class Glipv2ForGrounding(Glipv2GroundingMixin, Glipv2PreTrainedModel):
    """GLIP detection / phrase grounding with an open vocabulary: boxes aligned to the words of any prompt.

    Loss weights are set from the training side (`model.loss_weights`), defaulting to the official ones.
    """

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.model = Glipv2Model(config)
        self.grounding_head = build_head("grounding_head", config)
        self.init_grounding()
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
        **kwargs: Any,
    ) -> Glipv2GroundingOutput | tuple:
        """
        Args:
            pixel_values, pixel_mask, input_ids, attention_mask, token_type_ids: from [`Glipv2Processor`].
            labels: per image `{"boxes": (N, 4) normalised cxcywh, "positive_map": (N, T) 0/1}`.
            image_features, text_features: precomputed `encode_image` / `encode_text` outputs (reuse across prompts).
        """
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
        loss, loss_dict = self.grounding_loss(labels, predictions) if labels is not None else (None, None)
        if input_ids is not None:
            input_ids = input_ids.expand(predictions.logits.shape[0], -1)
        output = Glipv2GroundingOutput(
            loss=loss,
            loss_dict=loss_dict,
            logits=predictions.logits,
            pred_boxes=predictions.pred_boxes,
            centerness=predictions.centerness,
            spatial_shapes=predictions.spatial_shapes,
            image_sizes=outputs.image_sizes,
            input_ids=input_ids,
            text_attention_mask=outputs.text_attention_mask,
        )
        return return_output(output, return_dict)


def _label_logits(token_logits: torch.Tensor, token_weights: torch.Tensor) -> torch.Tensor:
    """`(B, A, T)` token logits -> `(B, A, L)` label logits: logit of the mean of each label's token sigmoids.

    Official GLIP scores a class by the mean sigmoid of its tokens (`convert_grounding_to_od_logits`, MEAN); the
    logit of that mean lets closed-vocabulary outputs go through the same post-processing with one "token" a label.
    """
    probabilities = torch.matmul(token_logits.float().sigmoid(), token_weights.T)
    return torch.logit(probabilities.clamp(1e-12, 1 - 1e-7))


class Glipv2ForObjectDetection(Glipv2ForGrounding):
    """Closed-vocabulary detection: the labels of `config.id2label` form a fixed prompt (split in chunks of at most
    `max_text_length` tokens), tokenized once by [`set_vocabulary`] and stored in `config.detection_prompts`.
    The image backbone runs once per image; each chunk's text features are encoded once per eval session.

    Output (`Glipv2GroundingOutput`): `logits` `(B, A, num_labels)` label logits; with one chunk `pred_boxes`
    `(B, A, 4)` and `centerness` `(B, A)`; with K > 1 chunks `(B, K, A, 4)` and `(B, K, A)` plus `label_chunks`
    `(num_labels,)` giving each label's chunk. Works in the stock `object-detection` pipeline with no prompt.
    """

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self._text_cache: dict[str, torch.Tensor] | None = None

    def set_vocabulary(self, processor: Any, labels: list[str]) -> None:
        """Tokenizes `labels` into prompt chunks with `processor` and stores them (and `id2label`) in the config."""
        prompts = processor.build_prompts(labels, max_length=self.config.max_text_length)
        chunks = []
        for prompt in prompts:
            encoding = processor.tokenizer(prompt.text)
            positive_map = processor.positive_map(encoding, prompt.label_spans, text=prompt.text)
            chunks.append(
                {
                    "input_ids": list(encoding["input_ids"]),
                    "label_ids": list(prompt.label_ids),
                    "label_tokens": [row.nonzero().flatten().tolist() for row in positive_map],
                }
            )
        self.config.id2label = dict(enumerate(labels))
        self.config.label2id = {label: index for index, label in enumerate(labels)}
        self.config.detection_prompts = chunks
        self._text_cache = None

    def train(self, mode: bool = True) -> Glipv2ForObjectDetection:
        self._text_cache = None  # text features change while training
        return super().train(mode)

    def _prompt_tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        chunks = getattr(self.config, "detection_prompts", None)
        if not chunks:
            raise ValueError(
                "This Glipv2ForObjectDetection has no vocabulary: call model.set_vocabulary(processor, labels) "
                "(it stores the tokenized prompt in the config)."
            )
        length = max(len(chunk["input_ids"]) for chunk in chunks)
        num_labels = len(self.config.id2label)
        input_ids = torch.zeros(len(chunks), length, dtype=torch.long, device=device)
        attention_mask = torch.zeros_like(input_ids)
        token_weights = torch.zeros(len(chunks), num_labels, length, device=device)
        label_chunks = torch.zeros(num_labels, dtype=torch.long, device=device)
        for index, chunk in enumerate(chunks):
            input_ids[index, : len(chunk["input_ids"])] = torch.tensor(chunk["input_ids"], device=device)
            attention_mask[index, : len(chunk["input_ids"])] = 1
            for label_id, tokens in zip(chunk["label_ids"], chunk["label_tokens"]):
                token_weights[index, label_id, tokens] = 1.0 / len(tokens)
                label_chunks[label_id] = index
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_weights": token_weights,
            "label_chunks": label_chunks,
        }

    def _encoded_prompts(self, device: torch.device) -> dict[str, torch.Tensor]:
        if self._text_cache is not None and not self.training:
            return self._text_cache
        prompts = self._prompt_tensors(device)
        prompts["text_features"] = self.model.encode_text(prompts["input_ids"], prompts["attention_mask"])
        if not self.training:
            self._text_cache = prompts
        return prompts

    def run_chunks(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict[str, torch.Tensor]] | None = None,
    ) -> Glipv2ChunkedPredictions:
        """The image backbone once, then the fusion and the grounding head once per prompt chunk (with each chunk's
        grounding loss when `labels` are given)."""
        prompts = self._encoded_prompts(pixel_values.device)
        image_features = self.model.encode_image(pixel_values, pixel_mask)
        batch, num_chunks = pixel_values.shape[0], prompts["input_ids"].shape[0]
        run = Glipv2ChunkedPredictions(label_chunks=prompts["label_chunks"])
        logits = []
        for chunk in range(num_chunks):
            outputs = self.model(
                pixel_values=pixel_values,
                pixel_mask=pixel_mask,
                image_features=image_features,
                text_features=prompts["text_features"][chunk : chunk + 1].expand(batch, -1, -1),
                attention_mask=prompts["attention_mask"][chunk : chunk + 1].expand(batch, -1),
            )
            predictions = self.head_forward(outputs)
            weights = prompts["token_weights"][chunk]
            in_chunk = prompts["label_chunks"] == chunk
            chunk_logits = _label_logits(predictions.logits, weights)
            logits.append(torch.where(in_chunk, chunk_logits, torch.finfo(torch.float32).min))
            run.boxes.append(predictions.pred_boxes)
            run.centerness.append(predictions.centerness)
            run.features.append(outputs.vision_features)
            run.mask_features = outputs.mask_features
            if labels is not None:
                chunk_labels = [
                    {**label, "positive_map": (weights[label["class_labels"]] > 0).float()} for label in labels
                ]
                run.loss_parts.append(self.grounding_loss(chunk_labels, predictions))
        run.label_logits = torch.stack(logits).amax(dim=0)  # each label is real in exactly one chunk
        run.spatial_shapes, run.image_sizes = predictions.spatial_shapes, outputs.image_sizes
        return run

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict[str, torch.Tensor]] | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Glipv2GroundingOutput | tuple:
        """`pixel_values` `(B, 3, H, W)`; `labels` per image `{"boxes", "class_labels"}` (ids of `id2label`)."""
        run = self.run_chunks(pixel_values, pixel_mask, labels)
        return return_output(Glipv2GroundingOutput(**run.grounding_output()), return_dict)


@dataclass
class Glipv2ChunkedPredictions:
    """What [`Glipv2ForObjectDetection.run_chunks`] computes: per prompt chunk the decoded boxes, centerness, fused
    features and grounding loss, and the label logits over all chunks."""

    label_chunks: torch.Tensor
    label_logits: torch.Tensor | None = None
    boxes: list[torch.Tensor] = field(default_factory=list)
    centerness: list[torch.Tensor] = field(default_factory=list)
    features: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    mask_features: torch.Tensor | None = None  # P2 (`config.use_mask_head`): the same for every chunk
    loss_parts: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = field(default_factory=list)
    spatial_shapes: torch.Tensor | None = None
    image_sizes: torch.Tensor | None = None

    def grounding_output(self) -> dict[str, Any]:
        """The fields of a [`Glipv2GroundingOutput`]: losses averaged over chunks; with one chunk `pred_boxes`
        `(B, A, 4)` and `centerness` `(B, A)`, with K > 1 `(B, K, A, 4)` and `(B, K, A)`."""
        loss = loss_dict = None
        if self.loss_parts:
            loss = sum(part[0] for part in self.loss_parts) / len(self.loss_parts)
            names = self.loss_parts[0][1]
            loss_dict = {name: sum(part[1][name] for part in self.loss_parts) / len(self.loss_parts) for name in names}
        single = len(self.boxes) == 1
        return {
            "loss": loss,
            "loss_dict": loss_dict,
            "logits": self.label_logits,
            "pred_boxes": self.boxes[0] if single else torch.stack(self.boxes, dim=1),
            "centerness": self.centerness[0] if single else torch.stack(self.centerness, dim=1),
            "spatial_shapes": self.spatial_shapes,
            "image_sizes": self.image_sizes,
            "label_chunks": self.label_chunks,
        }


__all__ = [
    "Glipv2ChunkedPredictions",
    "Glipv2ForGrounding",
    "Glipv2ForObjectDetection",
    "Glipv2GroundingMixin",
    "Glipv2GroundingOutput",
    "Glipv2GroundingPredictions",
    "targets_to_pixels",
]
