"""GLIP's deep fusion: VLFuse bi-directional attention, an extra text layer and a DyHead block per fusion layer.

Follows `maskrcnn_benchmark/modeling/rpn/vldyhead.py` (VLFuse, BertEncoderLayer, DyConv) and
`maskrcnn_benchmark/utils/fuse_helper.py` (BiMultiHeadAttention, BiAttentionBlockForCheckpoint) of the official GLIP
code. Module names use `q_proj/k_proj/v_proj/o_proj` inside modality-named parents so a single PEFT pattern matches.

Under a seq2seq mask (captioning: image positions attend only image positions, token t attends the image and tokens
<= t) the two sides of the stack separate: [`Glipv2DeepFusion.image_side`] is text-independent and runs once per
image, [`Glipv2DeepFusion.text_side`] runs the text half of every layer against it with any self-attention mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from .deformable_conv import Glipv2ModulatedDeformConv2d, reinterpret_offset_regions
from .padding import Glipv2PaddingMasks, group_norm, masked_spatial_mean, upsample_aligned, zero_outside


def flatten_levels(features: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Concatenates pyramid levels `(B, C, H_l, W_l)` into `(B, sum H_l*W_l, C)` and returns the level sizes."""
    # No int(): under the ONNX exporter's tracer the sizes stay symbolic (dynamic image sizes); eagerly they are ints.
    sizes = [(f.shape[-2], f.shape[-1]) for f in features]
    flat = torch.cat([f.flatten(2).transpose(1, 2) for f in features], dim=1)
    return flat, sizes


def spatial_shapes_tensor(features: tuple[torch.Tensor, ...], device: torch.device) -> torch.Tensor:
    """`(L, 2)` long `(H_l, W_l)` of pyramid levels `(B, C, H_l, W_l)`.

    Built from the Python shapes (no device-to-host read, no graph break under `torch.compile`); while the ONNX
    exporter traces, from the shape tensors instead, so the exported graph computes it for any image size.
    """
    if torch.jit.is_tracing():
        return torch.stack([torch._shape_as_tensor(f)[-2:] for f in features]).to(device)
    return torch.tensor([list(f.shape[-2:]) for f in features], device=device)


def unflatten_levels(flat: torch.Tensor, sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
    """Inverse of [`flatten_levels`]: `(B, A, C)` back to a tuple of `(B, C, H_l, W_l)`."""
    out, start = [], 0
    for height, width in sizes:
        chunk = flat[:, start : start + height * width]
        out.append(chunk.transpose(1, 2).reshape(flat.shape[0], -1, height, width).contiguous())
        start += height * width
    return tuple(out)


def _attention_probabilities(
    logits: torch.Tensor,
    text_attention_mask: torch.Tensor | None,
    image_mask: torch.Tensor | None,
    clamp_value: float,
    side: str,
) -> torch.Tensor:
    """One side's softmax of the shared `(B, h, A, T)` logits (before clamping): `side="vision"` gives the image
    queries' attention over tokens `(B, h, A, T)`, `side="text"` the tokens' attention over image positions
    `(B, h, T, A)`. The same operations, in the same order, as [`Glipv2BiAttention.forward`]."""
    logits = logits.clamp(-clamp_value, clamp_value)
    if side == "vision":
        if text_attention_mask is not None:
            invalid = ~text_attention_mask.bool()[:, None, None, :]
            logits = logits.masked_fill(invalid, torch.finfo(logits.dtype).min)
        return logits.softmax(dim=-1)
    if image_mask is not None:
        logits = logits.masked_fill(~image_mask.bool()[:, None, :, None], torch.finfo(logits.dtype).min)
    if logits.device.type == "cpu":
        return logits.softmax(dim=-2).transpose(-1, -2)
    return logits.transpose(-1, -2).softmax(dim=-1)


def _softmax_backward(grad: torch.Tensor, probs: torch.Tensor, dim: int) -> torch.Tensor:
    """Gradient of the softmax's input from its output `probs` and the gradient of `probs`, computed in float32
    whatever their dtype (as torch's own softmax backward accumulates: in bfloat16 the difference cancels badly),
    returned in `probs`' dtype."""
    grad32, probs32 = grad.float(), probs.float()
    return (probs32 * (grad32 - (grad32 * probs32).sum(dim=dim, keepdim=True))).to(probs.dtype)


class Glipv2BiAttentionFunction(torch.autograd.Function):
    """The bi-attention's core, `(query, key, vision_values, text_values)` -> `(vision_context, text_context)`,
    whose backward keeps only the `(B, h, A, T)` logits: autograd would keep the logits, both softmax outputs and,
    in training, both dropout outputs and masks (five to seven tensors of that size per fusion layer). The backward
    recomputes each softmax from the logits and each dropout mask from the forward's random state, one side at a
    time. Forward outputs are bit-identical to the autograd path; gradients equal it to rounding.

    Shapes: `query` `(B, h, A, d)` (already scaled), `key` `(B, h, T, d)`, `vision_values` `(B, h, A, d)`,
    `text_values` `(B, h, T, d)`; masks `(B, T)` and `(B, A)` or None. Returns `(B, h, A, d)` and `(B, h, T, d)`.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        query: torch.Tensor,
        key: torch.Tensor,
        vision_values: torch.Tensor,
        text_values: torch.Tensor,
        text_attention_mask: torch.Tensor | None,
        image_mask: torch.Tensor | None,
        clamp_value: float,
        dropout: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.matmul(query, key.transpose(-1, -2))  # (B, h, A, T), saved unclamped for the clamp's gradient
        dropping = dropout > 0.0
        ctx.rng_states = _rng_states(query.device) if dropping else None
        text_attn = _attention_probabilities(logits, text_attention_mask, image_mask, clamp_value, "text")
        vision_attn = _attention_probabilities(logits, text_attention_mask, image_mask, clamp_value, "vision")
        # Same order as the autograd path: the vision side draws its dropout mask first.
        vision_attn = F.dropout(vision_attn, p=dropout, training=dropping)
        text_attn = F.dropout(text_attn, p=dropout, training=dropping)
        vision_context = torch.matmul(vision_attn, text_values)
        text_context = torch.matmul(text_attn, vision_values)
        ctx.save_for_backward(query, key, vision_values, text_values, logits, text_attention_mask, image_mask)
        ctx.clamp_value, ctx.dropout = clamp_value, dropout
        device_type = query.device.type
        # The backward recomputes under the forward's autocast (as `torch.amp.custom_bwd`, for any device type).
        ctx.autocast = (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))
        return vision_context, text_context

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_vision_context: torch.Tensor, grad_text_context: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        device_type, enabled, dtype = ctx.autocast
        with torch.autocast(device_type, dtype=dtype, enabled=enabled):
            return Glipv2BiAttentionFunction._backward(ctx, grad_vision_context, grad_text_context)

    @staticmethod
    def _backward(
        ctx: torch.autograd.function.FunctionCtx, grad_vision_context: torch.Tensor, grad_text_context: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        query, key, vision_values, text_values, logits, text_attention_mask, image_mask = ctx.saved_tensors
        masks = _dropout_masks(ctx, logits, text_attention_mask, image_mask)
        grad_logits = None
        grad_values = {}
        for side, grad_context, values in (
            ("vision", grad_vision_context, text_values),
            ("text", grad_text_context, vision_values),
        ):
            probs = _attention_probabilities(logits, text_attention_mask, image_mask, ctx.clamp_value, side)
            dropped = probs if masks is None else probs * masks[side]
            grad_values[side] = torch.matmul(dropped.transpose(-1, -2), grad_context)
            del dropped
            grad_probs = torch.matmul(grad_context, values.transpose(-1, -2))
            if masks is not None:
                grad_probs = grad_probs * masks[side]
            grad = _softmax_backward(grad_probs, probs, dim=-1)  # (B, h, A, T) or (B, h, T, A)
            del probs, grad_probs
            if side == "vision":
                if text_attention_mask is not None:  # masked_fill passes no gradient to the filled logits
                    grad = grad.masked_fill(~text_attention_mask.bool()[:, None, None, :], 0.0)
                grad_logits = grad
            else:
                grad = grad.transpose(-1, -2)
                if image_mask is not None:
                    grad = grad.masked_fill(~image_mask.bool()[:, None, :, None], 0.0)
                grad_logits = grad_logits + grad
            del grad
        inside = (logits >= -ctx.clamp_value) & (logits <= ctx.clamp_value)  # the clamp's gradient
        grad_logits = grad_logits * inside
        grad_query = torch.matmul(grad_logits, key)
        grad_key = torch.matmul(grad_logits.transpose(-1, -2), query)
        return grad_query, grad_key, grad_values["text"], grad_values["vision"], None, None, None, None


def _rng_states(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CPU and (on an accelerator) device random states, to redraw the forward's dropout masks."""
    device_state = None
    if device.type != "cpu":
        device_state = getattr(torch, device.type).get_rng_state(device)
    return torch.get_rng_state(), device_state


def _dropout_masks(
    ctx: torch.autograd.function.FunctionCtx,
    logits: torch.Tensor,
    text_attention_mask: torch.Tensor | None,
    image_mask: torch.Tensor | None,
) -> dict[str, torch.Tensor] | None:
    """The forward's scaled dropout masks (`{"vision": (B, h, A, T), "text": (B, h, T, A)}`), redrawn from its random
    states on tensors of the same shapes and strides (a dropout mask does not depend on the values it drops)."""
    if ctx.rng_states is None:
        return None
    cpu_state, device_state = ctx.rng_states
    device = logits.device
    devices = [device] if device_state is not None else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.set_rng_state(cpu_state)
        if device_state is not None:
            getattr(torch, device.type).set_rng_state(device_state, device)
        ones = torch.ones_like(logits)
        # The text side's layout decides the order its mask is drawn in: as in `_attention_probabilities`, a
        # transposed view on CPU, a contiguous (B, h, T, A) tensor elsewhere.
        text_ones = ones.transpose(-1, -2) if device.type == "cpu" else ones.transpose(-1, -2).contiguous()
        vision = F.dropout(ones, p=ctx.dropout, training=True)
        text = F.dropout(text_ones, p=ctx.dropout, training=True)
    return {"vision": vision, "text": text}


class Glipv2BiAttention(nn.Module):
    """Bi-directional image<->text attention sharing one logit matrix (official `BiMultiHeadAttention`).

    Vision queries attend text keys (masked to real tokens); the transposed logits let text queries attend all
    image positions. Official name map: v_proj -> vision.q_proj, l_proj -> text.k_proj, values_v_proj ->
    vision.v_proj, values_l_proj -> text.v_proj, out_v_proj -> vision.o_proj, out_l_proj -> text.o_proj.
    """

    def __init__(
        self, vision_dim: int, text_dim: int, embed_dim: int, num_heads: int, dropout: float, clamp_value: float
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = dropout
        self.clamp_value = clamp_value
        # Set by `Glipv2PreTrainedModel._set_gradient_checkpointing` (transformers' switch) or the config.
        self.gradient_checkpointing = False
        self.vision = nn.ModuleDict(
            {
                "q_proj": nn.Linear(vision_dim, embed_dim),
                "v_proj": nn.Linear(vision_dim, embed_dim),
                "o_proj": nn.Linear(embed_dim, vision_dim),
            }
        )
        self.text = nn.ModuleDict(
            {
                "k_proj": nn.Linear(text_dim, embed_dim),
                "v_proj": nn.Linear(text_dim, embed_dim),
                "o_proj": nn.Linear(embed_dim, text_dim),
            }
        )

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, L, embed_dim)` -> `(B, heads, L, head_dim)`."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, heads, L, head_dim)` -> `(B, L, embed_dim)`."""
        batch, _, length, _ = x.shape
        return x.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)

    def _scaled_query(self, vision: torch.Tensor) -> torch.Tensor:
        """`q_proj(vision) * scale`: (B, A, embed_dim)."""
        q_proj = self.vision["q_proj"]
        if type(q_proj) is nn.Linear:
            # Scaling the (small) weight instead of the (A, embed_dim) output saves a full pass over it; exact when
            # head_dim is a power of 4 (GLIP: 256 -> 1/16), otherwise within one rounding. Wrapped projections (PEFT
            # LoRA adds its delta in forward) take the plain path.
            return F.linear(vision, q_proj.weight * self.scale, q_proj.bias * self.scale)
        return q_proj(vision) * self.scale

    def forward(
        self,
        vision: torch.Tensor,
        text: torch.Tensor,
        text_attention_mask: torch.Tensor | None,
        image_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`vision` (B, A, Cv), `text` (B, T, Ct), `text_attention_mask` (B, T) -> deltas of the same shapes.
        `image_mask` (B, A): the image positions the text may attend (a padded batch of several image sizes).

        Both directions share one logit matrix, so this is not `scaled_dot_product_attention` (which would compute
        the logits twice and cannot return the transposed softmax). The logits stay in one `(B, h, A, T)` buffer; on
        CPU the text side's softmax runs over its A axis instead of on a transposed copy, on GPUs over the last axis
        of a transposed copy (the faster kernel there).

        With `gradient_checkpointing` (config `gradient_checkpointing_bi_attention`), in training, the core runs in
        [`Glipv2BiAttentionFunction`], whose backward recomputes the softmaxes instead of keeping them.
        """
        query = self.split_heads(self._scaled_query(vision))
        key = self.split_heads(self.text["k_proj"](text))
        vision_values = self.split_heads(self.vision["v_proj"](vision))
        text_values = self.split_heads(self.text["v_proj"](text))
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            vision_context, text_context = Glipv2BiAttentionFunction.apply(
                query, key, vision_values, text_values, text_attention_mask, image_mask, self.clamp_value, self.dropout
            )
            vision_delta = self.vision["o_proj"](self.merge_heads(vision_context))
            return vision_delta, self.text["o_proj"](self.merge_heads(text_context))
        logits = torch.matmul(query, key.transpose(-1, -2))  # (B, h, A, T)
        in_place = not (torch.is_grad_enabled() and logits.requires_grad)  # autograd needs the unclamped logits
        logits = (logits.clamp_ if in_place else logits.clamp)(-self.clamp_value, self.clamp_value)
        # The official text side subtracts its max over A and clamps to +-clamp_value before the softmax: the softmax
        # subtracts the same max itself, and the clamp only touches values whose exp underflows to 0 anyway.
        text_logits = logits
        if image_mask is not None:
            text_logits = logits.masked_fill(~image_mask.bool()[:, None, :, None], torch.finfo(logits.dtype).min)
        if logits.device.type == "cpu":
            text_attn = text_logits.softmax(dim=-2).transpose(-1, -2)  # (B, h, T, A)
        else:
            # CUDA's softmax over a non-last axis (`cunn_SpatialSoftMax`) took 65% of a GLIP-T forward on an H200
            # (10 ms per layer at 640x640): a transposed copy and the last-axis kernel cost a fraction of that.
            text_attn = text_logits.transpose(-1, -2).softmax(dim=-1)  # (B, h, T, A), contiguous
        if text_attention_mask is not None:
            invalid = ~text_attention_mask.bool()[:, None, None, :]
            logits = (logits.masked_fill_ if in_place else logits.masked_fill)(invalid, torch.finfo(logits.dtype).min)
        vision_attn = logits.softmax(dim=-1)  # (B, h, A, T)

        vision_attn = F.dropout(vision_attn, p=self.dropout, training=self.training)
        text_attn = F.dropout(text_attn, p=self.dropout, training=self.training)
        vision_delta = self.vision["o_proj"](self.merge_heads(torch.matmul(vision_attn, text_values)))
        text_delta = self.text["o_proj"](self.merge_heads(torch.matmul(text_attn, vision_values)))
        return vision_delta, text_delta

    def text_delta(
        self, vision: torch.Tensor, text: torch.Tensor, image_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The text half alone: each token attends every image position, no token sees another.

        `vision` `(B, A, Cv)` and `text` `(B, T, Ct)` (both layer-normed) -> text delta `(B, T, Ct)`, with the same
        weights, scaling, clamping and max-subtraction as [`forward`]'s text side. `image_mask` `(B, A)`: the
        positions each token may attend (a padded batch of several image sizes).
        """
        query = self.split_heads(self.vision["q_proj"](vision) * self.scale)
        key = self.split_heads(self.text["k_proj"](text))
        values = self.split_heads(self.vision["v_proj"](vision))
        logits = torch.matmul(key, query.transpose(-1, -2)).clamp(-self.clamp_value, self.clamp_value)  # (B,h,T,A)
        if image_mask is not None:
            logits = logits.masked_fill(~image_mask.bool()[:, None, None, :], torch.finfo(logits.dtype).min)
        logits = logits - logits.amax(dim=-1, keepdim=True)
        probs = logits.clamp(-self.clamp_value, self.clamp_value).softmax(dim=-1)
        probs = F.dropout(probs, self.dropout, self.training)
        return self.text["o_proj"](self.merge_heads(torch.matmul(probs, values)))


class Glipv2VLFuse(nn.Module):
    """One VLFuse step (official `BiAttentionBlockForCheckpoint`).

    Both inputs are layer-normed; each residual is added to the *normed* input, scaled per channel by a layer scale
    initialised to 1 / num_fusion_layers: `x' = LN(x) + gamma * Attn(LN(x))`.
    """

    def __init__(
        self,
        vision_dim: int,
        text_dim: int,
        embed_dim: int,
        num_heads: int,
        dropout: float,
        layer_scale_init: float,
        clamp_value: float,
    ) -> None:
        super().__init__()
        self.vision_layer_norm = nn.LayerNorm(vision_dim)
        self.text_layer_norm = nn.LayerNorm(text_dim)
        self.attn = Glipv2BiAttention(vision_dim, text_dim, embed_dim, num_heads, dropout, clamp_value)
        self.vision_layer_scale = nn.Parameter(torch.full((vision_dim,), layer_scale_init))
        self.text_layer_scale = nn.Parameter(torch.full((text_dim,), layer_scale_init))

    def forward(
        self,
        vision_features: tuple[torch.Tensor, ...],
        text_features: torch.Tensor,
        text_attention_mask: torch.Tensor,
        padding: Glipv2PaddingMasks | None = None,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """`vision_features`: levels (B, C, H_l, W_l); `text_features` (B, T, D). Returns both, updated. With
        `padding`, the text attends only each image's own positions."""
        flat, sizes = flatten_levels(vision_features)
        vision = self.vision_layer_norm(flat)
        text = self.text_layer_norm(text_features)
        image_mask = padding.flat() if padding is not None else None
        vision_delta, text_delta = self.attn(vision, text, text_attention_mask, image_mask)
        vision = vision + self.vision_layer_scale * vision_delta
        text = text + self.text_layer_scale * text_delta
        return unflatten_levels(vision, sizes), text

    def fuse_text(
        self, vision: torch.Tensor, text_features: torch.Tensor, image_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The text side alone (the image does not attend the text): `LN(text) + gamma * TextAttn(vision, LN(text))`.

        `vision` `(B, A, Cv)` is the already layer-normed flat image ([`Glipv2FusionLayer.image_step`]);
        `text_features` `(B, T, D)`; `image_mask` `(B, A)` the positions of each image in a padded batch.
        """
        text = self.text_layer_norm(text_features)
        return text + self.text_layer_scale * self.attn.text_delta(vision, text, image_mask)


class Glipv2TextLayer(nn.Module):
    """The extra BERT-style (post-norm) text layer after each VLFuse (official `BertEncoderLayer`)."""

    def __init__(
        self, hidden_size: int, num_heads: int, intermediate_size: int, hidden_act: str, dropout: float, eps: float
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.self_attn = nn.ModuleDict(
            {name: nn.Linear(hidden_size, hidden_size) for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
        )
        self.self_attn_layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.final_layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.activation = ACT2FN[hidden_act]
        self.dropout = dropout

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`hidden_states` (B, T, D); `attention_mask` (B, T) with 1 for real tokens, or a (B, 1, T, T) boolean
        self-attention mask (True where query t may attend key s, e.g. causal)."""
        batch, length, dim = hidden_states.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

        query, key, value = (heads(self.self_attn[n](hidden_states)) for n in ("q_proj", "k_proj", "v_proj"))
        mask = attention_mask.bool()[:, None, None, :] if attention_mask.dim() == 2 else attention_mask.bool()
        attn = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        attn = self.self_attn["o_proj"](attn.transpose(1, 2).reshape(batch, length, dim))
        hidden_states = self.self_attn_layer_norm(hidden_states + F.dropout(attn, self.dropout, self.training))
        ffn = self.fc2(self.activation(self.fc1(hidden_states)))
        return self.final_layer_norm(hidden_states + F.dropout(ffn, self.dropout, self.training))


class Glipv2HardSigmoid(nn.Module):
    """`relu6(x + 3) / 6` (official `h_sigmoid`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class Glipv2DyReLU(nn.Module):
    """Dynamic ReLU with two learned piecewise-linear branches per channel (official `DYReLU`, K2, with bias)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.channels = channels
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels * 4),
            Glipv2HardSigmoid(),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`x` (B, C, H, W); the coefficients come from its mean over the positions of `mask` (B, H, W) (all
        positions without one)."""
        coeffs = self.fc(masked_spatial_mean(x, mask)).view(x.shape[0], self.channels * 4, 1, 1)
        a1, b1, a2, b2 = torch.split(coeffs, self.channels, dim=1)
        # official: lambda_a = 2, init_a = (1, 0), init_b = (0, 0)
        a1 = (a1 - 0.5) * 2.0 + 1.0
        a2 = (a2 - 0.5) * 2.0
        b1 = b1 - 0.5
        b2 = b2 - 0.5
        return torch.maximum(x * a1 + b1, x * a2 + b2)


class Glipv2DyHeadConv(nn.Module):
    """A DyHead 3x3 conv (deformable or plain) followed by group norm (official `Conv3x3Norm`)."""

    def __init__(self, channels: int, stride: int, deformable: bool, norm_groups: int) -> None:
        super().__init__()
        self.deformable = deformable
        if deformable:
            self.conv = Glipv2ModulatedDeformConv2d(channels, channels, stride=stride)
        else:
            self.conv = nn.Conv2d(channels, channels, 3, stride=stride, padding=1)
        self.norm = nn.GroupNorm(norm_groups, channels) if norm_groups else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        offset: torch.Tensor | None,
        mask: torch.Tensor | None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`valid` (B, H_out, W_out): the output positions the group norm's statistics cover (a padded batch)."""
        x = self.conv(x, offset, mask) if self.deformable else self.conv(x)
        return group_norm(x, self.norm, valid)


class Glipv2DyHeadBlock(nn.Module):
    """One DyHead block over all levels (official `DyConv`): scale-aware fusion of each level with its neighbours.

    For level l: `same_conv(x_l)`, `finer_conv(x_{l-1})` (stride 2) and `coarser_conv(x_{l+1})` upsampled; all three
    use level l's offset and mask (the coarser one reads it as a flat buffer, see `deformable_conv.py`).
    """

    def __init__(self, channels: int, deformable: bool, dyrelu: bool, scale_attention: bool, norm_groups: int) -> None:
        super().__init__()
        self.coarser_conv = Glipv2DyHeadConv(channels, 1, deformable, norm_groups)  # official DyConv[0]
        self.same_conv = Glipv2DyHeadConv(channels, 1, deformable, norm_groups)  # official DyConv[1]
        self.finer_conv = Glipv2DyHeadConv(channels, 2, deformable, norm_groups)  # official DyConv[2]
        self.scale_attention = (
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, 1, 1), nn.ReLU(inplace=True))
            if scale_attention
            else None
        )
        self.hard_sigmoid = Glipv2HardSigmoid()
        self.activation = Glipv2DyReLU(channels) if dyrelu else nn.ReLU()
        # 18 offsets + 9 masks per location.
        self.offset = nn.Conv2d(channels, 27, 3, padding=1) if deformable else None

    def forward(
        self, features: tuple[torch.Tensor, ...], padding: Glipv2PaddingMasks | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Levels `(B, C, H_l, W_l)` -> the same shapes. With `padding` (a batch of several image sizes) every image
        is computed as if it were alone: zeros beyond its border, norms and poolings over its own positions, the
        coarser branch and its offsets resampled per image."""
        masks = padding.masks if padding is not None else (None,) * len(features)
        features = tuple(zero_outside(feature, mask) for feature, mask in zip(features, masks))
        outputs = []
        for level, feature in enumerate(features):
            offset = mask = None
            if self.offset is not None:
                offset_mask = self.offset(feature)
                offset, mask = offset_mask[:, :18], offset_mask[:, 18:].sigmoid()
            branches = [self.same_conv(feature, offset, mask, masks[level])]
            if level > 0:
                branches.append(self.finer_conv(features[level - 1], offset, mask, masks[level]))
            if level < len(features) - 1:
                branches.append(self._coarser_branch(features, level, offset, mask, padding))
            stacked = torch.stack(branches)
            if self.scale_attention is not None:
                pooled = [masked_spatial_mean(branch, masks[level])[..., None, None] for branch in branches]
                weights = self.hard_sigmoid(torch.stack([self.scale_attention[1:](p) for p in pooled]))
                stacked = stacked * weights
            merged = stacked.mean(dim=0)
            outputs.append(
                self.activation(merged, masks[level]) if self.activation_takes_mask else self.activation(merged)
            )
        return tuple(outputs)

    @property
    def activation_takes_mask(self) -> bool:
        return isinstance(self.activation, Glipv2DyReLU)

    def _coarser_branch(
        self,
        features: tuple[torch.Tensor, ...],
        level: int,
        offset: torch.Tensor | None,
        mask: torch.Tensor | None,
        padding: Glipv2PaddingMasks | None,
    ) -> torch.Tensor:
        """`coarser_conv(x_{l+1})` with level l's offsets, upsampled to level l (official: `F.upsample_bilinear`,
        i.e. `align_corners=True`)."""
        coarser, size = features[level + 1], features[level].shape[-2:]
        if padding is None:
            out = self.coarser_conv(coarser, offset, mask)
            return upsample_aligned(out, size)
        sizes = (padding.sizes[level + 1], padding.sizes[level])
        if offset is not None:  # the official kernel reads level l's offsets as a flat buffer: per image
            shape = tuple(coarser.shape[-2:])
            offset = reinterpret_offset_regions(offset, padding.sizes[level], padding.sizes[level + 1], shape)
            mask = reinterpret_offset_regions(mask, padding.sizes[level], padding.sizes[level + 1], shape)
        out = self.coarser_conv(coarser, offset, mask, padding.masks[level + 1])
        return upsample_aligned(out, size, sizes)


class Glipv2FusionLayer(GradientCheckpointingLayer):
    """One fusion layer: VLFuse, then the extra text layer (text side) and a DyHead block (image side)."""

    def __init__(self, config, text_config) -> None:  # noqa: ANN001 - configs
        super().__init__()
        self.vl_fuse = None
        self.text_layer = None
        if config.use_early_fusion:
            self.vl_fuse = Glipv2VLFuse(
                config.hidden_size,
                text_config.hidden_size,
                config.fusion_embed_dim,
                config.fusion_num_heads,
                config.fusion_attention_dropout,
                config.layer_scale_init,
                config.fusion_clamp_value,
            )
            self.text_layer = Glipv2TextLayer(
                text_config.hidden_size,
                text_config.num_attention_heads,
                text_config.intermediate_size,
                text_config.hidden_act,
                text_config.hidden_dropout_prob,
                text_config.layer_norm_eps,
            )
        self.dyhead = Glipv2DyHeadBlock(
            config.hidden_size,
            config.use_deformable_conv,
            config.use_dyrelu,
            config.use_scale_attention,
            config.dyhead_norm_groups,
        )

    def forward(
        self,
        text_features: torch.Tensor,
        text_attention_mask: torch.Tensor,
        *vision_features: torch.Tensor,
        padding: Glipv2PaddingMasks | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Levels are passed as trailing positional tensors so gradient checkpointing sees plain tensors; `padding`
        masks a batch of several image sizes.

        Returns `(text_features, *vision_features)`.
        """
        if self.vl_fuse is not None:
            vision_features, text_features = self.vl_fuse(vision_features, text_features, text_attention_mask, padding)
            text_features = self.text_layer(text_features, text_attention_mask)
        return (text_features, *self.dyhead(tuple(vision_features), padding))

    def image_step(
        self, vision_features: tuple[torch.Tensor, ...], padding: Glipv2PaddingMasks | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The image side when images do not attend text: VLFuse keeps `LN(x)` (no text->image delta), then DyHead
        (`padding`: a batch of several image sizes, see `padding.py`).

        Returns the layer-normed flat image `(B, A, C)` (what the text attends in [`text_step`]) and the next levels.
        """
        flat, sizes = flatten_levels(vision_features)
        normed = self.vl_fuse.vision_layer_norm(flat)
        return normed, self.dyhead(unflatten_levels(normed, sizes), padding)

    def text_step(
        self,
        text_features: torch.Tensor,
        vision: torch.Tensor,
        attention_mask: torch.Tensor,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The text side against a fixed image: VLFuse's image->text half (attending `image_mask`'s positions when
        given), then the extra text layer under `attention_mask` ((B, T) padding or (B, 1, T, T) boolean, see
        [`Glipv2TextLayer`])."""
        return self.text_layer(self.vl_fuse.fuse_text(vision, text_features, image_mask), attention_mask)


class Glipv2DeepFusion(nn.Module):
    """The stack of [`Glipv2FusionLayer`] (official `dyhead_tower`)."""

    def __init__(self, config, text_config) -> None:  # noqa: ANN001 - configs
        super().__init__()
        self.layers = nn.ModuleList(Glipv2FusionLayer(config, text_config) for _ in range(config.num_fusion_layers))

    def forward(
        self,
        vision_features: tuple[torch.Tensor, ...],
        text_features: torch.Tensor,
        text_attention_mask: torch.Tensor,
        padding: Glipv2PaddingMasks | None = None,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Returns fused `(vision_features, text_features)` with the input shapes (`padding`: see
        `padding.py`)."""
        for layer in self.layers:
            text_features, *levels = layer(text_features, text_attention_mask, *vision_features, padding=padding)
            vision_features = tuple(levels)
        return vision_features, text_features

    def _check_early_fusion(self) -> None:
        if self.layers[0].vl_fuse is None:
            raise ValueError(
                "The image and text sides need use_early_fusion=True: without VLFuse there is no text side."
            )

    def image_side(
        self, vision_features: tuple[torch.Tensor, ...], padding: Glipv2PaddingMasks | None = None
    ) -> torch.Tensor:
        """Every layer's image input when images attend only images: `(B, num_layers, A, C)`, text-independent
        (`padding`: a batch of several image sizes; `padding.flat()` is then the memory's mask for [`text_side`])."""
        self._check_early_fusion()
        memory = []
        for layer in self.layers:
            normed, vision_features = layer.image_step(vision_features, padding)
            memory.append(normed)
        return torch.stack(memory, dim=1)

    def text_side(
        self,
        text_features: torch.Tensor,
        image_memory: torch.Tensor,
        attention_mask: torch.Tensor,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Every layer's text side against [`image_side`]'s memory `(B, num_layers, A, C)` (only `image_mask`'s
        positions `(B, A)` when given), self-attention under `attention_mask` (e.g. causal). Returns `(B, T, D)`.
        Honours gradient checkpointing per layer."""
        self._check_early_fusion()
        for index, layer in enumerate(self.layers):
            image = image_memory[:, index]
            if layer.gradient_checkpointing and layer.training and torch.is_grad_enabled():
                text_features = checkpoint(
                    layer.text_step, text_features, image, attention_mask, image_mask, use_reentrant=False
                )
            else:
                text_features = layer.text_step(text_features, image, attention_mask, image_mask)
        return text_features


__all__ = [
    "Glipv2BiAttention",
    "Glipv2BiAttentionFunction",
    "Glipv2DeepFusion",
    "Glipv2DyHeadBlock",
    "Glipv2DyReLU",
    "Glipv2FusionLayer",
    "Glipv2TextLayer",
    "Glipv2VLFuse",
    "flatten_levels",
    "spatial_shapes_tensor",
    "unflatten_levels",
]
