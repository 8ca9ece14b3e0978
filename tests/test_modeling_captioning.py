"""Captioning: no leak through the seq2seq mask, a tiny model overfits captions with greedy and beam search."""

from __future__ import annotations

import pathlib

import pytest
import torch

from glipv2 import (
    Glipv2ForConditionalGeneration,
    Glipv2Processor,
)
from tests.modeling_helpers import CAPTION_TEXT_CONFIG, answer_config, caption_batch, scene, train_steps


def test_causal_mask_has_no_leak(processor: Glipv2Processor) -> None:
    model = Glipv2ForConditionalGeneration(answer_config()).eval()
    batch = caption_batch(processor, ["a red square on grey", "a blue disc"], [scene("red"), scene("blue")])
    with torch.no_grad():
        base = model(**batch).logits
        for t in range(1, 5):
            changed = batch["input_ids"].clone()
            changed[0, t + 1] = 2000 + t  # change token t+1 of the first caption
            logits = model(**{**batch, "input_ids": changed}).logits
            torch.testing.assert_close(logits[0, : t + 1], base[0, : t + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(logits[0, t + 1], base[0, t + 1])
        # the image is seen: another image changes the first position's prediction
        other = model(**{**batch, "pixel_values": batch["pixel_values"].flip(0)}).logits
        assert not torch.allclose(other[0, 0], base[0, 0])
        # generation's logits_to_keep: the head on the last positions only, the same values there
        inputs = {key: value for key, value in batch.items() if key != "labels"}  # with labels: every position
        assert model(**batch, logits_to_keep=2).logits.shape == base.shape
        last = model(**inputs, logits_to_keep=2).logits
        assert last.shape == (2, 2, base.shape[-1])
        torch.testing.assert_close(last, base[:, -2:])


def test_caption_overfit_greedy_and_beam_reproduce(processor: Glipv2Processor, tmp_path: pathlib.Path) -> None:
    from transformers import pipeline

    torch.manual_seed(0)
    model = Glipv2ForConditionalGeneration(
        answer_config(fusion_attention_dropout=0.0, text_config=CAPTION_TEXT_CONFIG)
    )
    captions, images = ["a red square", "a blue circle"], [scene("red"), scene("blue", "circle")]
    batch = caption_batch(processor, captions, images)
    pixel_values = batch.pop("pixel_values")
    with torch.no_grad():  # the image side is text-independent: train the text side on a fixed image memory
        memory = model.image_memory(pixel_values)
    loss = train_steps(model, lambda: model(**batch, image_memory=memory).loss, steps=45)
    assert loss < 0.1
    greedy = model.generate(pixel_values=pixel_values, max_new_tokens=6)
    beam = model.generate(pixel_values=pixel_values, max_new_tokens=6, num_beams=3)
    decoded = processor.tokenizer.batch_decode(greedy, skip_special_tokens=True)
    assert decoded == captions
    assert processor.tokenizer.batch_decode(beam, skip_special_tokens=True) == captions
    assert greedy[0, 0].item() == processor.tokenizer.cls_token_id
    assert greedy[0, len(processor.tokenizer(captions[0])["input_ids"]) - 1].item() == processor.tokenizer.sep_token_id
    # the stock image-text-to-text pipeline: the prompt's trailing [SEP] is dropped and the caption continues it
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    captioner = pipeline("image-text-to-text", model=str(tmp_path))
    out = captioner(images=scene("blue", "circle"), text="a", max_new_tokens=5)
    assert out[0]["generated_text"] == "a blue circle"
    # without a prompt: the image-captioning pipeline starts from [CLS] alone, as generate with images only
    unconditional = pipeline("image-captioning", model=str(tmp_path))
    assert unconditional(scene("red"), max_new_tokens=6) == [{"generated_text": "a red square"}]
    with pytest.raises(ValueError, match="more than the text tower's limit of 256"):
        model.generate(image_memory=memory, max_new_tokens=300)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        model.generate(image_memory=memory, max_new_tokens=0)
    padded = processor(text=["a", "a red square"])
    with pytest.raises(ValueError, match="Padded prompts"):
        model.generate(image_memory=memory, input_ids=padded["input_ids"], attention_mask=padded["attention_mask"])
