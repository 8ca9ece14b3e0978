"""Foundation: config presets, the shared backbone, fusion semantics, deformable conv paths, save/load, remote code."""

from __future__ import annotations

import ast
import math
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError

from glipv2 import Glipv2Config, Glipv2Model
from glipv2.deformable_conv import deform_conv2d_reference, reinterpret_offset, torchvision_deform_conv_available
from glipv2.fusion import Glipv2DyHeadBlock, Glipv2VLFuse, flatten_levels, unflatten_levels
from tests.conftest import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _inputs(batch: int = 2, height: int = 64, width: int = 96, length: int = 7) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length - 2 :] = 0
    return {
        "pixel_values": torch.randn(batch, 3, height, width, generator=generator),
        "input_ids": torch.randint(1000, 2000, (batch, length), generator=generator),
        "attention_mask": mask,
    }


@pytest.mark.parametrize(
    ("preset", "low", "high"),
    [("tiny-random", 0.3e6, 0.7e6), ("demo", 20e6, 40e6), ("glip-tiny", 226e6, 238e6), ("glip-large", 400e6, 460e6)],
)
def test_preset_parameter_counts(preset: str, low: float, high: float) -> None:
    with torch.device("meta"):
        model = Glipv2Model(Glipv2Config.from_preset(preset))
    count = sum(p.numel() for p in model.parameters())
    print(f"{preset}: {count / 1e6:.2f}M parameters (backbone + fusion)")
    assert low < count < high
    if preset == "glip-tiny":  # official GLIP-T: Swin-T + BERT-base + 6 fusion layers ~ 232M with its head
        assert model.config.vision_config.embed_dim == 96 and model.config.num_fusion_layers == 6
    if preset == "glip-large":
        assert model.config.vision_config.window_size == 12 and model.config.num_fusion_layers == 8


def test_unknown_preset_and_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="Unknown preset 'nope'"):
        Glipv2Config.from_preset("nope")
    # transformers configs validate through huggingface_hub's strict dataclasses
    with pytest.raises(StrictDataclassClassValidationError, match="anchor_strides has 2 entries"):
        Glipv2Config.from_preset("tiny-random", anchor_strides=[8, 16])


def test_model_output_shapes_and_levels() -> None:
    model = Glipv2Model(tiny_config()).eval()
    out = model(**_inputs())
    assert out.spatial_shapes.tolist() == [[8, 12], [4, 6], [2, 3], [1, 2], [1, 1]]
    assert [tuple(f.shape) for f in out.vision_features][0] == (2, 32, 8, 12)
    assert out.text_features.shape == (2, 7, 8)
    assert out.image_sizes.tolist() == [[64, 96], [64, 96]]


def test_vlfuse_residual_semantics_hand_computed() -> None:
    """x' = LN(x) + gamma * Attn(LN(x)), with identity projections, one head, a masked second token."""
    fuse = Glipv2VLFuse(2, 2, 2, 1, dropout=0.0, layer_scale_init=0.5, clamp_value=5e4).eval()
    with torch.no_grad():
        for linear in [*fuse.attn.vision.values(), *fuse.attn.text.values()]:
            linear.weight.copy_(torch.eye(2))
            linear.bias.zero_()
    vision = torch.tensor([[1.0, 3.0], [2.0, 0.0]]).T.reshape(1, 2, 1, 2)  # two positions: (1,3) and (2,0)
    text = torch.tensor([[[0.0, 4.0], [5.0, 1.0]]])
    mask = torch.tensor([[1, 0]])
    (fused_vision,), fused_text = fuse((vision,), text, mask)
    s = 1 / math.sqrt(1 + 1e-5)  # layer norm of a 2-vector with variance 1
    v1, v2, l1 = torch.tensor([-s, s]), torch.tensor([s, -s]), torch.tensor([-s, s])
    # vision queries see only the real token: delta = l1
    expected_v = torch.stack([v1 + 0.5 * l1, v2 + 0.5 * l1], dim=1)  # (C, positions)
    torch.testing.assert_close(fused_vision.reshape(2, 2), expected_v, atol=1e-5, rtol=0)
    # the real token attends both positions with logits v.l / sqrt(2)
    logits = torch.stack([v1 @ l1, v2 @ l1]) / math.sqrt(2)
    p = logits.softmax(0)
    expected_l1 = l1 + 0.5 * (p[0] * v1 + p[1] * v2)
    torch.testing.assert_close(fused_text[0, 0], expected_l1, atol=1e-5, rtol=0)
    # the masked token never reaches the image side
    (again,), _ = fuse((vision,), torch.tensor([[[0.0, 4.0], [-7.0, 9.0]]]), mask)
    torch.testing.assert_close(again, fused_vision)


def test_flatten_unflatten_round_trip() -> None:
    levels = (torch.randn(2, 3, 4, 5), torch.randn(2, 3, 2, 3))
    flat, sizes = flatten_levels(levels)
    assert flat.shape == (2, 26, 3)
    for a, b in zip(levels, unflatten_levels(flat, sizes)):
        assert torch.equal(a, b)


def test_reinterpret_offset_reads_flat_buffer() -> None:
    offset = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).reshape(2, 2, 3, 4)
    small = reinterpret_offset(offset, 2, 2)
    # sample b reads the first 2*2*2 values of its own (2, 3, 4) buffer
    assert small[0].flatten().tolist() == list(range(8))
    assert small[1].flatten().tolist() == list(range(24, 32))
    with pytest.raises(ValueError, match="read past the buffer"):
        reinterpret_offset(offset, 4, 4)


@pytest.mark.skipif(not torchvision_deform_conv_available(), reason="needs torchvision")
@pytest.mark.parametrize(("stride", "height", "width"), [(1, 7, 9), (2, 8, 10), (2, 5, 3), (1, 1, 1)])
def test_deform_conv_torchvision_equals_reference(stride: int, height: int, width: int) -> None:
    from torchvision.ops import deform_conv2d

    x = torch.randn(2, 4, height, width)
    weight, bias = torch.randn(5, 4, 3, 3), torch.randn(5)
    out_h, out_w = (height - 1) // stride + 1, (width - 1) // stride + 1
    offset, mask = torch.randn(2, 18, out_h, out_w) * 3, torch.rand(2, 9, out_h, out_w)
    expected = deform_conv2d(x, offset, weight, bias, stride=stride, padding=1, mask=mask)
    got = deform_conv2d_reference(x, offset, mask, weight, bias, stride=stride, padding=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torchvision_deform_conv_available(), reason="needs torchvision")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("offsets", ["zero", "integer", "random"])
@pytest.mark.parametrize(("height", "width"), [(7, 9), (80, 100)])
def test_deform_conv_gradients_equal_torchvision(dtype: torch.dtype, offsets: str, height: int, width: int) -> None:
    """Also at integer sampling positions (zero offsets: DyHead's offset convolution starts at zero), where the
    offset gradient takes DCN's one-sided difference (floor neighbour first), as torchvision's and the official
    kernels do."""
    from torchvision.ops import deform_conv2d

    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, height, width, generator=generator, dtype=dtype)
    weight, bias = torch.randn(5, 4, 3, 3, generator=generator, dtype=dtype), torch.randn(5, dtype=dtype)
    shape = (2, 18, height, width)
    offset = {
        "zero": torch.zeros(shape, dtype=dtype),
        "integer": torch.randint(-2, 3, shape, generator=generator).to(dtype),
        "random": torch.randn(shape, generator=generator, dtype=dtype) * 2,
    }[offsets]
    mask = torch.rand(2, 9, height, width, generator=generator, dtype=dtype)
    upstream = torch.randn(2, 5, height, width, generator=generator, dtype=dtype)

    def gradients(fn) -> list[torch.Tensor]:  # noqa: ANN001
        inputs = [t.clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
        (fn(*inputs) * upstream).sum().backward()
        return [t.grad for t in inputs]

    expected = gradients(lambda i, o, m, w, b: deform_conv2d(i, o, w, b, padding=1, mask=m))
    got = gradients(lambda i, o, m, w, b: deform_conv2d_reference(i, o, m, w, b, padding=1))
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    for name, a, b in zip(("image", "offset", "mask", "weight", "bias"), got, expected):
        assert (a - b).norm() <= tolerance * b.norm(), name


@pytest.mark.skipif(not torchvision_deform_conv_available(), reason="needs torchvision")
def test_dyhead_block_paths_agree_with_offset_reuse() -> None:
    block = Glipv2DyHeadBlock(16, deformable=True, dyrelu=True, scale_attention=True, norm_groups=4).eval()
    with torch.no_grad():  # non-zero offsets so that the sampling positions really move
        torch.nn.init.normal_(block.offset.weight, std=0.3)
    levels = (torch.randn(2, 16, 10, 14), torch.randn(2, 16, 5, 7), torch.randn(2, 16, 3, 4))
    for conv in (block.coarser_conv, block.same_conv, block.finer_conv):
        conv.conv.use_torchvision = True
    fast = block(levels)
    for conv in (block.coarser_conv, block.same_conv, block.finer_conv):
        conv.conv.use_torchvision = False
    slow = block(levels)
    for a, b in zip(fast, slow):
        rel = (a - b).abs().max() / b.abs().max()
        assert rel <= 1e-5


def test_gradient_checkpointing_gives_same_gradients() -> None:
    inputs = _inputs()

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = Glipv2Model(tiny_config()).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        torch.manual_seed(1)
        out = model(**inputs)
        (sum(f.square().mean() for f in out.vision_features) + out.text_features.square().mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and any("fusion.layers.1" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_mismatched_batch_sizes_and_long_prompts_raise() -> None:
    model = Glipv2Model(tiny_config()).eval()
    inputs = _inputs(batch=2)
    inputs["input_ids"] = torch.randint(1000, 2000, (3, 7))
    inputs["attention_mask"] = torch.ones(3, 7, dtype=torch.long)
    with pytest.raises(ValueError, match="Batch sizes differ: text has 3 entries but images has 2"):
        model(**inputs)
    with pytest.raises(ValueError, match="300 tokens, more than max_text_length=256"):
        model.encode_text(torch.ones(1, 300, dtype=torch.long))


def test_save_load_round_trip_identical(tmp_path: pathlib.Path) -> None:
    from transformers import AutoConfig, AutoModel

    model = Glipv2Model(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), Glipv2Config)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is Glipv2Model
    original_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert original_state.keys() == loaded_state.keys()
    assert all(torch.equal(original_state[k], loaded_state[k]) for k in original_state)
    inputs = _inputs()
    a, b = model(**inputs), loaded(**inputs)
    # bit-identical weights; outputs agree to float32 kernel noise (memory-mapped weights change SIMD alignment)
    for x, y in zip((*a.vision_features, a.text_features), (*b.vision_features, b.text_features)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["glipv2"] = None  # glipv2 cannot be imported: only the folder's own code may be used
    import torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    inputs = torch.load(sys.argv[2])
    with torch.no_grad():
        out = model(**inputs)
    torch.save([*out.vision_features, out.text_features], sys.argv[3])
    """
)


def test_remote_code_loads_without_glipv2(tmp_path: pathlib.Path) -> None:
    model = Glipv2Model(tiny_config()).eval()
    folder = tmp_path / "glipv2-tiny"
    model.save_pretrained(folder)
    assert {"modeling_glipv2.py", "configuration_glipv2.py", "fusion.py"} <= {p.name for p in folder.iterdir()}
    inputs = _inputs()
    torch.save(inputs, tmp_path / "inputs.pt")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        out = model(**inputs)
    for x, y in zip((*out.vision_features, out.text_features), remote):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6)


def test_package_is_flat_with_sibling_imports_only() -> None:
    package = REPO / "glipv2"
    assert not [p for p in package.rglob("*.py") if p.parent != package], "glipv2/ must have no subpackages"
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1), f"{path.name}: only single-dot relative imports ({node.module})"
                assert node.level == 1 or not (node.module or "").startswith(("glipv2", "tasks", "scripts")), (
                    f"{path.name} imports {node.module}: use a single-dot sibling import"
                )
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith(("glipv2", "tasks", "scripts")), f"{path.name}: {alias.name}"


@pytest.mark.timeout(300)
def test_torch_compile_captures_the_forward_in_one_graph() -> None:
    """`torch.compile(model)` traces the whole grounding forward without a graph break (no device-to-host reads, so
    `mode="reduce-overhead"` can replay it as one CUDA graph) and gives eager's outputs."""
    from torch._dynamo.utils import counters

    from glipv2 import Glipv2ForGrounding

    torch._dynamo.reset()
    counters.clear()
    model = Glipv2ForGrounding(tiny_config()).eval()
    inputs = _inputs()
    # Default mode (not fullgraph, which traces some data-dependent reads as constants): count the breaks.
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        expected, got = model(**inputs), compiled(**inputs)
    assert not counters["graph_break"], list(counters["graph_break"])
    for key in ("logits", "pred_boxes", "centerness"):
        torch.testing.assert_close(got[key], expected[key], msg=key)
    torch._dynamo.reset()
