"""Segmentation pipelines for [`Glipv2ForInstanceSegmentation`]:

- `instance-segmentation` ([`Glipv2InstanceSegmentationPipeline`]): image + class names -> one mask per instance,
  `[{"score", "label", "box", "mask"}]` like transformers' `image-segmentation` pipeline (plus the box); label lists
  longer than one prompt are split into chunks and the image backbone runs once ([`detect_labels`]), as
  `open-vocabulary-detection` does.
- `referring-segmentation` ([`Glipv2ReferringSegmentationPipeline`]): image + referring expression -> its mask.

The closed-vocabulary model ([`Glipv2ForSegmentation`]) runs in transformers' `image-segmentation` pipeline
([`Glipv2ImageSegmentationPipeline`]: the stock one, without its "not supported" error for this family).
"""

from __future__ import annotations

import os
from typing import Any

import numpy
import torch
from PIL import Image
from transformers import ImageSegmentationPipeline

from .image_processing_glipv2 import get_image_size, open_image
from .pipelines_glipv2 import Glipv2Pipeline, Glipv2TextCache, _box_dict, _is_glipv2, detect_labels
from .post_processing import paste_masks
from .processing_glipv2 import preview


def _mask_image(mask: torch.Tensor) -> Image.Image:
    """`(H, W)` bool -> a PIL "L" image (255 inside), as transformers' segmentation pipelines return masks."""
    return Image.fromarray(mask.cpu().numpy().astype(numpy.uint8) * 255, mode="L")


def _load(pipeline: Glipv2Pipeline, image: Any) -> tuple[Any, tuple[int, int]]:
    image = open_image(image) if isinstance(image, (str, os.PathLike)) else image
    return image, get_image_size(image, getattr(pipeline.image_processor, "do_exif_transpose", True))


class Glipv2InstanceSegmentationPipeline(Glipv2Pipeline):
    """`pipeline("instance-segmentation", model=...)(image, candidate_labels=[...], threshold=0.3)`.

    Returns `[{"score", "label", "box", "mask"}]` (a PIL "L" mask per instance, 255 inside), best first: GLIP's
    detections of the labels among the model's mask candidates, each with its mask at the image's size.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.text_cache = Glipv2TextCache()  # the pipeline's weights are fixed: reuse encoded label lists

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        preprocess = {k: kwargs[k] for k in ("candidate_labels", "threshold", "top_k") if k in kwargs}
        postprocess = {"mask_threshold": kwargs["mask_threshold"]} if "mask_threshold" in kwargs else {}
        return preprocess, {}, postprocess

    def preprocess(
        self,
        image: Any,
        candidate_labels: list[str] | str | None = None,
        threshold: float = 0.3,
        top_k: int = 100,
    ) -> dict[str, Any]:
        if isinstance(candidate_labels, str):
            candidate_labels = [label.strip() for label in candidate_labels.split(",")]
        if not candidate_labels:
            raise ValueError("candidate_labels is empty: give at least one class name to segment.")
        image, size = _load(self, image)
        return {"image": image, "labels": list(candidate_labels), "threshold": threshold, "top_k": top_k, "size": size}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        """[`detect_labels`]: the image backbone once, each prompt chunk's text encoded once per label list, the
        detections among the mask candidates with their mask logits (pasted in `postprocess`)."""
        (result,) = detect_labels(
            self.model,
            self.processor,
            model_inputs["image"],
            model_inputs["labels"],
            model_inputs["threshold"],
            model_inputs["top_k"],
            text_cache=self.text_cache,
            return_masks="logits",
        )
        return {"result": result, "size": model_inputs["size"]}

    def postprocess(self, model_outputs: dict[str, Any], mask_threshold: float = 0.5) -> list[dict[str, Any]]:
        result = model_outputs["result"]
        height, width = model_outputs["size"]
        masks = paste_masks(result["mask_logits"], result["boxes"], height, width) > mask_threshold
        return [
            {"score": round(float(score), 4), "label": label, "box": _box_dict(box), "mask": _mask_image(mask)}
            for score, label, box, mask in zip(result["scores"], result["text_labels"], result["boxes"], masks)
        ]


class Glipv2ReferringSegmentationPipeline(Glipv2Pipeline):
    """`pipeline("referring-segmentation", model=...)(image, "the dog on the left", threshold=None)`.

    The expression is the prompt and all its tokens are the phrase. Returns `{"score", "box", "mask", "instances"}`:
    the mask (PIL "L", 255 inside) of the best box, or with `threshold` the union of the masks of every box scoring
    at least `threshold` (the best one always), and the selected instances `[{"score", "box"}]`.
    """

    def __call__(self, image: Any, expression: str | None = None, **kwargs: Any) -> Any:
        """`expression` may be given by position or by keyword."""
        if expression is not None:
            kwargs["expression"] = expression
        return super().__call__(image, **kwargs)

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        preprocess = {"expression": kwargs["expression"]} if "expression" in kwargs else {}
        postprocess = {k: kwargs[k] for k in ("threshold", "mask_threshold") if k in kwargs}
        return preprocess, {}, postprocess

    def preprocess(self, image: Any, expression: str | None = None) -> dict[str, Any]:
        if not expression or not expression.strip():
            raise ValueError(f"The expression is empty ({preview(str(expression))}): say what to segment.")
        image, size = _load(self, image)
        inputs = self.processor(images=image, text=expression, return_tensors="pt")
        begin = len(expression) - len(expression.lstrip())
        positive_map = self.processor.positive_map(expression, [[(begin, len(expression.rstrip()))]])
        if not positive_map.any():
            raise ValueError(f"The expression {preview(expression)} has no word to ground.")
        return {"inputs": dict(inputs), "positive_map": positive_map, "size": size}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        model_inputs["outputs"] = self.model(**model_inputs.pop("inputs"))
        return model_inputs

    def postprocess(
        self, model_outputs: dict[str, Any], threshold: float | None = None, mask_threshold: float = 0.5
    ) -> dict[str, Any]:
        outputs, positive_map = model_outputs["outputs"], model_outputs["positive_map"]
        positive_map = torch.nn.functional.pad(positive_map, (0, outputs.logits.shape[-1] - positive_map.shape[1]))
        (result,) = self.image_processor.post_process_instance_segmentation(
            outputs,
            threshold=0.0,
            mask_threshold=mask_threshold,
            target_sizes=[model_outputs["size"]],
            return_binary_maps=True,
            positive_maps=[positive_map.to(outputs.logits.device)],
        )
        if len(result["scores"]) == 0:
            height, width = model_outputs["size"]
            return {"score": 0.0, "box": None, "mask": _mask_image(torch.zeros(height, width, dtype=torch.bool)),
                    "instances": []}  # fmt: skip
        selected = [0] if threshold is None else [0, *(i for i, s in enumerate(result["scores"]) if s >= threshold)]
        selected = sorted(set(selected))
        union = result["segmentation"][selected].any(dim=0)
        instances = [
            {"score": round(float(result["scores"][i]), 4), "box": _box_dict(result["boxes"][i])} for i in selected
        ]
        return {"score": instances[0]["score"], "box": instances[0]["box"], "mask": _mask_image(union),
                "instances": instances}  # fmt: skip


class Glipv2ImageSegmentationPipeline(ImageSegmentationPipeline):
    """transformers' `image-segmentation` pipeline, unchanged: for GLIPv2's closed-vocabulary
    [`Glipv2ForSegmentation`] (registered with `AutoModelForImageSegmentation`, which the stock pipeline's table of
    supported classes does not list) it skips the "not supported" error. `threshold` is the detection score (the
    stock default 0.9 is far above GLIP's usual scores: pass e.g. 0.3)."""

    def check_model_type(self, supported_models: Any) -> None:
        if not _is_glipv2(self.model):
            super().check_model_type(supported_models)


__all__ = [
    "Glipv2ImageSegmentationPipeline",
    "Glipv2InstanceSegmentationPipeline",
    "Glipv2ReferringSegmentationPipeline",
]
