"""GLIPv2-style models: the shared vision-language backbone and the base class of every task class.

State-dict layout: `model.*` is the backbone + fusion, `<task>_head.*` a head; every task class loads any
checkpoint of the family and ignores the heads it does not use. The task classes live in one modeling file per
family (`modeling_glipv2_detection`, `_vqa`, `_captioning`, `_zero_shot`, `_pretraining`).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoBackbone, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .auto_map import TASK_CLASS_BY_NAME, write_auto_map
from .backbone import Glipv2FeaturePyramid
from .configuration_glipv2 import GRADIENT_CHECKPOINTING_FIELDS, Glipv2Config
from .deformable_conv import Glipv2ModulatedDeformConv2d
from .fusion import (
    Glipv2BiAttention,
    Glipv2DeepFusion,
    Glipv2DyHeadBlock,
    Glipv2DyHeadConv,
    Glipv2VLFuse,
    spatial_shapes_tensor,
)
from .heads import (
    HEAD_NAMES,
    Glipv2ContrastiveHead,
    Glipv2GroundingHead,
    Glipv2LMHead,
    Glipv2MaskHead,
    Glipv2Scale,
    Glipv2VqaHead,
    unexpected_head_keys,
)
from .padding import Glipv2PaddingMasks, backbone_sees_each_image_alone, own_padded_sizes, zero_outside

# The text encoder's word embeddings, to which the LM heads' decoders are tied.
WORD_EMBEDDINGS = "model.text_model.embeddings.word_embeddings.weight"


@dataclass
class Glipv2ModelOutput(ModelOutput):
    """Output of [`Glipv2Model`].

    Args:
        vision_features (`tuple[torch.FloatTensor]`): fused pyramid levels P3..P7, each `(B, hidden_size, H_l, W_l)`.
        text_features (`torch.FloatTensor` of shape `(B, T, text_hidden_size)`): fused text features.
        text_attention_mask (`torch.LongTensor` of shape `(B, T)`): 1 for real tokens.
        spatial_shapes (`torch.LongTensor` of shape `(num_levels, 2)`): `(H_l, W_l)` of each level.
        image_sizes (`torch.LongTensor` of shape `(B, 2)`): unpadded `(height, width)` of each input image.
        pre_fusion_vision_features (`tuple[torch.FloatTensor]`): FPN levels before fusion.
        pre_fusion_text_features (`torch.FloatTensor` of shape `(B, T, text_hidden_size)`): text encoder output.
        vision_masks (`tuple[torch.BoolTensor]`, *optional*): for a batch of several image sizes, per level
            `(B, H_l, W_l)`, True inside each image's own padded region (see `padding.py`); None otherwise.
        mask_features (`torch.FloatTensor` of shape `(B, hidden_size, H_2, W_2)`, *optional*): P2, the stride-4
            level before fusion that the mask head reads with the fused P3 (`config.use_mask_head`); None otherwise.
    """

    vision_features: tuple[torch.FloatTensor, ...] | None = None
    text_features: torch.FloatTensor | None = None
    text_attention_mask: torch.LongTensor | None = None
    spatial_shapes: torch.LongTensor | None = None
    image_sizes: torch.LongTensor | None = None
    pre_fusion_vision_features: tuple[torch.FloatTensor, ...] | None = None
    pre_fusion_text_features: torch.FloatTensor | None = None
    vision_masks: tuple[torch.BoolTensor, ...] | None = None
    mask_features: torch.FloatTensor | None = None


def image_sizes_from_mask(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> torch.Tensor:
    """Unpadded `(height, width)` per image `(B, 2)` from a `(B, H, W)` pixel mask (the full size without one)."""
    batch, _, height, width = pixel_values.shape
    if pixel_mask is None:
        return torch.tensor([[height, width]], device=pixel_values.device).expand(batch, 2)
    heights = pixel_mask.amax(dim=2).sum(dim=1)
    widths = pixel_mask.amax(dim=1).sum(dim=1)
    return torch.stack([heights, widths], dim=1).long()


def return_output(output: ModelOutput, return_dict: bool | None) -> ModelOutput | tuple:
    """`output`, or its tuple form when `return_dict` is False (the transformers convention)."""
    return output if return_dict is not False else output.to_tuple()


def _broadcast_batch(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expands a batch of one to the other's batch size; any other mismatch is an error naming both."""
    if a.shape[0] == b.shape[0]:
        return a, b
    if a.shape[0] == 1:
        return a.expand(b.shape[0], *a.shape[1:]), b
    if b.shape[0] == 1:
        return a, b.expand(a.shape[0], *b.shape[1:])
    raise ValueError(
        f"Batch sizes differ: {name_a} has {a.shape[0]} entries but {name_b} has {b.shape[0]}. Give one prompt per "
        "image, or a single prompt (or image) for the whole batch."
    )


def _outermost_checkpoint_layers(root: nn.Module) -> list[nn.Module]:
    """The `GradientCheckpointingLayer`s under `root` that no other one contains (Swin: stages, not their blocks)."""
    found = []
    for child in root.children():
        found.extend([child] if isinstance(child, GradientCheckpointingLayer) else _outermost_checkpoint_layers(child))
    return found


@contextmanager
def _module_states(snapshot: list[tuple[nn.Module, dict[str, Any]]]) -> Iterator[None]:
    """Puts back the attributes (hooks included) each module had in `snapshot`, restoring today's on exit."""
    current = [(module, dict(vars(module))) for module, _ in snapshot]
    try:
        for module, state in snapshot:
            vars(module).clear()
            vars(module).update(state)
        yield
    finally:
        for module, state in current:
            vars(module).clear()
            vars(module).update(state)


def _checkpoint_under_forward_hooks(
    block: nn.Module, checkpoint_func: Callable, function: Callable, *args: Any, **kwargs: Any
) -> Any:
    """`checkpoint_func(function, *args)` whose backward recompute runs under the hooks `block`'s modules had in the
    forward: `padding.backbone_sees_each_image_alone` hooks the backbone for one forward only, and a recompute
    without them would give other activations (a batch of several image sizes)."""
    keywords = checkpoint_func.keywords if isinstance(checkpoint_func, partial) else {}
    if keywords.get("use_reentrant", True) is False:  # `context_fn` is a non-reentrant option
        snapshot = [
            (module, {k: copy.copy(v) if isinstance(v, dict) else v for k, v in vars(module).items()})
            for module in block.modules()
        ]
        kwargs["context_fn"] = lambda: (nullcontext(), _module_states(snapshot))
    return checkpoint_func(function, *args, **kwargs)


def apply_gradient_checkpointing(
    model: nn.Module, config: Glipv2Config, checkpoint_func: Callable | None = None
) -> None:
    """Sets every part's activation checkpointing from `config.gradient_checkpointing_*` (see [`Glipv2Config`]):
    the backbone's stages, the text encoder's layers, the fusion layers and the bi-attentions. Checkpointing runs
    only in training with gradients enabled; `checkpoint_func` defaults to non-reentrant `torch.utils.checkpoint`."""
    checkpoint_func = checkpoint_func or partial(checkpoint, use_reentrant=False)
    for module in model.modules():
        if isinstance(module, Glipv2Model):
            parts = (
                (module.vision_backbone, config.gradient_checkpointing_vision),
                (module.text_model, config.gradient_checkpointing_text),
                (module.fusion, config.gradient_checkpointing_fusion),
            )
            for root, enable in parts:
                blocks = _outermost_checkpoint_layers(root)
                for other in root.modules():  # nested layers and the old-style encoder flags stay off
                    if hasattr(other, "gradient_checkpointing") and not isinstance(other, Glipv2BiAttention):
                        other.gradient_checkpointing = False
                for block in blocks:
                    block.gradient_checkpointing = enable
                    block._gradient_checkpointing_func = (
                        partial(_checkpoint_under_forward_hooks, block, checkpoint_func)
                        if root is module.vision_backbone
                        else checkpoint_func
                    )
        elif isinstance(module, Glipv2BiAttention):
            module.gradient_checkpointing = config.gradient_checkpointing_bi_attention


class Glipv2PreTrainedModel(PreTrainedModel):
    """Base class: config class, the weight initialisation of every module and head (official GLIP inits), and
    saving: every `save_pretrained` (and so `push_to_hub`) folder is a complete Hub repository (see `auto_map.py`).

    A task class listed in `auto_map.TASK_CLASSES` ignores, when loading, the heads of the others.
    """

    config_class = Glipv2Config
    config: Glipv2Config
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["Glipv2FusionLayer"]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        entry = TASK_CLASS_BY_NAME.get(cls.__name__)
        if entry is not None:  # a checkpoint of another class (e.g. every head) is not an error for this one
            cls._keys_to_ignore_on_load_unexpected = unexpected_head_keys(entry.heads)

    def head_names(self) -> list[str]:
        """The heads this model holds, in `heads.HEAD_NAMES` order."""
        return [name for name in HEAD_NAMES if name in self._modules]

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        is_main_process: bool = True,
        push_to_hub: bool = False,
        **kwargs: Any,
    ) -> None:
        """`PreTrainedModel.save_pretrained`, then the folder's `config.json` gets an `auto_map` entry for every task
        class the checkpoint serves and `custom_pipelines` for this library's pipelines, with their code beside the
        weights: the folder (or the pushed repository) loads with `trust_remote_code=True` where glipv2 is not
        installed. `push_to_hub=True` uploads the completed folder."""
        hub = {key: kwargs.pop(key) for key in ("repo_id", "commit_message", "create_pr", "private") if key in kwargs}
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        should_save = getattr(self, "should_save_on_this_rank", None)
        if not (should_save(is_main_process) if should_save else is_main_process):
            return
        if (Path(save_directory) / "config.json").is_file():  # an adapter-only save writes no config
            write_auto_map(save_directory, self.head_names())
        if push_to_hub:
            self._push_folder(save_directory, token=kwargs.get("token"), **hub)

    def _push_folder(
        self,
        folder: str | os.PathLike,
        repo_id: str | None = None,
        commit_message: str | None = None,
        create_pr: bool = False,
        private: bool | None = None,
        token: str | bool | None = None,
    ) -> Any:
        """Uploads a saved folder as `save_pretrained(..., push_to_hub=True)` does in transformers."""
        from huggingface_hub import create_repo

        repo_id = repo_id or os.fspath(folder).rstrip(os.path.sep).split(os.path.sep)[-1]
        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        return self._upload_modified_files(
            folder, repo_id, {}, commit_message=commit_message, token=token, create_pr=create_pr
        )

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func: Callable = checkpoint, every_n_layers: int = 1
    ) -> None:
        """transformers' switch (`gradient_checkpointing_enable()` / `activation_checkpointing_enable()` and their
        `disable`): sets every `config.gradient_checkpointing_*` field to `enable` and applies them, so the switch is
        saved with the config. Swin is checkpointed per stage (not per stage and block, as transformers would)."""
        if enable and every_n_layers != 1:
            raise ValueError("Glipv2 checkpoints every layer of each part: every_n_layers must be 1.")
        for field in GRADIENT_CHECKPOINTING_FIELDS:
            setattr(self.config, field, enable)
        apply_gradient_checkpointing(self, self.config, gradient_checkpointing_func if enable else None)

    def enable_input_require_grads(self) -> None:
        """Hooks the text word embeddings only. transformers' version hooks every sub-model's input embeddings,
        and the vision backbone's (Swin patch embeddings) return a tuple, which its hook cannot mark."""

        def make_output_require_grad(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:  # noqa: ARG001
            output.requires_grad_(True)

        self._require_grads_hooks = [self.get_input_embeddings().register_forward_hook(make_output_require_grad)]
        self._require_grads_hook = self._require_grads_hooks[0]

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        """transformers skips, for code outside its package, every module without parameters of its own (it assumes
        such code writes weights in place). Ours initialises through `transformers.initialization`, which leaves
        loaded tensors alone, and needs the parent-level inits (bi-attention, DyHead, FPN): opt out of that shortcut.
        """
        super()._initialize_weights(module, is_custom_code=False)

    @staticmethod
    def _init_patch_embedding(model: nn.Module) -> None:
        """The official Swin keeps PyTorch's default init (non-zero bias) for its patch-embedding conv; transformers
        zeroes the bias. With a zero bias, zero-padded image regions give constant patch vectors whose layer norm has
        zero variance, so its gradient is scaled by 1/sqrt(eps) (measured: a gradient norm of 1e12 at the first step
        of a randomly initialised Swin, which global-norm clipping turns into no update at all)."""
        for name, conv in model.vision_backbone.named_modules():
            if name.endswith("patch_embeddings.projection") and isinstance(conv, nn.Conv2d):
                init.kaiming_uniform_(conv.weight, a=math.sqrt(5))
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                init.uniform_(conv.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def _init_weights(self, module: nn.Module) -> None:
        """Generic inits first (children are visited before parents), then the official GLIP ones and the heads'."""
        if isinstance(module, nn.Conv2d) and module in _fine_level_convs(self):
            return  # P2's convolutions: initialised with the FPN, from their own generator
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, Glipv2BiAttention):  # fuse_helper.BiMultiHeadAttention._reset_parameters
            for linear in [*module.vision.values(), *module.text.values()]:
                init.xavier_uniform_(linear.weight)
                init.zeros_(linear.bias)
        elif isinstance(module, Glipv2VLFuse):
            init.constant_(module.vision_layer_scale, self.config.layer_scale_init)
            init.constant_(module.text_layer_scale, self.config.layer_scale_init)
        elif isinstance(module, Glipv2DyHeadConv):  # vldyhead.DyConv.init_weights: N(0, 0.01), zero bias
            init.normal_(module.conv.weight, std=0.01)
            init.zeros_(module.conv.bias)
        elif isinstance(module, Glipv2ModulatedDeformConv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            init.zeros_(module.bias)
        elif isinstance(module, Glipv2DyHeadBlock):
            if module.scale_attention is not None:
                init.normal_(module.scale_attention[1].weight, std=0.01)
                init.zeros_(module.scale_attention[1].bias)
            if module.offset is not None:  # start from the regular 3x3 grid with masks at 0.5
                init.zeros_(module.offset.weight)
                init.zeros_(module.offset.bias)
        elif isinstance(module, Glipv2Model):
            self._init_patch_embedding(module)
        elif isinstance(module, Glipv2FeaturePyramid):  # fpn.conv_with_kaiming_uniform / LastLevelP6P7
            for conv in [*module.lateral_convs, *module.output_convs, *module.extra_convs]:
                init.kaiming_uniform_(conv.weight, a=1)
                init.zeros_(conv.bias)
            if module.has_fine_level:
                # P2 (the mask head's level) draws from a generator of its own: drawing from the global one would
                # change the initial weights of every module after it, so a model with the mask head would not start
                # from the shared weights the same seed gives a model without it
                generator = _private_generator(module.fine_lateral_conv.weight)
                for conv in (module.fine_lateral_conv, module.fine_output_conv):
                    init.kaiming_uniform_(conv.weight, a=1, generator=generator)
                    init.zeros_(conv.bias)
        elif isinstance(module, Glipv2GroundingHead):  # vldyhead.VLDyHead.__init__
            for conv in (module.bbox_pred, module.centerness):
                init.normal_(conv.weight, std=0.01)
                init.zeros_(conv.bias)
            # dot_product_projection_text keeps nn.Linear's default init in the official code
            init.kaiming_uniform_(module.text_projection.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.text_projection.in_features)
            init.uniform_(module.text_projection.bias, -bound, bound)
            init.constant_(module.log_scale, self.config.log_scale_init)
            init.zeros_(module.bias_lang)
            init.constant_(module.bias0, module.prior_bias)
        elif isinstance(module, Glipv2Scale):
            init.ones_(module.scale)
        elif isinstance(module, Glipv2VqaHead):
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
        elif isinstance(module, Glipv2MaskHead):  # Mask R-CNN: kaiming normal (fan_out, relu), zero bias
            for conv in [*module.convs, module.upsample]:
                init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                init.zeros_(conv.bias)
            init.normal_(module.predictor.weight, std=0.001)
            init.zeros_(module.predictor.bias)


def _fine_level_convs(model: nn.Module) -> tuple[nn.Module, ...]:
    """The convolutions of the FPN's P2 in `model` (none without the mask head)."""
    core = model if isinstance(model, Glipv2Model) else getattr(model, "model", None)
    fpn = getattr(core, "fpn", None)
    if fpn is None or not fpn.has_fine_level:
        return ()
    return fpn.fine_lateral_conv, fpn.fine_output_conv


def _private_generator(like: torch.Tensor) -> torch.Generator | None:
    """A generator seeded from the global seed, on `like`'s device (None on the meta device, which draws nothing)."""
    if like.device.type == "meta":
        return None
    return torch.Generator(device=like.device).manual_seed(torch.initial_seed() % 2**63 + 2)


def _backbone_config(config: Glipv2Config) -> Any:
    """The vision backbone's config: `config.vision_config`, plus its stride-4 stage (the first after the stem) when
    the mask head needs P2. The saved config is left as it is, so the same checkpoint loads with or without masks."""
    if not config.use_mask_head:
        return config.vision_config
    vision = copy.deepcopy(config.vision_config)
    finest = vision.stage_names[1]
    vision.out_features = [finest] + [name for name in vision.out_features if name != finest]
    return vision


class Glipv2Model(Glipv2PreTrainedModel):
    """The shared backbone: image backbone + FPN, text encoder, and GLIP's deep fusion.

    `encode_image`, `encode_text` and `fuse` are public so that callers can run the image backbone once per image
    and reuse encoded prompts across images (large vocabularies, prompt chunks).
    """

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.vision_backbone = AutoBackbone.from_config(_backbone_config(config))
        in_channels = list(self.vision_backbone.channels)
        fine_channels = in_channels.pop(0) if config.use_mask_head else None
        if len(in_channels) != 3:
            raise ValueError(
                f"vision_config.out_features must select 3 feature maps (strides 8, 16, 32); got {in_channels}."
            )
        self.fpn = Glipv2FeaturePyramid(
            in_channels,
            config.hidden_size,
            config.num_feature_levels,
            fine_channels,
            detach_fine_inputs=not config.mask_loss_to_backbone,
        )
        self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False)
        self.fusion = Glipv2DeepFusion(config, config.text_config)
        self.post_init()
        apply_gradient_checkpointing(self, config)

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_model.set_input_embeddings(value)

    # Mask the padding a batch of several image sizes adds (`padding.py`); False gives the official behaviour, where
    # an image's outputs depend on its batch neighbours (kept to measure that difference).
    mask_batch_padding: bool = True

    @property
    def padding_divisor(self) -> int:
        """What an image alone is padded to a multiple of: the coarsest backbone stride (GLIP's SIZE_DIVISIBILITY)."""
        return int(self.config.anchor_strides[2])

    def encode_image(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """`pixel_values` (B, 3, H, W) -> FPN levels P3..P7 before fusion, each `(B, hidden_size, H_l, W_l)`, and
        with `config.use_mask_head` P2 (stride 4) after them ([`split_levels`] separates it).

        With `pixel_mask` (B, H, W) and images of several sizes, the backbone and the FPN see each image as if it
        were alone (zeros beyond its own padded size); see `padding.py`.
        """
        return self._encode_image(pixel_values, self.own_sizes(pixel_mask))

    def own_sizes(self, pixel_mask: torch.Tensor | None) -> list[tuple[int, int]] | None:
        """Each image's size padded alone (`padding.own_padded_sizes`), or None when the batch needs no masking (or
        `mask_batch_padding` is off)."""
        return own_padded_sizes(pixel_mask, self.padding_divisor) if self.mask_batch_padding else None

    def level_padding(
        self, own_sizes: list[tuple[int, int]] | None, levels: tuple[torch.Tensor, ...]
    ) -> Glipv2PaddingMasks | None:
        """Where each image lies on the fused levels P3..P7 (None without `own_sizes`, or when `levels` hold another
        batch, e.g. one image broadcast over several prompts)."""
        if own_sizes is None or levels[0].shape[0] != len(own_sizes):
            return None
        shapes = [tuple(level.shape[-2:]) for level in levels]
        return Glipv2PaddingMasks.for_levels(own_sizes, shapes, self.config.anchor_strides, levels[0].device)

    def _encode_image(
        self, pixel_values: torch.Tensor, own_sizes: list[tuple[int, int]] | None
    ) -> tuple[torch.Tensor, ...]:
        if own_sizes is None:
            return self.fpn(tuple(self.vision_backbone(pixel_values).feature_maps))
        with backbone_sees_each_image_alone(self.vision_backbone, own_sizes, tuple(pixel_values.shape[-2:])):
            maps = tuple(self.vision_backbone(pixel_values).feature_maps)
        strides, device = list(self.config.anchor_strides), pixel_values.device
        fine_stride = strides[0] // 2  # P2
        map_strides = [fine_stride] + strides[: len(maps) - 1] if self.fpn.has_fine_level else strides[: len(maps)]
        shapes = [tuple(feature.shape[-2:]) for feature in maps]
        padding = Glipv2PaddingMasks.for_levels(own_sizes, shapes, map_strides, device)
        maps = tuple(zero_outside(feature, mask) for feature, mask in zip(maps, padding.masks))
        fine = [shapes.pop(0)] if self.fpn.has_fine_level else []
        for _ in range(self.config.num_feature_levels - len(shapes)):  # stride-2 convolutions: ceil(size / 2)
            shapes.append((-(-shapes[-1][0] // 2), -(-shapes[-1][1] // 2)))
        level_strides = strides[: len(shapes)] + [fine_stride] * len(fine)
        return self.fpn(maps, Glipv2PaddingMasks.for_levels(own_sizes, shapes + fine, level_strides, device))

    def split_levels(
        self, image_features: tuple[torch.Tensor, ...]
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
        """[`encode_image`] output -> (P3..P7, P2 or None)."""
        levels = self.config.num_feature_levels
        return tuple(image_features[:levels]), (image_features[levels] if len(image_features) > levels else None)

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`input_ids` (B, T) -> text encoder features `(B, T, text_hidden_size)` before fusion."""
        if input_ids.shape[-1] > self.config.max_text_length:
            raise ValueError(
                f"The prompt has {input_ids.shape[-1]} tokens, more than max_text_length="
                f"{self.config.max_text_length}; split the labels into several prompts "
                "(Glipv2Processor.build_prompts)."
            )
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state

    def fuse(
        self,
        vision_features: tuple[torch.Tensor, ...],
        text_features: torch.Tensor,
        text_attention_mask: torch.Tensor,
        padding: Glipv2PaddingMasks | None = None,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Runs the deep-fusion stack; batch sizes must already agree (`padding`: see `padding.py`)."""
        return self.fusion(vision_features, text_features, text_attention_mask, padding)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        image_features: tuple[torch.Tensor, ...] | None = None,
        text_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> Glipv2ModelOutput | tuple:
        """
        Args:
            pixel_values: `(B, 3, H, W)` from [`Glipv2ImageProcessor`].
            input_ids, attention_mask, token_type_ids: `(B, T)` tokenized prompts (one per image, or one for all).
            pixel_mask: `(B, H, W)`, 1 on real pixels.
            image_features: precomputed `encode_image` output (skips the image backbone).
            text_features: precomputed `encode_text` output (skips the text encoder).
        """
        if pixel_values is None and image_features is None:
            raise ValueError("Glipv2Model needs `pixel_values` (or precomputed `image_features`).")
        if input_ids is None and text_features is None:
            raise ValueError("Glipv2Model needs `input_ids` (or precomputed `text_features`): a prompt to ground.")
        own_sizes = self.own_sizes(pixel_mask) if pixel_values is not None else None
        if image_features is None:
            image_features = self._encode_image(pixel_values, own_sizes)
        if attention_mask is None:
            attention_mask = torch.ones(
                (input_ids if input_ids is not None else text_features).shape[:2],
                dtype=torch.long,
                device=image_features[0].device,
            )
        if text_features is None:
            text_features = self.encode_text(input_ids, attention_mask, token_type_ids)
        text_features, _ = _broadcast_batch("text", text_features, "images", image_features[0])
        attention_mask, _ = _broadcast_batch("attention_mask", attention_mask, "images", image_features[0])
        batch = text_features.shape[0]
        image_features, mask_features = self.split_levels(tuple(f.expand(batch, *f.shape[1:]) for f in image_features))
        padding = self.level_padding(own_sizes, image_features)
        vision_fused, text_fused = self.fuse(image_features, text_features, attention_mask, padding)
        if pixel_values is not None:
            image_sizes = image_sizes_from_mask(pixel_values, pixel_mask).expand(batch, 2)
        else:
            stride = self.config.anchor_strides[0]
            height, width = image_features[0].shape[-2:]
            image_sizes = torch.tensor([[height * stride, width * stride]], device=text_fused.device).expand(batch, 2)
        spatial_shapes = spatial_shapes_tensor(vision_fused, text_fused.device)
        output = Glipv2ModelOutput(
            vision_features=vision_fused,
            text_features=text_fused,
            text_attention_mask=attention_mask,
            spatial_shapes=spatial_shapes,
            image_sizes=image_sizes,
            pre_fusion_vision_features=image_features,
            pre_fusion_text_features=text_features,
            vision_masks=padding.masks if padding is not None else None,
            mask_features=mask_features,
        )
        return return_output(output, return_dict)


__all__ = [
    "WORD_EMBEDDINGS",
    "apply_gradient_checkpointing",
    "Glipv2Model",
    "Glipv2ModelOutput",
    "Glipv2PreTrainedModel",
    "image_sizes_from_mask",
    "return_output",
]
