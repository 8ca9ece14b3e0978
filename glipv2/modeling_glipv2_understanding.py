"""Understanding tasks on the shared GLIPv2 backbone: the heads, VQA, CLIP-style zero-shot classification and the
pre-training model that holds every head (GLIPv2, arXiv 2206.05836, §3; DESIGN §1/§2). Captioning, which runs the
text tower under its own mask, is in `modeling_glipv2_captioning.py`.

Heads keep the same module names in every class (`vqa_head`, `caption_head`, `mlm_head`, `contrastive_head`, and
`grounding_head` from [`Glipv2ForGrounding`]), so a [`Glipv2ForPreTraining`] checkpoint loads into each single-task
class with identical outputs for that task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from .configuration_glipv2 import Glipv2Config
from .contrastive import clip_contrastive_loss, region_word_contrastive_loss, resolve_templates
from .fusion import flatten_levels
from .modeling_glipv2 import Glipv2Model, Glipv2PreTrainedModel
from .modeling_glipv2_detection import Glipv2ForGrounding, _targets_to_pixels

# CLIP (arXiv 2103.00020, §2.5): the temperature is clipped so that the logits are scaled by at most 100.
LOGIT_SCALE_MAX = math.log(100.0)
_WORD_EMBEDDINGS = "model.text_model.embeddings.word_embeddings.weight"
_HEADS = ("grounding_head", "vqa_head", "caption_head", "mlm_head", "contrastive_head")


def _other_heads(*own: str) -> list[str]:
    """`_keys_to_ignore_on_load_unexpected` patterns: the heads a single-task class does not hold."""
    return [rf"^{head}\." for head in _HEADS if head not in own]


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


# ------------------------------------------------------------------------------------------------------ heads
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


def _vqa_head(config: Glipv2Config) -> Glipv2VqaHead:
    text = config.text_config
    hidden = config.vqa_hidden_size or 2 * (config.hidden_size + text.hidden_size)
    return Glipv2VqaHead(config.hidden_size, text.hidden_size, hidden, len(config.id2label), text.layer_norm_eps)


def _lm_head(config: Glipv2Config) -> Glipv2LMHead:
    text = config.text_config
    return Glipv2LMHead(text.hidden_size, text.vocab_size, text.hidden_act, text.layer_norm_eps)


def _contrastive_head(config: Glipv2Config) -> Glipv2ContrastiveHead:
    return Glipv2ContrastiveHead(
        config.hidden_size, config.text_config.hidden_size, config.projection_dim, config.logit_scale_init
    )


class Glipv2UnderstandingPreTrainedModel(Glipv2PreTrainedModel):
    """Adds the initialisation of the understanding heads to [`Glipv2PreTrainedModel`]."""

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, Glipv2VqaHead):
            for linear in (module.dense, module.classifier):
                init.normal_(linear.weight, std=std)
                init.zeros_(linear.bias)
            init.ones_(module.layer_norm.weight)
            init.zeros_(module.layer_norm.bias)
        elif isinstance(module, Glipv2LMHead):  # BertLMPredictionHead: decoder is tied, bias 0
            init.normal_(module.dense.weight, std=std)
            init.zeros_(module.dense.bias)
            init.zeros_(module.bias)
        elif isinstance(module, Glipv2ContrastiveHead):  # CLIP: projections N(0, width^-0.5)
            init.normal_(module.visual_projection.weight, std=module.visual_projection.in_features**-0.5)
            init.normal_(module.text_projection.weight, std=module.text_projection.in_features**-0.5)
            init.constant_(module.logit_scale, self.config.logit_scale_init)


# ------------------------------------------------------------------------------------------------------ losses
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


def vqa_targets(label_ids: list[list[int]], label_scores: list[list[float]], num_answers: int) -> torch.Tensor:
    """Dense `(B, num_answers)` soft-score targets from the loader's per-question `label_ids` / `label_scores`."""
    targets = torch.zeros(len(label_ids), num_answers)
    for row, (ids, scores) in enumerate(zip(label_ids, label_scores)):
        for index, score in zip(ids, scores):
            if not 0 <= index < num_answers:
                raise ValueError(f"Answer id {index} of question {row} is outside the vocabulary of {num_answers}.")
            targets[row, index] = score
    return targets


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


# ------------------------------------------------------------------------------------------------------ outputs
@dataclass
class Glipv2QuestionAnsweringOutput(ModelOutput):
    """Output of [`Glipv2ForQuestionAnswering`].

    Args:
        loss (`torch.FloatTensor`, *optional*): VQAv2 soft-score BCE ([`vqa_soft_score_loss`]), with `labels`.
        logits (`torch.FloatTensor` of shape `(B, num_answers)`): answer logits (sigmoid gives the answer scores).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


@dataclass
class Glipv2ZeroShotImageClassificationOutput(ModelOutput):
    """Output of [`Glipv2ForZeroShotImageClassification`] (the `CLIPOutput` contract).

    Args:
        loss (`torch.FloatTensor`, *optional*): symmetric InfoNCE ([`clip_contrastive_loss`]), with `return_loss`.
        logits_per_image (`torch.FloatTensor` of shape `(B_images, B_texts)`): scaled cosine similarities.
        logits_per_text (`torch.FloatTensor` of shape `(B_texts, B_images)`): the transpose.
        text_embeds (`torch.FloatTensor` of shape `(B_texts, projection_dim)`): L2-normalised text embeddings.
        image_embeds (`torch.FloatTensor` of shape `(B_images, projection_dim)`): L2-normalised image embeddings.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


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


def _return(output: ModelOutput, return_dict: bool | None) -> ModelOutput | tuple:
    return output if return_dict is not False else output.to_tuple()


# ------------------------------------------------------------------------------------------------------ VQA
class Glipv2ForQuestionAnswering(Glipv2UnderstandingPreTrainedModel):
    """VQA as answer-vocabulary classification on the fused features (GLIPv2 §3.3; answers in `config.id2label`).

    `labels`: `(B, num_answers)` float soft scores (VQAv2: each answer's official accuracy, [`vqa_targets`]).
    """

    _keys_to_ignore_on_load_unexpected = _other_heads("vqa_head")

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.model = Glipv2Model(config)
        self.vqa_head = _vqa_head(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Glipv2QuestionAnsweringOutput | tuple:
        """
        Args:
            pixel_values `(B, 3, H, W)`, pixel_mask `(B, H, W)`, input_ids / attention_mask `(B, T)` (the question).
            labels: `(B, num_answers)` soft scores.
        """
        outputs = self.model(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            pixel_mask=pixel_mask,
        )
        logits = self.vqa_head(outputs.vision_features, outputs.text_features, outputs.text_attention_mask, pixel_mask)
        loss = vqa_soft_score_loss(logits, labels) if labels is not None else None
        return _return(Glipv2QuestionAnsweringOutput(loss=loss, logits=logits), return_dict)


# ------------------------------------------------------------------------------------------------------ zero-shot
class Glipv2ForZeroShotImageClassification(Glipv2UnderstandingPreTrainedModel):
    """CLIP-style dual encoder on the PRE-fusion features (no fusion runs): images and texts are embedded
    independently, so N images x K prompts cost N + K encoder passes. Works in the stock
    `zero-shot-image-classification` pipeline; prompt ensembles via [`build_zero_shot_classifier`].
    """

    _keys_to_ignore_on_load_unexpected = _other_heads("contrastive_head")

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.model = Glipv2Model(config)
        self.contrastive_head = _contrastive_head(config)
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, 3, H, W)` -> `(B, projection_dim)` L2-normalised image embeddings."""
        return self.contrastive_head.embed_image(self.model.encode_image(pixel_values), pixel_mask)

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """`(K, T)` -> `(K, projection_dim)` L2-normalised text embeddings."""
        return self.contrastive_head.embed_text(self.model.encode_text(input_ids, attention_mask), attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        return_loss: bool = False,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> Glipv2ZeroShotImageClassificationOutput | tuple:
        """Images `(B_i, 3, H, W)` and texts `(B_t, T)`; `return_loss` needs B_i == B_t (pairs i <-> i)."""
        if input_ids is None or pixel_values is None:
            raise ValueError("Glipv2ForZeroShotImageClassification needs both pixel_values and input_ids.")
        if input_ids.shape[0] == 0:
            raise ValueError("No candidate texts: give at least one label / prompt.")
        image_embeds = self.get_image_features(pixel_values, pixel_mask)
        text_embeds = self.get_text_features(input_ids, attention_mask)
        scale = self.contrastive_head.scale()
        logits_per_text = scale * text_embeds @ image_embeds.T
        loss = clip_contrastive_loss(image_embeds, text_embeds, scale) if return_loss else None
        output = Glipv2ZeroShotImageClassificationOutput(
            loss=loss,
            logits_per_image=logits_per_text.T,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
        )
        return _return(output, return_dict)


@torch.no_grad()
def build_zero_shot_classifier(
    model: Glipv2ForZeroShotImageClassification,
    processor: Any,
    class_names: list[str],
    templates: str | list[str] = "imagenet",
    batch_size: int = 256,
) -> torch.Tensor:
    """Prompt-ensemble classifier (CLIP §3.1.4): per class, the mean of its L2-normalised prompt embeddings over
    `templates` (a named set, see `contrastive.TEMPLATE_SETS`, or a list of `"...{}..."`), renormalised.

    Returns:
        `(num_classes, projection_dim)` unit-norm class weights.
    """
    if not class_names:
        raise ValueError("class_names is empty: give at least one class to classify into.")
    templates = resolve_templates(templates)
    prompts = [template.format(name) for name in class_names for template in templates]
    embeds = []
    for start in range(0, len(prompts), batch_size):
        tokens = processor.tokenizer(prompts[start : start + batch_size], padding=True, return_tensors="pt")
        tokens = tokens.to(model.device)
        embeds.append(model.get_text_features(tokens["input_ids"], tokens["attention_mask"]))
    per_class = torch.cat(embeds).view(len(class_names), len(templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1)


@torch.no_grad()
def classify(
    model: Glipv2ForZeroShotImageClassification,
    processor: Any,
    images: Any,
    class_names: list[str],
    templates: str | list[str] = "imagenet",
    classifier: torch.Tensor | None = None,
    top_k: int | None = None,
) -> list[list[dict[str, Any]]]:
    """Zero-shot classification of each image: softmax over `logit_scale * image . class_weights`.

    Args:
        classifier: precomputed [`build_zero_shot_classifier`] weights for `class_names` (built here otherwise).
    Returns:
        Per image a list of `{"label", "score"}` by decreasing score (at most `top_k`).
    """
    if not class_names:
        raise ValueError("class_names is empty: give at least one class to classify into.")
    if classifier is None:
        classifier = build_zero_shot_classifier(model, processor, class_names, templates)
    pixels = processor.image_processor(images, return_tensors="pt").to(model.device)
    image_embeds = model.get_image_features(pixels["pixel_values"].to(model.dtype), pixels.get("pixel_mask"))
    probs = (model.contrastive_head.scale() * image_embeds @ classifier.T).softmax(dim=-1)
    results = []
    for row in probs:
        order = row.argsort(descending=True)[:top_k]
        results.append([{"label": class_names[i], "score": float(row[i])} for i in order.tolist()])
    return results


# ------------------------------------------------------------------------------------------------------ pre-training
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


class Glipv2ForPreTraining(Glipv2ForGrounding, Glipv2UnderstandingPreTrainedModel):
    """Every head on the shared backbone and GLIPv2's pre-training losses, returned by name:

    - `loss_cls`, `loss_box`, `loss_centerness`: the grounding losses of [`Glipv2ForGrounding`] (same code);
    - `loss_region_word`: inter-image region-word contrast on pre-fusion features ([`region_word_contrastive_loss`],
      gathered across processes);
    - `loss_mlm`: masked-LM on the fused text (`mlm_labels`, -100 ignored);
    - `loss_itc`: image-text contrast of the pooled pre-fusion features (`return_itc_loss=True`, gathered);
    - `loss_vqa`: the VQA soft-score loss (`vqa_labels`).

    `loss = sum(model.loss_weights[name] * loss_dict[name])`; weights are set by the training side (defaults: the
    official grounding weights, 1 for the rest), never by the config. The captioning objective runs through
    [`Glipv2ForConditionalGeneration`] (a different text mask), which shares every weight it uses with this class.
    """

    _tied_weights_keys = {"caption_head.decoder.weight": _WORD_EMBEDDINGS, "mlm_head.decoder.weight": _WORD_EMBEDDINGS}

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.vqa_head = _vqa_head(config)
        self.caption_head = _lm_head(config)
        self.mlm_head = _lm_head(config)
        self.contrastive_head = _contrastive_head(config)
        self.loss_weights.update({"loss_region_word": 1.0, "loss_mlm": 1.0, "loss_itc": 1.0, "loss_vqa": 1.0})
        self.post_init()

    def post_init(self) -> None:
        """Runs once every head exists (Glipv2ForGrounding.__init__ calls it before the tied LM heads are built)."""
        if "contrastive_head" in self._modules:
            super().post_init()

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
        from .modeling_glipv2_captioning import causal_text_features, encode_image_memory

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        memory = encode_image_memory(self.model, pixel_values)
        caption_logits = self.caption_head(causal_text_features(self.model, memory, input_ids, attention_mask))
        losses = {"loss_caption": shifted_lm_loss(caption_logits, caption_labels)}
        loss = sum(self.loss_weights.get(name, 1.0) * value for name, value in losses.items())
        return _return(
            Glipv2PreTrainingOutput(loss=loss, loss_dict=losses, caption_logits=caption_logits), return_dict
        )

    def _region_word_loss(
        self, labels: list[dict[str, torch.Tensor]], outputs: Any, anchors: torch.Tensor, spatial_shapes: torch.Tensor
    ) -> torch.Tensor:
        targets = _targets_to_pixels(labels, outputs.image_sizes)
        per_level = (spatial_shapes[:, 0] * spatial_shapes[:, 1]).tolist()
        num_tokens = outputs.text_attention_mask.shape[1]
        matched, _ = self.loss_function_grounding.prepare_targets(anchors.float(), per_level, targets, num_tokens)
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
        logits, pred_boxes, centerness, box_regression, anchors, spatial_shapes = self.head_forward(
            outputs.vision_features, outputs.text_features, outputs.text_attention_mask, outputs.image_sizes
        )
        losses: dict[str, torch.Tensor] = {}
        if labels is not None:
            losses.update(
                self.grounding_loss(
                    labels,
                    logits,
                    box_regression,
                    centerness,
                    anchors,
                    spatial_shapes,
                    outputs.text_attention_mask,
                    outputs.image_sizes,
                )[1]
            )
            losses["loss_region_word"] = self._region_word_loss(labels, outputs, anchors, spatial_shapes)
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
            logits=logits,
            pred_boxes=pred_boxes,
            centerness=centerness,
            mlm_logits=mlm_logits,
            vqa_logits=vqa_logits,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            spatial_shapes=spatial_shapes,
            image_sizes=outputs.image_sizes,
        )
        return _return(output, return_dict)


__all__ = [
    "Glipv2ContrastiveHead",
    "Glipv2ForPreTraining",
    "Glipv2ForQuestionAnswering",
    "Glipv2ForZeroShotImageClassification",
    "Glipv2LMHead",
    "Glipv2PreTrainingOutput",
    "Glipv2QuestionAnsweringOutput",
    "Glipv2VqaHead",
    "Glipv2ZeroShotImageClassificationOutput",
    "build_zero_shot_classifier",
    "classify",
    "mlm_loss",
    "shifted_lm_loss",
    "vqa_soft_score_loss",
    "vqa_targets",
]
