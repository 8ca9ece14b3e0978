"""Zero-shot classification: a tiny dual encoder overfits, the stock pipeline and prompt templates."""

from __future__ import annotations

import math
import pathlib

import pytest
import torch

from glipv2 import (
    Glipv2ForZeroShotImageClassification,
    Glipv2Processor,
    build_zero_shot_classifier,
    classify,
)
from glipv2.modeling_glipv2_zero_shot import IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, resolve_templates
from tests.modeling_helpers import answer_config, scene, text_without_dropout, train_steps


# ------------------------------------------------------------------------------------------ zero-shot
def test_zero_shot_overfit_stock_pipeline_and_templates(processor: Glipv2Processor, tmp_path: pathlib.Path) -> None:
    from transformers import pipeline

    model = Glipv2ForZeroShotImageClassification(answer_config(text_config=text_without_dropout()))
    assert model.contrastive_head.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    colors = ["red", "blue", "green"]
    batch = processor(images=[scene(c) for c in colors], text=[f"a photo of a {c} square." for c in colors])
    # locked-image tuning (LiT): the random image tower keeps the three images apart, the rest learns to match
    model.model.vision_backbone.requires_grad_(False)
    model.model.fpn.requires_grad_(False)
    train_steps(model, lambda: model(**batch, return_loss=True).loss, steps=30, lr=3e-3)
    with torch.no_grad():
        out = model(**batch)
    assert out.logits_per_image.argmax(-1).tolist() == [0, 1, 2]
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.T)
    assert out.image_embeds.norm(dim=-1).sub(1).abs().max() < 1e-5

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    classifier = pipeline("zero-shot-image-classification", model=str(tmp_path))
    for color in colors:
        result = classifier(scene(color), candidate_labels=colors, hypothesis_template="a photo of a {} square.")
        assert result[0]["label"] == color
    ranked = classify(model, processor, [scene(c) for c in colors], colors, templates=["a photo of a {} square."])
    assert [r[0]["label"] for r in ranked] == colors
    weights = build_zero_shot_classifier(model, processor, colors, templates="simple")
    assert weights.shape == (3, model.config.projection_dim)
    torch.testing.assert_close(weights.norm(dim=-1), torch.ones(3))
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80 and len(SIMPLE_TEMPLATES) == 7
    with pytest.raises(ValueError, match="class_names is empty"):
        classify(model, processor, [scene("red")], [])
    with pytest.raises(ValueError, match="Unknown template set 'nope'"):
        resolve_templates("nope")
    with pytest.raises(ValueError, match="No candidate texts"):
        model(input_ids=torch.zeros(0, 3, dtype=torch.long), pixel_values=batch["pixel_values"])
