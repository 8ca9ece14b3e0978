"""CLIP-style zero-shot image classification on the shared GLIPv2 backbone: a dual encoder on the PRE-fusion
features, prompt templates and prompt ensembles (CLIP, arXiv 2103.00020, §3.1.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput

from .configuration_glipv2 import Glipv2Config
from .heads import build_head
from .loss import clip_contrastive_loss
from .modeling_glipv2 import Glipv2Model, Glipv2PreTrainedModel, return_output

# CLIP's 80 ImageNet prompt templates (CLIP repository, notebooks/Prompt_Engineering_for_ImageNet.ipynb; the same list
# as open_clip's `OPENAI_IMAGENET_TEMPLATES`).
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# A small set (open_clip's `SIMPLE_IMAGENET_TEMPLATES` style) for quick evaluation.
SIMPLE_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "imagenet": IMAGENET_TEMPLATES,
    "simple": SIMPLE_TEMPLATES,
    "none": ("{}",),
}


def resolve_templates(templates: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A named template set (`"imagenet"`, `"simple"`, `"none"`) or a list of `"...{}..."` format strings."""
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise ValueError(f"Unknown template set {templates!r}; named sets: {sorted(TEMPLATE_SETS)} (or a list).")
        return TEMPLATE_SETS[templates]
    templates = tuple(templates)
    if not templates or any("{}" not in template for template in templates):
        raise ValueError(f"Templates must be a non-empty list of strings each containing '{{}}', got {templates!r}.")
    return templates


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


class Glipv2ForZeroShotImageClassification(Glipv2PreTrainedModel):
    """CLIP-style dual encoder on the PRE-fusion features (no fusion runs): images and texts are embedded
    independently, so N images x K prompts cost N + K encoder passes. Works in the stock
    `zero-shot-image-classification` pipeline; prompt ensembles via [`build_zero_shot_classifier`].
    """

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.model = Glipv2Model(config)
        self.contrastive_head = build_head("contrastive_head", config)
        self.post_init()

    def get_image_features(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, 3, H, W)` -> `(B, projection_dim)` L2-normalised image embeddings."""
        levels, _ = self.model.split_levels(self.model.encode_image(pixel_values, pixel_mask))
        return self.contrastive_head.embed_image(levels, pixel_mask)

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
        return return_output(output, return_dict)


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


__all__ = [
    "IMAGENET_TEMPLATES",
    "SIMPLE_TEMPLATES",
    "TEMPLATE_SETS",
    "Glipv2ForZeroShotImageClassification",
    "Glipv2ZeroShotImageClassificationOutput",
    "build_zero_shot_classifier",
    "classify",
    "resolve_templates",
]
