"""GLIPv2 pre-training: every head on the shared backbone and every loss (GLIPv2, arXiv 2206.05836, §3): grounding,
inter-image region-word contrast, masked LM, image-text contrast, VQA and captioning. One checkpoint of this class
serves every task class of the family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.utils import ModelOutput

from .configuration_glipv2 import Glipv2Config
from .fusion import flatten_levels
from .heads import build_head
from .loss import (
    clip_contrastive_loss,
    mlm_loss,
    region_word_contrastive_loss,
    shifted_lm_loss,
    vqa_soft_score_loss,
)
from .modeling_glipv2 import WORD_EMBEDDINGS, Glipv2Model, Glipv2PreTrainedModel, return_output
from .modeling_glipv2_captioning import causal_text_features, encode_image_memory
from .modeling_glipv2_detection import Glipv2GroundingMixin, Glipv2GroundingPredictions, targets_to_pixels
from .modeling_glipv2_segmentation import Glipv2MaskMixin, mask_inputs_of


@dataclass
class Glipv2PreTrainingOutput(ModelOutput):
    """Output of [`Glipv2ForPreTraining`].

    Args:
        loss (`torch.FloatTensor`, *optional*): `sum(model.loss_weights[name] * loss_dict[name])`.
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*): unweighted `loss_cls`, `loss_box`, `loss_centerness`,
            `loss_region_word`, `loss_mlm`, `loss_itc`, `loss_vqa`, `loss_caption` (those whose labels were given).
        logits (`torch.FloatTensor` of shape `(B, A, T)`): region-word alignment logits (grounding head).
        pred_boxes (`torch.FloatTensor` of shape `(B, A, 4)`): normalised cxcywh boxes.
        centerness (`torch.FloatTensor` of shape `(B, A)`): centerness logits.
        mlm_logits (`torch.FloatTensor` of shape `(B, T, vocab_size)`, *optional*): with `mlm_labels`.
        vqa_logits (`torch.FloatTensor` of shape `(B, num_answers)`): answer logits.
        image_embeds, text_embeds (`torch.FloatTensor` of shape `(B, projection_dim)`): dual-encoder embeddings.
        spatial_shapes (`torch.LongTensor` of shape `(L, 2)`), image_sizes (`torch.LongTensor` of shape `(B, 2)`).
        caption_logits (`torch.FloatTensor` of shape `(B, T, vocab_size)`, *optional*): with `caption_labels`.
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict[str, torch.FloatTensor] | None = None
    logits: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    centerness: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    vqa_logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    spatial_shapes: torch.LongTensor | None = None
    image_sizes: torch.LongTensor | None = None
    caption_logits: torch.FloatTensor | None = None


def _box_label_ids(label: dict[str, torch.Tensor], unique_offset: int) -> torch.Tensor:
    """Label of each box: its `class_labels`, else an id unique to (process, image, box) (positives stay in-image)."""
    num_boxes = label["boxes"].shape[0]
    if "class_labels" in label:
        return label["class_labels"].long().reshape(num_boxes)
    return -1 - (unique_offset + torch.arange(num_boxes, device=label["boxes"].device))


def region_word_inputs(
    matched: torch.Tensor,
    region_features: torch.Tensor,
    text_features: torch.Tensor,
    text_attention_mask: torch.Tensor,
    labels: list[dict[str, torch.Tensor]],
    rank: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Regions and words of the inter-image region-word loss, with their labels.

    Args:
        matched: `(B, A)` ATSS-matched box index per anchor (-1 background).
        region_features: `(B, A, C)` pre-fusion anchor features; text_features `(B, T, D)` pre-fusion tokens.
        labels: the grounding labels; a box's label is its `class_labels` entry when given (detection data),
            otherwise unique to the box (grounding data: its own phrase is then its only positive).
    Returns:
        `(regions (N, C), region_labels (N,), words (M, D), word_labels (M,))`: regions are the positive anchors
        (label of their matched box); words are the real tokens of any box's phrase, labelled by the first box whose
        positive-map row covers them.
    """
    regions, region_labels, words, word_labels = [], [], [], []
    for index, label in enumerate(labels):
        box_labels = _box_label_ids(label, (rank * 1024 + index) * 1024).to(matched.device)
        positive = matched[index] >= 0
        regions.append(region_features[index][positive])
        region_labels.append(box_labels[matched[index][positive]])
        token_map = (label["positive_map"].to(matched.device) > 0) & text_attention_mask[index].bool()
        is_word = token_map.any(dim=0)
        first_box = token_map.float().argmax(dim=0)
        words.append(text_features[index][is_word])
        word_labels.append(box_labels[first_box[is_word]] if box_labels.numel() else first_box[is_word])
    return torch.cat(regions), torch.cat(region_labels), torch.cat(words), torch.cat(word_labels)


class Glipv2ForPreTraining(Glipv2MaskMixin, Glipv2GroundingMixin, Glipv2PreTrainedModel):
    """Every head on the shared backbone and GLIPv2's pre-training losses, returned by name:

    - `loss_cls`, `loss_box`, `loss_centerness`: the grounding losses of [`Glipv2ForGrounding`] (same code);
    - `loss_region_word`: inter-image region-word contrast on pre-fusion features ([`region_word_contrastive_loss`],
      gathered across processes);
    - `loss_mlm`: masked-LM on the fused text (`mlm_labels`, -100 ignored);
    - `loss_itc`: image-text contrast of the pooled pre-fusion features (`return_itc_loss=True`, gathered);
    - `loss_vqa`: the VQA soft-score loss (`vqa_labels`);
    - `loss_mask`: the mask head's loss (with `config.use_mask_head`, for labels that carry `masks`).

    `loss = sum(model.loss_weights[name] * loss_dict[name])`; weights are set by the training side (defaults: the
    official grounding weights, 1 for the rest), never by the config. The captioning objective runs through
    [`Glipv2ForConditionalGeneration`] (a different text mask), which shares every weight it uses with this class.
    """

    _tied_weights_keys = {"caption_head.decoder.weight": WORD_EMBEDDINGS, "mlm_head.decoder.weight": WORD_EMBEDDINGS}

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.model = Glipv2Model(config)
        self.grounding_head = build_head("grounding_head", config)
        self.init_grounding()
        self.vqa_head = build_head("vqa_head", config)
        self.caption_head = build_head("caption_head", config)
        self.mlm_head = build_head("mlm_head", config)
        self.contrastive_head = build_head("contrastive_head", config)
        self.loss_weights.update({"loss_region_word": 1.0, "loss_mlm": 1.0, "loss_itc": 1.0, "loss_vqa": 1.0})
        if config.use_mask_head:
            self.init_masks()
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.mlm_head.decoder

    def _caption_forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        caption_labels: torch.Tensor,
        return_dict: bool | None,
    ) -> Glipv2PreTrainingOutput | tuple:
        """The captioning objective on the shared weights (see [`Glipv2ForConditionalGeneration`])."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        memory = encode_image_memory(self.model, pixel_values)
        caption_logits = self.caption_head(causal_text_features(self.model, memory, input_ids, attention_mask))
        losses = {"loss_caption": shifted_lm_loss(caption_logits, caption_labels)}
        loss = sum(self.loss_weights.get(name, 1.0) * value for name, value in losses.items())
        return return_output(
            Glipv2PreTrainingOutput(loss=loss, loss_dict=losses, caption_logits=caption_logits), return_dict
        )

    def _region_word_loss(
        self, labels: list[dict[str, torch.Tensor]], outputs: Any, predictions: Glipv2GroundingPredictions
    ) -> torch.Tensor:
        targets = targets_to_pixels(labels, outputs.image_sizes)
        shapes = predictions.spatial_shapes
        per_level = (shapes[:, 0] * shapes[:, 1]).tolist()
        num_tokens = outputs.text_attention_mask.shape[1]
        anchors = predictions.anchors.float()
        matched, _ = self.loss_function_grounding.prepare_targets(anchors, per_level, targets, num_tokens)
        flat, _ = flatten_levels(outputs.pre_fusion_vision_features)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        regions, region_labels, words, word_labels = region_word_inputs(
            matched, flat, outputs.pre_fusion_text_features, outputs.text_attention_mask, labels, rank
        )
        head = self.contrastive_head
        return region_word_contrastive_loss(
            head.embed_regions(regions), region_labels, head.embed_words(words), word_labels, head.scale()
        )

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict[str, torch.Tensor]] | None = None,
        mlm_labels: torch.Tensor | None = None,
        vqa_labels: torch.Tensor | None = None,
        caption_labels: torch.Tensor | None = None,
        return_itc_loss: bool = False,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Glipv2PreTrainingOutput | tuple:
        """
        Args:
            caption_labels: `(B, T)` caption ids with -100 on padding: `input_ids` are then a caption and only the
                captioning objective runs, under its seq2seq mask (as [`Glipv2ForConditionalGeneration`], same
                weights), so joint training needs one model.
            pixel_values, pixel_mask, input_ids (masked for MLM), attention_mask: from [`Glipv2Processor`].
            labels: grounding labels per image `{"boxes" (N, 4) normalised cxcywh, "positive_map" (N, T),
                optional "class_labels" (N,)}` (class labels define region-word positives across images).
            mlm_labels: `(B, T)` original ids at masked positions, -100 elsewhere.
            vqa_labels: `(B, num_answers)` soft scores.
            return_itc_loss: add the image-text contrastive loss (image i and text i are the positive pair).
        """
        if caption_labels is not None:
            return self._caption_forward(pixel_values, input_ids, attention_mask, caption_labels, return_dict)
        outputs = self.model(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_mask=pixel_mask,
        )
        predictions = self.head_forward(outputs)
        losses: dict[str, torch.Tensor] = {}
        if labels is not None:
            losses.update(self.grounding_loss(labels, predictions)[1])
            losses["loss_region_word"] = self._region_word_loss(labels, outputs, predictions)
            if self.config.use_mask_head:
                masks = self.mask_training_loss(labels, mask_inputs_of(outputs), outputs.image_sizes)
                if masks is not None:
                    losses["loss_mask"] = masks
        mlm_logits = self.mlm_head(outputs.text_features) if mlm_labels is not None else None
        if mlm_labels is not None:
            losses["loss_mlm"] = mlm_loss(mlm_logits, mlm_labels)
        vqa_logits = self.vqa_head(
            outputs.vision_features, outputs.text_features, outputs.text_attention_mask, pixel_mask
        )
        if vqa_labels is not None:
            losses["loss_vqa"] = vqa_soft_score_loss(vqa_logits, vqa_labels)
        image_embeds = self.contrastive_head.embed_image(outputs.pre_fusion_vision_features, pixel_mask)
        text_embeds = self.contrastive_head.embed_text(outputs.pre_fusion_text_features, outputs.text_attention_mask)
        if return_itc_loss:
            losses["loss_itc"] = clip_contrastive_loss(image_embeds, text_embeds, self.contrastive_head.scale())
        loss = sum(self.loss_weights.get(name, 1.0) * value for name, value in losses.items()) if losses else None
        output = Glipv2PreTrainingOutput(
            loss=loss,
            loss_dict=losses or None,
            logits=predictions.logits,
            pred_boxes=predictions.pred_boxes,
            centerness=predictions.centerness,
            mlm_logits=mlm_logits,
            vqa_logits=vqa_logits,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            spatial_shapes=predictions.spatial_shapes,
            image_sizes=outputs.image_sizes,
        )
        return return_output(output, return_dict)


__all__ = ["Glipv2ForPreTraining", "Glipv2PreTrainingOutput", "region_word_inputs"]
