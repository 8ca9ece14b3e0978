"""`image-captioning` pipeline for [`Glipv2ForConditionalGeneration`]: captions from images alone. transformers 5's
`image-text-to-text` pipeline needs a prompt, and it redirects the old task name `image-to-text` there.

`pipeline("image-captioning", model=...)(image)` returns `[{"generated_text": caption}]`; `prompt="a photo of"` starts
the caption with given words, and generation options (`max_new_tokens`, `num_beams`, ...) pass to `generate`.
"""

from __future__ import annotations

import os
from typing import Any

from .image_processing_glipv2 import open_image
from .pipelines_glipv2 import Glipv2Pipeline
from .processing_glipv2 import preview

# Captions are short: COCO's are ~10 words.
DEFAULT_MAX_NEW_TOKENS = 20


class Glipv2ImageCaptioningPipeline(Glipv2Pipeline):
    """`pipeline("image-captioning", model=...)(image, prompt=None, max_new_tokens=20)` -> `[{"generated_text"}]`.

    Without a prompt the caption starts from [CLS] alone (unconditional captioning); a prompt's words begin it.
    """

    def _sanitize_parameters(
        self,
        prompt: str | None = None,
        max_new_tokens: int | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        preprocess = {"prompt": prompt} if prompt is not None else {}
        forward = {**(generate_kwargs or {}), **kwargs}
        forward["max_new_tokens"] = max_new_tokens if max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS
        return preprocess, forward, {}

    def preprocess(self, image: Any, prompt: str | None = None) -> dict[str, Any]:
        image = open_image(image) if isinstance(image, (str, os.PathLike)) else image
        inputs = dict(self.image_processor(image, return_tensors="pt"))
        if prompt is not None:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"The prompt is empty ({preview(str(prompt))}): give words, or no prompt at all.")
            inputs["input_ids"] = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        return inputs

    def _forward(self, model_inputs: dict[str, Any], **generate_kwargs: Any) -> dict[str, Any]:
        pixel_values = model_inputs["pixel_values"].to(self.model.dtype)
        ids = self.model.generate(
            pixel_values=pixel_values,
            pixel_mask=model_inputs.get("pixel_mask"),  # batch_size > 1: each image as if alone
            input_ids=model_inputs.get("input_ids"),
            **generate_kwargs,
        )
        return {"ids": ids}

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, str]]:
        return [
            {"generated_text": text.strip()}
            for text in self.tokenizer.batch_decode(model_outputs["ids"], skip_special_tokens=True)
        ]


__all__ = ["Glipv2ImageCaptioningPipeline"]
