"""Image captioning on the shared GLIPv2 backbone: the text tower under a seq2seq mask (GLIPv2 §3.3).

Under the seq2seq mask of VLP/UniLM, image positions attend only image positions and token t attends the image and
tokens <= t. On GLIP's deep fusion this means: the image side of every fusion layer drops VLFuse's text->image delta
(so it is text-independent and computed once per image, [`encode_image_memory`]); the text side runs the text
encoder with a causal mask, then in every fusion layer VLFuse's image->text half and the extra text layer with a
causal mask ([`causal_text_features`]). No token ever sees a later one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.utils import ModelOutput

from .configuration_glipv2 import Glipv2Config
from .heads import build_head
from .loss import shifted_lm_loss
from .modeling_glipv2 import WORD_EMBEDDINGS, Glipv2Model, Glipv2PreTrainedModel, return_output

# bert-base-uncased [CLS] / [SEP]: BOS and EOS of captioning when the text config names none.
BERT_CLS_TOKEN_ID = 101
BERT_SEP_TOKEN_ID = 102


@dataclass
class Glipv2CaptioningOutput(ModelOutput):
    """Output of [`Glipv2ForConditionalGeneration`].

    Args:
        loss (`torch.FloatTensor`, *optional*): next-token cross-entropy ([`shifted_lm_loss`]), with `labels`.
        logits (`torch.FloatTensor` of shape `(B, T, vocab_size)`): logits at position t predict token t + 1.
        image_memory (`torch.FloatTensor` of shape `(B, num_fusion_layers, A, hidden_size)`): the image side of every
            fusion layer (text-independent under the seq2seq mask); pass it back to skip the image backbone.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_memory: torch.FloatTensor | None = None


def causal_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """`(B, T)` padding mask -> `(B, 1, T, T)` bool mask, True where query t may attend key s (s <= t, s real)."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    return causal[None, None] & attention_mask.bool()[:, None, None, :]


def encode_image_memory(
    model: Glipv2Model, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Image side of the fusion stack under the seq2seq mask: `(B, num_fusion_layers, A, hidden_size)`.

    Image positions attend only image positions, so every fusion layer's image input is text-independent
    ([`Glipv2DeepFusion.image_side`]): computed once per image, attended by every generation step. With
    `pixel_mask` and images of several sizes each image is encoded as if alone (the model's `forward` and
    `generate` then also keep the text off the other images' padding).
    """
    return _image_memory_and_mask(model, pixel_values, pixel_mask)[0]


def _image_memory_and_mask(
    model: Glipv2Model, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The memory and `(B, A)` True on each image's own positions (None when no image is padded beyond its own
    size: every position is attended then)."""
    own_sizes = model.own_sizes(pixel_mask)
    levels = model.split_levels(model._encode_image(pixel_values, own_sizes))[0]
    padding = model.level_padding(own_sizes, levels)
    return model.fusion.image_side(levels, padding), (padding.flat() if padding is not None else None)


def causal_text_features(
    model: Glipv2Model,
    image_memory: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Text tower under the seq2seq mask: causal text encoder, then every fusion layer's text side attending the
    image memory (`image_mask`'s positions `(B, A)` when given) with causal extra text layers
    ([`Glipv2DeepFusion.text_side`]). Token t never sees tokens > t. Returns `(B, T, D)`."""
    mask = causal_attention_mask(attention_mask)
    additive = torch.zeros(mask.shape, dtype=model.dtype, device=mask.device)
    additive = additive.masked_fill(~mask, torch.finfo(model.dtype).min)  # 4D masks go to the encoder as-is
    return model.fusion.text_side(model.encode_text(input_ids, additive), image_memory, mask, image_mask)


class Glipv2ForConditionalGeneration(Glipv2PreTrainedModel, GenerationMixin):
    """Image captioning: the text tower under a seq2seq mask (causal over text, attending the image), LM head tied
    to the word embeddings (GLIPv2 §3.3; VLP/UniLM seq2seq mask).

    `labels`: `(B, T)` the input ids with -100 on padding; they are shifted once inside ([`shifted_lm_loss`]).
    `generate()` (greedy, beam search, ...) encodes the image once per call ([`encode_image_memory`]) and, with no
    KV cache, re-runs the (small) text side over the whole prefix at every step. Generation starts from BOS = [CLS]
    and stops at EOS = [SEP] (`generation_config`); a prompt's trailing [SEP] (the tokenizer adds one) is removed
    first, as BLIP does, so the caption continues the prompt.
    """

    main_input_name = "input_ids"
    _tied_weights_keys = {"caption_head.decoder.weight": WORD_EMBEDDINGS}

    def __init__(self, config: Glipv2Config) -> None:
        super().__init__(config)
        self.model = Glipv2Model(config)
        self.caption_head = build_head("caption_head", config)
        self.post_init()
        self._default_generation_settings()

    def _default_generation_settings(self) -> None:
        """BOS = [CLS], EOS = [SEP], PAD from the text config, no KV cache; fills only what is unset (a checkpoint
        of another class, e.g. Glipv2ForPreTraining, has no generation config of its own)."""
        text, generation = self.config.text_config, self.generation_config
        if generation.bos_token_id is None:
            generation.bos_token_id = getattr(text, "bos_token_id", None) or BERT_CLS_TOKEN_ID
        if generation.eos_token_id is None:
            generation.eos_token_id = getattr(text, "eos_token_id", None) or BERT_SEP_TOKEN_ID
        if generation.pad_token_id is None:
            generation.pad_token_id = text.pad_token_id
        generation.use_cache = False

    def get_output_embeddings(self) -> nn.Module:
        return self.caption_head.decoder

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.caption_head.decoder = value

    def _check_fusion(self) -> None:
        if not self.config.use_early_fusion:
            raise ValueError("Captioning needs use_early_fusion=True: without VLFuse the text never sees the image.")

    def image_memory(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, 3, H, W)` -> `(B, num_fusion_layers, A, hidden_size)` ([`encode_image_memory`])."""
        self._check_fusion()
        return encode_image_memory(self.model, pixel_values, pixel_mask)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_memory: torch.Tensor | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
        image_memory_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> Glipv2CaptioningOutput | tuple:
        """
        Args:
            pixel_values: `(B, 3, H, W)` (or `image_memory` from a previous call).
            input_ids, attention_mask: `(B, T)` caption tokens `[CLS] w_1 ... w_n [SEP]`, right-padded.
            labels: `(B, T)` input ids with -100 on padding.
            pixel_mask: `(B, H, W)`, 1 on real pixels: a batch of several image sizes gives each image's result
                as if it were alone.
            image_memory_mask: with `image_memory`, `(B, A)` the positions each caption attends (None: all).
            logits_to_keep: without `labels`, the LM head runs on the last `logits_to_keep` positions only (0: all),
                as transformers' generation asks (`generate` needs the last one; the head is a 30k-word matmul).
        """
        if input_ids is None:
            raise ValueError("Glipv2ForConditionalGeneration needs input_ids (at least the [CLS] token).")
        self._check_fusion()
        if image_memory is None:
            if pixel_values is None:
                raise ValueError("Glipv2ForConditionalGeneration needs pixel_values (or image_memory).")
            image_memory, image_memory_mask = _image_memory_and_mask(self.model, pixel_values, pixel_mask)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if image_memory.shape[0] != input_ids.shape[0]:
            if image_memory.shape[0] != 1:
                raise ValueError(f"{image_memory.shape[0]} images but {input_ids.shape[0]} captions.")
            image_memory = image_memory.expand(input_ids.shape[0], *image_memory.shape[1:])
        features = causal_text_features(self.model, image_memory, input_ids, attention_mask, image_memory_mask)
        if logits_to_keep and labels is None:
            features = features[:, -logits_to_keep:]
        logits = self.caption_head(features)
        loss = shifted_lm_loss(logits, labels) if labels is not None else None
        return return_output(Glipv2CaptioningOutput(loss=loss, logits=logits, image_memory=image_memory), return_dict)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.Tensor,
        image_memory: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_memory_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Every step sees the whole prefix and the cached image memory (no KV cache, no pixel_values); only the last
        position's logits are computed."""
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "image_memory": image_memory,
            "image_memory_mask": image_memory_mask,
            "logits_to_keep": 1,
        }

    def _generation_prompt(self, input_ids: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """`[CLS]` per image, or the given prompt without its trailing `[SEP]` (broadcast over the images)."""
        bos, eos = self.generation_config.bos_token_id, self.generation_config.eos_token_id
        if input_ids is None:
            return torch.full((batch, 1), bos, dtype=torch.long, device=device)
        if input_ids.shape[1] > 1 and bool((input_ids[:, -1] == eos).all()):
            input_ids = input_ids[:, :-1]
        if input_ids.shape[0] == 1 and batch > 1:
            input_ids = input_ids.expand(batch, -1)
        return input_ids

    def _check_length(self, prompt_length: int, generate_kwargs: dict[str, Any]) -> None:
        """Raises when the requested length does not fit the text tower's positions (or max_new_tokens < 1)."""
        limit = min(self.config.max_text_length, self.config.text_config.max_position_embeddings)
        config = generate_kwargs.get("generation_config") or self.generation_config
        max_new_tokens = generate_kwargs.get("max_new_tokens")
        if max_new_tokens is None and "max_length" not in generate_kwargs:
            max_new_tokens = getattr(config, "max_new_tokens", None)
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        if max_new_tokens is not None:
            total = prompt_length + max_new_tokens
        else:  # GenerationConfig's default max_length is 20
            total = generate_kwargs.get("max_length", getattr(config, "max_length", None)) or 20
        if total > limit:
            raise ValueError(
                f"Generation would reach {total} tokens ({prompt_length} prompt tokens + new ones), more than the "
                f"text tower's limit of {limit} positions; lower max_new_tokens / max_length."
            )

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_memory: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.LongTensor:
        """Captions `(B, 3, H, W)` images: GenerationMixin's `generate` with the image encoded once.

        Args:
            pixel_values: the images (or `image_memory`).
            input_ids: optional prompt `(1 or B, T)` (right padding is not supported: prompts of equal length).
            generate_kwargs: `max_new_tokens`, `num_beams`, `do_sample`, ...; `pixel_mask` from the processor (a
                batch of several image sizes is captioned as each image alone; `token_type_ids` is unused).
        Returns:
            `(B * num_return_sequences, T')` token ids starting with the prompt ([CLS] ...).
        """
        self._default_generation_settings()
        pixel_mask = generate_kwargs.pop("pixel_mask", None)
        generate_kwargs.pop("token_type_ids", None)
        image_memory_mask = generate_kwargs.pop("image_memory_mask", None)
        if image_memory is None:
            if pixel_values is None:
                raise ValueError("generate() needs pixel_values (or image_memory).")
            self._check_fusion()
            image_memory, image_memory_mask = _image_memory_and_mask(
                self.model, pixel_values.to(self.dtype), pixel_mask
            )
        if image_memory_mask is not None:  # GenerationMixin expands tensors of model kwargs over beams
            generate_kwargs["image_memory_mask"] = image_memory_mask
        if input_ids is not None and attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("Padded prompts are not supported by generate(); give prompts of equal length.")
        input_ids = self._generation_prompt(input_ids, image_memory.shape[0], image_memory.device)
        if input_ids.shape[0] != image_memory.shape[0]:
            raise ValueError(f"{image_memory.shape[0]} images but {input_ids.shape[0]} prompts.")
        self._check_length(input_ids.shape[1], generate_kwargs)
        return super().generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            image_memory=image_memory,
            **generate_kwargs,
        )


__all__ = [
    "Glipv2CaptioningOutput",
    "Glipv2ForConditionalGeneration",
    "causal_attention_mask",
    "causal_text_features",
    "encode_image_memory",
]
