"""The all-heads class: region-word inputs, losses by name, head initialisation and tying, one checkpoint for every
task class (also as remote code), gradient checkpointing."""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

from glipv2 import (
    Glipv2ForConditionalGeneration,
    Glipv2ForGrounding,
    Glipv2ForPreTraining,
    Glipv2ForQuestionAnswering,
    Glipv2ForZeroShotImageClassification,
    Glipv2Processor,
    vqa_targets,
)
from glipv2.loss import (
    clip_contrastive_loss,
    mlm_loss,
    vqa_soft_score_loss,
)
from glipv2.modeling_glipv2_captioning import causal_text_features, encode_image_memory
from tests.modeling_helpers import (
    ANSWERS,
    answer_config,
    caption_batch,
    pretraining_inputs,
    scene,
    task_outputs,
    text_without_dropout,
)


def test_region_word_inputs_pick_positive_anchors_and_phrase_tokens() -> None:
    from glipv2.modeling_glipv2_pretraining import region_word_inputs

    matched = torch.tensor([[-1, 0, 0, -1], [1, -1, -1, 0]])
    regions = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)  # feature = 4 * image + anchor
    words = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1) + 100  # feature = 100 + 5 * image + token
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    labels = [
        {
            "boxes": torch.zeros(1, 4),
            "positive_map": torch.tensor([[0, 1, 1, 0, 0.0]]),
            "class_labels": torch.tensor([7]),
        },
        {
            "boxes": torch.zeros(2, 4),
            "positive_map": torch.tensor([[0, 1, 0, 0, 0.0], [0, 0, 1, 1, 1.0]]),  # token 4 is padding
            "class_labels": torch.tensor([3, 7]),
        },
    ]
    r, r_labels, w, w_labels = region_word_inputs(matched, regions, words, mask, labels)
    assert r.flatten().tolist() == [1, 2, 4, 7] and r_labels.tolist() == [7, 7, 7, 3]
    assert w.flatten().tolist() == [101, 102, 106, 107, 108] and w_labels.tolist() == [7, 7, 3, 7, 7]
    # without class labels every box is its own label: positives stay inside the image
    plain = [{k: v for k, v in label.items() if k != "class_labels"} for label in labels]
    _, r_labels, _, w_labels = region_word_inputs(matched, regions, words, mask, plain)
    assert r_labels.tolist() == [-1, -1, -1026, -1025] and w_labels.tolist() == [-1, -1, -1025, -1026, -1026]


def test_pretraining_losses_by_name_with_caller_weights(processor: Glipv2Processor) -> None:
    model = Glipv2ForPreTraining(answer_config()).eval()
    inputs, targets = pretraining_inputs(processor)
    out = model(**inputs, **targets)
    names = {"loss_cls", "loss_box", "loss_centerness", "loss_region_word", "loss_mlm", "loss_itc", "loss_vqa"}
    assert set(out.loss_dict) == names
    assert all(torch.isfinite(v) and v > 0 for v in out.loss_dict.values())
    expected = sum(model.loss_weights[name] * value for name, value in out.loss_dict.items())
    torch.testing.assert_close(out.loss, expected)
    assert model.loss_weights["loss_box"] == 2.0 and model.loss_weights["loss_mlm"] == 1.0
    model.loss_weights["loss_mlm"] = 0.0
    again = model(**inputs, **targets)
    torch.testing.assert_close(again.loss, expected - out.loss_dict["loss_mlm"])
    # MLM loss is the CE of the MLM head's logits at the masked position; VQA and ITC match their functions
    torch.testing.assert_close(out.loss_dict["loss_mlm"], mlm_loss(out.mlm_logits, targets["mlm_labels"]))
    torch.testing.assert_close(out.loss_dict["loss_vqa"], vqa_soft_score_loss(out.vqa_logits, targets["vqa_labels"]))
    scale = model.contrastive_head.scale()
    torch.testing.assert_close(
        out.loss_dict["loss_itc"], clip_contrastive_loss(out.image_embeds, out.text_embeds, scale)
    )
    again.loss.backward()
    for head in ("grounding_head", "vqa_head", "contrastive_head"):
        grads = [p.grad for p in getattr(model, head).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), head
    assert model.mlm_head.dense.weight.grad.abs().sum() == 0  # its weight is 0 now
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)


def test_new_heads_initialisation_and_tying() -> None:
    model = Glipv2ForPreTraining(answer_config())
    words = model.model.text_model.embeddings.word_embeddings.weight
    assert model.caption_head.decoder.weight is words and model.mlm_head.decoder.weight is words
    assert model.get_output_embeddings() is model.mlm_head.decoder
    assert model.contrastive_head.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    assert model.contrastive_head.scale().item() == pytest.approx(1 / 0.07, rel=1e-4)
    with torch.no_grad():
        model.contrastive_head.logit_scale.fill_(10.0)
    assert model.contrastive_head.scale().item() == pytest.approx(100.0)  # clamped at 100
    assert model.caption_head.bias.abs().sum() == 0 and model.mlm_head.bias.abs().sum() == 0
    projection = model.contrastive_head.visual_projection.weight
    assert projection.std().item() == pytest.approx(projection.shape[1] ** -0.5, rel=0.2)
    assert model.vqa_head.classifier.weight.std().item() == pytest.approx(0.02, rel=0.3)


def test_pretraining_checkpoint_loads_into_every_task_class(processor: Glipv2Processor, tmp_path) -> None:  # noqa: ANN001
    from transformers import (
        AutoModelForImageTextToText,
        AutoModelForPreTraining,
        AutoModelForVisualQuestionAnswering,
        AutoModelForZeroShotImageClassification,
        AutoModelForZeroShotObjectDetection,
    )

    pretraining = Glipv2ForPreTraining(answer_config()).eval()
    inputs, _ = pretraining_inputs(processor)
    pretraining.save_pretrained(tmp_path)
    with torch.no_grad():
        out = pretraining(**inputs)
        memory = encode_image_memory(pretraining.model, inputs["pixel_values"])
        text = causal_text_features(pretraining.model, memory, inputs["input_ids"], inputs["attention_mask"])
        caption_logits = pretraining.caption_head(text)
    expected = {
        Glipv2ForGrounding: [out.logits, out.pred_boxes, out.centerness],
        Glipv2ForQuestionAnswering: [out.vqa_logits],
        Glipv2ForConditionalGeneration: [caption_logits],
        Glipv2ForZeroShotImageClassification: [out.image_embeds, out.text_embeds],
    }
    for auto in (
        AutoModelForZeroShotObjectDetection,
        AutoModelForVisualQuestionAnswering,
        AutoModelForImageTextToText,
        AutoModelForZeroShotImageClassification,
    ):
        model = auto.from_pretrained(tmp_path).eval()
        assert type(model) in expected, type(model)
        for got, want in zip(task_outputs(model, inputs), expected[type(model)]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        # and a round trip through the task class itself
        model.save_pretrained(tmp_path / type(model).__name__)
        again = type(model).from_pretrained(tmp_path / type(model).__name__).eval()
        for got, want in zip(task_outputs(again, inputs), task_outputs(model, inputs)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        first = model(**inputs, return_dict=False)[0]
        assert isinstance(first, torch.Tensor)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is Glipv2ForPreTraining
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).vqa_logits, out.vqa_logits, rtol=1e-5, atol=1e-6)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["glipv2"] = None  # glipv2 cannot be imported: only the folders' own code may be used
    import torch
    from transformers import (AutoModelForImageTextToText, AutoModelForVisualQuestionAnswering,
                              AutoModelForZeroShotImageClassification, AutoModelForPreTraining)
    root, inputs = sys.argv[1], torch.load(sys.argv[2])
    results = {}
    with torch.no_grad():
        for name, auto in [
            ("vqa", AutoModelForVisualQuestionAnswering),
            ("caption", AutoModelForImageTextToText),
            ("zero_shot", AutoModelForZeroShotImageClassification),
            ("pretraining", AutoModelForPreTraining),
        ]:
            model = auto.from_pretrained(f"{root}/{name}", trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            if name == "caption":
                results[name] = model(**inputs).logits
                pixels = inputs["pixel_values"]
                results["generated"] = model.generate(pixel_values=pixels, max_new_tokens=3, num_beams=2)
            elif name == "zero_shot":
                results[name] = model(**inputs).logits_per_image
            else:
                results[name] = model(**inputs).vqa_logits if name == "pretraining" else model(**inputs).logits
    torch.save(results, sys.argv[3])
    """
)


def test_remote_code_loads_understanding_classes(processor: Glipv2Processor, tmp_path: pathlib.Path) -> None:
    pretraining = Glipv2ForPreTraining(answer_config()).eval()
    pretraining.save_pretrained(tmp_path / "pretraining")
    models = {
        "vqa": Glipv2ForQuestionAnswering.from_pretrained(tmp_path / "pretraining").eval(),
        "caption": Glipv2ForConditionalGeneration.from_pretrained(tmp_path / "pretraining").eval(),
        "zero_shot": Glipv2ForZeroShotImageClassification.from_pretrained(tmp_path / "pretraining").eval(),
    }
    for name, model in models.items():
        model.save_pretrained(tmp_path / name)
    assert {"modeling_glipv2_vqa.py", "loss.py", "heads.py"} <= {p.name for p in (tmp_path / "vqa").iterdir()}
    inputs, _ = pretraining_inputs(processor)
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path), str(tmp_path / "inputs.pt"), str(tmp_path / "o")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "o")
    with torch.no_grad():
        torch.testing.assert_close(remote["vqa"], models["vqa"](**inputs).logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(remote["caption"], models["caption"](**inputs).logits, rtol=1e-5, atol=1e-6)
        zero_shot = models["zero_shot"](**inputs).logits_per_image
        torch.testing.assert_close(remote["zero_shot"], zero_shot, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(remote["pretraining"], pretraining(**inputs).vqa_logits, rtol=1e-5, atol=1e-6)
        generated = models["caption"].generate(pixel_values=inputs["pixel_values"], max_new_tokens=3, num_beams=2)
    assert torch.equal(remote["generated"], generated)


def test_gradient_checkpointing_same_gradients_for_captioning_and_vqa(processor: Glipv2Processor) -> None:
    config = answer_config(text_config=text_without_dropout(), fusion_attention_dropout=0.0)
    batch = caption_batch(processor, ["a red square", "a blue disc here"], [scene("red"), scene("blue")])
    answers = vqa_targets([[0], [1]], [[1.0], [1.0]], len(ANSWERS))

    def grads(model_class: type, checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = model_class(config).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        if model_class is Glipv2ForConditionalGeneration:
            model(**batch).loss.backward()
        else:
            model(**{k: v for k, v in batch.items() if k != "labels"}, labels=answers).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    for model_class in (Glipv2ForConditionalGeneration, Glipv2ForQuestionAnswering):
        plain, checkpointed = grads(model_class, False), grads(model_class, True)
        assert plain.keys() == checkpointed.keys() and any("fusion.layers.1" in n for n in plain)
        for name in plain:
            torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
