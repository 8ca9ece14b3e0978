"""CUDA against CPU: the GPU-only paths (torchvision's deformable-convolution kernel, fused attention, cuDNN) give
the CPU's numbers. Marked `gpu`: CI has no GPU; run with `pytest -m gpu tests/test_cuda.py` on a CUDA machine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from glipv2 import Glipv2ForGrounding
from glipv2.deformable_conv import deform_conv2d_reference, torchvision_deform_conv_available
from tests.conftest import tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for matmuls and convolutions (cuDNN allows it by default), so CUDA fp32 is real fp32."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _batch(batch: int = 2, size: tuple[int, int] = (64, 80), tokens: int = 9) -> dict:
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(1000, 2000, (batch, tokens), generator=generator)
    attention_mask = torch.ones(batch, tokens, dtype=torch.long)
    attention_mask[1, -2:] = 0
    positive_map = torch.zeros(2, tokens)
    positive_map[0, 1:3] = positive_map[1, 4] = 1
    labels = [
        {"boxes": torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.3, 0.4]]), "positive_map": positive_map}
        for _ in range(batch)
    ]
    return {
        "pixel_values": torch.randn(batch, 3, *size, generator=generator),
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
    }


def _to(batch: dict, device: str) -> dict:
    moved = {key: value.to(device) for key, value in batch.items() if torch.is_tensor(value)}
    moved["labels"] = [{key: value.to(device) for key, value in label.items()} for label in batch["labels"]]
    return moved


@pytest.mark.skipif(not torchvision_deform_conv_available(), reason="needs torchvision")
@pytest.mark.parametrize(("stride", "height", "width"), [(1, 13, 17), (2, 16, 20), (2, 5, 3)])
def test_deform_conv_cuda_kernel_equals_reference(stride: int, height: int, width: int) -> None:
    from torchvision.ops import deform_conv2d

    x = torch.randn(2, 8, height, width, dtype=torch.float64)
    weight, bias = torch.randn(6, 8, 3, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    out_h, out_w = (height - 1) // stride + 1, (width - 1) // stride + 1
    offset = torch.randn(2, 18, out_h, out_w, dtype=torch.float64) * 3
    mask = torch.rand(2, 9, out_h, out_w, dtype=torch.float64)
    expected = deform_conv2d_reference(x, offset, mask, weight, bias, stride=stride, padding=1)
    args = [t.cuda().float() for t in (x, offset, weight, bias)]
    got = deform_conv2d(args[0], args[1], args[2], args[3], stride=stride, padding=1, mask=mask.cuda().float())
    torch.testing.assert_close(got.cpu().double(), expected, rtol=1e-4, atol=1e-4)


def test_forward_and_loss_on_cuda_equal_cpu() -> None:
    model = Glipv2ForGrounding(tiny_config()).eval()
    batch = _batch()
    with torch.no_grad():
        on_cpu = model(**batch)
        with exact_float32():
            on_cuda = model.cuda()(**_to(batch, "cuda"))
    for key in ("logits", "pred_boxes", "centerness"):
        torch.testing.assert_close(on_cuda[key].cpu(), on_cpu[key], rtol=1e-4, atol=1e-4, msg=key)
    torch.testing.assert_close(on_cuda.loss.cpu(), on_cpu.loss, rtol=1e-4, atol=1e-5)


def test_training_step_gradients_on_cuda_equal_cpu() -> None:
    # Dropout draws differ between devices: every rate 0, train-mode paths otherwise.
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config = tiny_config(
        fusion_attention_dropout=0.0, text_config=no_dropout, vision_config=dict(no_dropout, drop_path_rate=0.0)
    )
    model = Glipv2ForGrounding(config).train()
    batch = _batch()
    model(**batch).loss.backward()
    on_cpu = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    with exact_float32():
        model.cuda()(**_to(batch, "cuda")).loss.backward()
    assert on_cpu, "no gradients"
    for name, grad in on_cpu.items():
        got = dict(model.named_parameters())[name].grad.cpu()
        assert (got - grad).norm() <= 1e-3 * grad.norm() + 1e-9, name


def test_bf16_autocast_on_cuda_tracks_fp32() -> None:
    model = Glipv2ForGrounding(tiny_config()).eval().cuda()
    batch = _to(_batch(), "cuda")
    batch.pop("labels")
    with torch.no_grad(), exact_float32():
        fp32 = model(**batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(**batch)
    assert torch.isfinite(bf16.logits).all() and torch.isfinite(bf16.pred_boxes).all()
    # bf16 keeps 8 mantissa bits: boxes within 2% of their scale, logits strongly correlated.
    scale = fp32.pred_boxes.abs().max()
    assert (bf16.pred_boxes.float() - fp32.pred_boxes).abs().max() / scale < 0.02
    assert torch.corrcoef(torch.stack([bf16.logits.float().flatten(), fp32.logits.flatten()]))[0, 1] > 0.99


@pytest.mark.parametrize("config", ["fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_sharded_training_on_gpus_ends_in_a_consolidated_model(config: str, tmp_path) -> None:
    """`scripts/train.py` through `accelerate launch` with FSDP2 / DeepSpeed ZeRO-2 / ZeRO-3 on every visible GPU
    (bf16): it trains, and `<output_dir>/final` is a plain folder `from_pretrained` loads. Needs CUDA (and the
    `deepspeed` package for DeepSpeed, not a default dependency)."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    from tests.tasks.test_trainer import REPO, TRAIN, _env, _history, _recipe

    if config.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("DeepSpeed is not installed (pip install deepspeed)")
    recipe = _recipe(tmp_path, "run", max_steps=6, per_device_batch_size=2, save_every=3, mixed_precision="bf16")
    launch = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file"]
    sizes = ["--num_processes", str(torch.cuda.device_count())]
    command = [
        *launch,
        str(REPO / "configs" / "accelerate" / f"{config}.yaml"),
        *sizes,
        TRAIN,
        "--config",
        str(recipe),
    ]
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert [record["step"] for record in _history(tmp_path / "run")] == list(range(1, 7))
    model = Glipv2ForGrounding.from_pretrained(tmp_path / "run" / "final")
    assert all(torch.isfinite(p).all() for p in model.parameters())
