"""Pipelines and batched inference for GLIP grounding models.

- [`detect_labels`]: open-vocabulary detection of many labels in one pass per prompt chunk. The image backbone runs
  once per image, every chunk's text is encoded once (and cached across images), chunks are batched on accelerators.
- `open-vocabulary-detection` ([`Glipv2OpenVocabularyDetectionPipeline`]): the pipeline form of `detect_labels`,
  with the output format of transformers' `zero-shot-object-detection` pipeline (which runs one pass per label).
- `phrase-grounding` ([`Glipv2PhraseGroundingPipeline`]): boxes for the phrases of a caption, given as character
  spans, as phrases, or found as noun phrases by spaCy when it and an English model are installed.
- `object-detection` ([`Glipv2ObjectDetectionPipeline`]): transformers' own pipeline, made to work for a
  closed-vocabulary [`Glipv2ForObjectDetection`] saved with its tokenizer (every other model runs the stock code).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import torch
from transformers import Pipeline
from transformers.pipelines.object_detection import ObjectDetectionPipeline

from .image_processing_glipv2 import open_image
from .post_processing import candidate_slots, keep_only_anchors, paste_masks, post_process_grounding
from .processing_glipv2 import preview

Span = tuple[int, int]


class Glipv2TextCache:
    """LRU cache of encoded prompt chunks, keyed by the label list (text features are image-independent)."""

    def __init__(self, max_entries: int = 8) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, dict[str, Any]] = OrderedDict()

    def get(self, model: Any, processor: Any, labels: list[str], prompts: list[Any] | None = None) -> dict[str, Any]:
        """`input_ids`, `attention_mask` `(K, T)`, `text_features` `(K, T, D)`, per chunk `positive_maps` and
        `label_ids` for the K prompt chunks of `labels` (`processor.build_prompts`), or for the given `prompts`
        ([`Glipv2Prompt`]s whose `label_ids` index `labels`, e.g. a benchmark's official prompts)."""
        given = None if prompts is None else tuple((p.text, tuple(p.label_spans), tuple(p.label_ids)) for p in prompts)
        key = (id(model), tuple(labels), given)
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        if prompts is None:
            prompts = processor.build_prompts(labels, max_length=model.config.max_text_length)
        else:
            _check_prompts(processor, prompts, len(labels), model.config.max_text_length)
        encoding = processor.tokenizer([p.text for p in prompts], padding="longest", return_tensors="pt")
        positive_maps = [
            processor.positive_map(encoding, prompt.label_spans, batch_index=index, text=prompt.text)
            for index, prompt in enumerate(prompts)
        ]
        device = model.device
        input_ids = encoding["input_ids"].to(device)
        attention_mask = encoding["attention_mask"].to(device)
        with torch.no_grad():
            text_features = model.model.encode_text(input_ids, attention_mask)
        entry = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "text_features": text_features,
            "positive_maps": [m.to(device) for m in positive_maps],
            "label_ids": [torch.tensor(p.label_ids, device=device) for p in prompts],
        }
        self._entries[key] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry


def _check_prompts(processor: Any, prompts: list[Any], num_labels: int, max_length: int) -> None:
    """Given prompts must index distinct labels of the list and fit the text tower."""
    covered = [index for prompt in prompts for index in prompt.label_ids]
    if len(set(covered)) != len(covered) or any(not 0 <= index < num_labels for index in covered):
        raise ValueError(f"the prompts' label ids {sorted(covered)} do not index {num_labels} labels once each")
    for index, prompt in enumerate(prompts):
        length = len(processor.tokenizer(prompt.text, add_special_tokens=True)["input_ids"])
        if length > max_length:
            raise ValueError(
                f"prompt {index} is {length} tokens long, more than the model's max_text_length={max_length}: "
                f"{preview(prompt.text)}"
            )


@torch.no_grad()
def detect_labels(
    model: Any,
    processor: Any,
    images: Any,
    labels: list[str],
    threshold: float = 0.05,
    max_detections: int = 100,
    chunk_batch_size: int | None = None,
    text_cache: Glipv2TextCache | None = None,
    prompts: list[Any] | None = None,
    return_masks: bool | str = False,
) -> list[dict[str, Any]]:
    """Detects `labels` (any number: LVIS-size lists are split into prompt chunks) in each image.

    Args:
        model: a [`Glipv2ForGrounding`] in eval mode.
        processor: its [`Glipv2Processor`].
        images: one image or a list of images (PIL, numpy, torch).
        labels: class names; results keep their indices.
        threshold: minimum score (mean token probability, official 0.05).
        max_detections: detections kept per image over all chunks (official 100); <= 0 keeps all.
        chunk_batch_size: prompt chunks fused together in one batch; `None` means 8 on accelerators and 1 on CPU,
            where a batch of chunks only adds cache misses (GLIP-T, 640x640, one thread: 4 chunks took 54-60 s
            batched against 49-51 s one by one, `docs/benchmarks.md`).
        text_cache: cache of encoded prompts to reuse across calls (pipelines keep one); by default a fresh one,
            so the text is encoded once per call (shared by all its images) and never outlives a weight update.
        prompts: the prompts to run instead of `processor.build_prompts(labels)`: [`Glipv2Prompt`]s whose
            `label_ids` index `labels` (e.g. a benchmark's official prompts: fixed-size chunks, caption prompts).
        return_masks: instance segmentation (a model with a mask head, e.g. [`Glipv2ForInstanceSegmentation`]):
            the detections are those among each chunk's mask candidates, each with its mask (pasted once the
            detections are chosen; a candidate none of whose labels can pass `threshold` gets none); `"logits"`:
            each detection's `(M, M)` mask logits in its box instead (`"mask_logits"`, for callers that select
            further before pasting with `post_processing.paste_masks`).

    Returns:
        Per image `{"scores": (N,), "boxes": (N, 4) absolute xyxy, "labels": (N,) int64 indices into labels,
        "text_labels": list[str]}`, by decreasing score; with `return_masks` also `"masks"` `(N, H, W)` bool at
        the image's size (probability above 0.5), with `"logits"` `"mask_logits"` `(N, M, M)`.
    """

    from .image_processing_glipv2 import flatten_images, get_image_size

    cache = (text_cache or Glipv2TextCache()).get(model, processor, labels, prompts)
    if chunk_batch_size is None:
        chunk_batch_size = 1 if model.device.type == "cpu" else 8
    results = []
    for image in flatten_images(images):
        height, width = get_image_size(image, getattr(processor.image_processor, "do_exif_transpose", True))
        pixels = processor.image_processor(image, return_tensors="pt").to(model.device)
        image_features = model.model.encode_image(pixels["pixel_values"].to(model.dtype))
        parts = []
        num_chunks = cache["input_ids"].shape[0]
        for start in range(0, num_chunks, chunk_batch_size):
            chunks = range(start, min(start + chunk_batch_size, num_chunks))
            batch = len(chunks)
            outputs = model(
                pixel_values=pixels["pixel_values"],
                pixel_mask=pixels["pixel_mask"],
                image_features=tuple(f.expand(batch, *f.shape[1:]) for f in image_features),
                text_features=cache["text_features"][start : start + batch],
                attention_mask=cache["attention_mask"][start : start + batch],
                **({"mask_threshold": threshold} if return_masks else {}),
            )
            logits = outputs.logits
            if return_masks:
                if getattr(outputs, "pred_masks", None) is None:
                    raise ValueError(f"return_masks needs a model with a mask head, not {type(model).__name__}.")
                logits = keep_only_anchors(logits, outputs.mask_anchor_indices)
            chunk_results = post_process_grounding(
                logits,
                outputs.pred_boxes,
                outputs.centerness,
                outputs.spatial_shapes,
                [cache["positive_maps"][k] for k in chunks],
                threshold=threshold,
                max_detections=max_detections,
                target_sizes=[(height, width)] * batch,
                return_anchor_indices=return_masks,
            )
            for row, (k, result) in enumerate(zip(chunks, chunk_results)):
                result["labels"] = cache["label_ids"][k][result["labels"]]
                if return_masks:
                    slots = candidate_slots(outputs.mask_anchor_indices[row], result.pop("anchor_indices"))
                    result["mask_logits"] = outputs.pred_masks[row][slots]
                parts.append(result)
        scores = torch.cat([p["scores"] for p in parts])
        order = scores.argsort(descending=True, stable=True)
        order = order[:max_detections] if max_detections > 0 else order
        keys = ("scores", "boxes", "labels", "mask_logits") if return_masks else ("scores", "boxes", "labels")
        merged = {key: torch.cat([p[key] for p in parts])[order] for key in keys}
        if return_masks and return_masks != "logits":  # pasted only for the detections kept
            merged["masks"] = paste_masks(merged.pop("mask_logits"), merged["boxes"], height, width) > 0.5
        merged["text_labels"] = [labels[i] for i in merged["labels"].tolist()]
        results.append(merged)
    return results


def _box_dict(box: torch.Tensor) -> dict[str, float]:
    xmin, ymin, xmax, ymax = (round(float(v), 2) for v in box.tolist())
    return {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}


class Glipv2Pipeline(Pipeline):
    """Base of this library's pipelines: they need both halves of the processor and do their own batching."""

    _load_processor = True
    _load_image_processor = True
    _load_tokenizer = True
    _load_feature_extractor = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            from .processing_glipv2 import Glipv2Processor

            self.processor = Glipv2Processor(image_processor=self.image_processor, tokenizer=self.tokenizer)

    def get_iterator(
        self,
        inputs: Any,
        num_workers: int,
        batch_size: int,
        preprocess_params: dict,
        forward_params: dict,
        postprocess_params: dict,
    ) -> Any:
        """Every input goes through preprocess, forward and postprocess on its own, whatever `batch_size`.

        transformers' generic collate pads each tensor of a batch as a token sequence: images of several sizes fail
        (their `pixel_mask` rows do not fit) or lose the mask that keeps each image's result its own. The
        expensive shared work is batched inside instead (label prompts encoded once, see [`detect_labels`]).
        """
        return super().get_iterator(inputs, num_workers, 1, preprocess_params, forward_params, postprocess_params)


class Glipv2OpenVocabularyDetectionPipeline(Glipv2Pipeline):
    """`pipeline("open-vocabulary-detection", model=...)(image, candidate_labels=[...], threshold=0.3)`.

    All candidate labels are encoded in one pass per prompt chunk (see [`detect_labels`]); the output is a list
    of `{"score", "label", "box"}` sorted by score, like transformers' zero-shot-object-detection pipeline.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.text_cache = Glipv2TextCache()  # the pipeline's weights are fixed: reuse encoded label lists

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        preprocess = {k: kwargs[k] for k in ("candidate_labels", "threshold", "max_detections") if k in kwargs}
        postprocess = {"top_k": kwargs["top_k"]} if "top_k" in kwargs else {}
        return preprocess, {}, postprocess

    def preprocess(
        self,
        image: Any,
        candidate_labels: list[str] | str | None = None,
        threshold: float = 0.1,
        max_detections: int = 100,
    ) -> dict[str, Any]:
        if isinstance(candidate_labels, str):
            candidate_labels = [label.strip() for label in candidate_labels.split(",")]
        if not candidate_labels:
            raise ValueError("candidate_labels is empty: give at least one class name to detect.")
        image = open_image(image) if isinstance(image, (str, os.PathLike)) else image
        return {
            "image": image,
            "labels": list(candidate_labels),
            "threshold": threshold,
            "max_detections": max_detections,
        }

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        result = detect_labels(
            self.model,
            self.processor,
            model_inputs["image"],
            model_inputs["labels"],
            model_inputs["threshold"],
            model_inputs["max_detections"],
            text_cache=self.text_cache,
        )
        return {"result": result[0]}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int | None = None) -> list[dict[str, Any]]:
        result = model_outputs["result"]
        detections = [
            {"score": round(float(score), 4), "label": label, "box": _box_dict(box)}
            for score, label, box in zip(result["scores"], result["text_labels"], result["boxes"])
        ]
        return detections[:top_k] if top_k else detections


def find_noun_phrases(caption: str) -> list[Span]:
    """Character spans of the noun phrases of `caption`, found by spaCy's `en_core_web_sm` when installed."""
    try:
        import spacy

        nlp = spacy.load("en_core_web_sm")
    except (ImportError, OSError) as error:
        raise ValueError(
            "phrase-grounding was given no phrases: pass `phrases=[...]` or `spans=[(begin, end), ...]`, or install "
            "spaCy with its English model (`pip install spacy` and an `en_core_web_sm` package) so that noun phrases "
            f"can be found automatically ({error})."
        ) from error
    return [(chunk.start_char, chunk.end_char) for chunk in nlp(caption).noun_chunks]


def phrase_spans(caption: str, phrases: list[str] | None, spans: list[Span] | None) -> list[Span]:
    """Resolves the phrases to ground as character spans of `caption` (validated)."""
    if not caption or not caption.strip():
        raise ValueError("The caption is empty: phrase grounding needs a caption that names what to find.")
    if spans is None and phrases is not None:
        spans, cursor = [], 0
        for index, phrase in enumerate(phrases):
            if not phrase or not phrase.strip():
                raise ValueError(f"Phrase {index} is empty or whitespace only ({phrase!r}).")
            begin = caption.find(phrase, cursor)
            if begin < 0:
                begin = caption.find(phrase)
            if begin < 0:
                raise ValueError(f"Phrase {preview(phrase)} does not occur in the caption {preview(caption)}.")
            spans.append((begin, begin + len(phrase)))
            cursor = begin + len(phrase)
    if spans is None:
        spans = find_noun_phrases(caption)
    for begin, end in spans:
        if not (0 <= begin < end <= len(caption)):
            raise ValueError(f"Span ({begin}, {end}) lies outside the caption of {len(caption)} characters.")
    if not spans:
        raise ValueError(f"No phrase to ground was found in {preview(caption)}; pass phrases or spans.")
    return [tuple(span) for span in spans]


class Glipv2PhraseGroundingPipeline(Glipv2Pipeline):
    """`pipeline("phrase-grounding", model=...)(image, caption, phrases=None, spans=None, threshold=0.1, top_k=1)`.

    Returns, per phrase in caption order, `{"phrase", "span", "boxes": [{"score", "box"}, ...]}` (best first, at
    most `top_k`). A phrase is scored by the mean of its tokens' probabilities, as in GLIP.
    """

    def __call__(self, image: Any, caption: str | None = None, **kwargs: Any) -> Any:
        """`caption` may be given by position or by keyword."""
        if caption is not None:
            kwargs["caption"] = caption
        return super().__call__(image, **kwargs)

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        preprocess = {k: kwargs[k] for k in ("caption", "phrases", "spans") if k in kwargs}
        postprocess = {k: kwargs[k] for k in ("threshold", "top_k") if k in kwargs}
        return preprocess, {}, postprocess

    def preprocess(
        self,
        image: Any,
        caption: str | None = None,
        phrases: list[str] | None = None,
        spans: list[Span] | None = None,
    ) -> dict[str, Any]:
        spans = phrase_spans(caption or "", phrases, spans)
        image = open_image(image) if isinstance(image, (str, os.PathLike)) else image
        max_length = self.model.config.max_text_length
        inputs = self.processor(images=image, text=caption, return_tensors="pt", max_length=max_length)
        positive_map = self.processor.positive_map(caption, [[span] for span in spans])
        from .image_processing_glipv2 import get_image_size

        size = get_image_size(image, getattr(self.image_processor, "do_exif_transpose", True))
        return {"inputs": dict(inputs), "positive_map": positive_map, "spans": spans, "caption": caption, "size": size}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        model_inputs["outputs"] = self.model(**model_inputs.pop("inputs"))
        return model_inputs

    def postprocess(
        self, model_outputs: dict[str, Any], threshold: float = 0.1, top_k: int = 1
    ) -> list[dict[str, Any]]:
        outputs, spans, caption = model_outputs["outputs"], model_outputs["spans"], model_outputs["caption"]
        size = model_outputs["size"]
        result = post_process_grounding(
            outputs.logits,
            outputs.pred_boxes,
            outputs.centerness,
            outputs.spatial_shapes,
            [model_outputs["positive_map"].to(outputs.logits.device)],
            threshold=threshold,
            target_sizes=[tuple(size)],
        )[0]
        grounded = []
        for index, (begin, end) in enumerate(spans):
            mine = result["labels"] == index
            boxes = [
                {"score": round(float(s), 4), "box": _box_dict(b)}
                for s, b in zip(result["scores"][mine][:top_k], result["boxes"][mine][:top_k])
            ]
            grounded.append({"phrase": caption[begin:end], "span": (begin, end), "boxes": boxes})
        return grounded


class Glipv2ObjectDetectionPipeline(ObjectDetectionPipeline):
    """transformers' `object-detection` pipeline, unchanged for every model but GLIPv2's.

    The stock pipeline treats any model that came with a tokenizer as a LayoutLM-style token classifier (words and
    boxes from OCR) and fails with `KeyError: 'words'`. A closed-vocabulary GLIPv2 detector keeps its prompt in the
    config and needs no tokenizer, but its folder usually holds one (`processor.save_pretrained`): for GLIPv2 models
    the tokenizer is set aside, and their class is accepted without the stock pipeline's "not supported" error.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if _is_glipv2(self.model):
            self.tokenizer = None

    def check_model_type(self, supported_models: Any) -> None:
        if not _is_glipv2(self.model):
            super().check_model_type(supported_models)


def _is_glipv2(model: Any) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "glipv2"


__all__ = [
    "Glipv2ObjectDetectionPipeline",
    "Glipv2OpenVocabularyDetectionPipeline",
    "Glipv2PhraseGroundingPipeline",
    "Glipv2Pipeline",
    "Glipv2TextCache",
    "detect_labels",
    "find_noun_phrases",
    "phrase_spans",
]
