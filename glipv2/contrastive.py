"""Contrastive objectives of GLIPv2 pre-training and CLIP-style zero-shot classification.

- [`gather_with_grad`]: differentiable all-gather (open_clip `gather_features` without `local_loss`): every process
  computes the loss of the whole global batch, and the gradient reaching each process's own features is the sum of
  all processes' contributions, so with DDP's gradient averaging the update equals the single-process one.
- [`clip_contrastive_loss`]: CLIP's symmetric InfoNCE (CLIP, arXiv 2103.00020, Fig. 3 pseudo-code).
- [`region_word_contrastive_loss`]: GLIPv2's inter-image region-word contrastive loss (arXiv 2206.05836, §3.2) on
  pre-fusion features, positives = region/word pairs that share a label, across every image of the global batch.
- Prompt-template sets for zero-shot classification: CLIP's 80 ImageNet templates and a small "simple" set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import distributed as dist


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


__all__ = [
    "IMAGENET_TEMPLATES",
    "SIMPLE_TEMPLATES",
    "TEMPLATE_SETS",
    "clip_contrastive_loss",
    "gather_with_grad",
    "region_word_contrastive_loss",
    "resolve_templates",
]
