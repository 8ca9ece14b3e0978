"""Processor for GLIPv2-style models: image processor + BERT-style tokenizer, prompts and positive maps.

Prompt format and positive maps follow the official GLIP code (`maskrcnn_benchmark/engine/inference.py`
`create_queries_and_maps`, `maskrcnn_benchmark/data/datasets/modulated_coco.py` `create_positive_map`).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy
import torch
from transformers.image_processing_base import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .box_ops import xyxy_to_cxcywh
from .image_processing_glipv2 import Glipv2ImageProcessor, flatten_images, get_image_size

# Official GLIP: MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN = 256 (token positions, special tokens included).
MAX_TEXT_LENGTH = 256
# Official GLIP configs: DATASETS.SEPARATION_TOKENS = ". " (configs/pretrain/*.yaml).
DEFAULT_SEPARATOR = ". "

Span = tuple[int, int]
# Longest text quoted in an error message: a 10,000-character label should not flood the traceback.
PREVIEW_CHARS = 60


def preview(text: str, max_chars: int = PREVIEW_CHARS) -> str:
    """`repr(text)` for an error message, cut to `max_chars` characters with the full length noted."""
    if len(text) <= max_chars:
        return repr(text)
    return f"{text[:max_chars]!r}... ({len(text)} characters)"


@dataclass
class Glipv2Prompt:
    """A detection prompt built from class names.

    Attributes:
        text: the prompt, e.g. `"cat. dog"`.
        label_spans: `(begin, end)` character span of each label in `text` (`text[begin:end]` is the label).
        label_ids: index of each label in the list the prompt was built from.
    """

    text: str
    label_spans: list[Span]
    label_ids: list[int]

    @property
    def labels(self) -> list[str]:
        """The label names, sliced back out of `text`."""
        return [self.text[begin:end] for begin, end in self.label_spans]


def _validate_labels(labels: Sequence[str]) -> None:
    """Raise for an empty label list, a non-string label or an empty/whitespace-only label (naming its index)."""
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a list of strings, got {type(labels).__name__}.")
    if len(labels) == 0:
        raise ValueError("labels is empty: a prompt needs at least one label.")
    for index, label in enumerate(labels):
        if not isinstance(label, str):
            raise TypeError(f"Label {index} is a {type(label).__name__}, expected a string.")
        if not label.strip():
            raise ValueError(f"Label {index} is empty or whitespace only ({preview(label)}).")


def _join_labels(labels: Sequence[str], label_ids: Sequence[int], separator: str) -> Glipv2Prompt:
    """Join labels with `separator` as the official `create_queries_and_maps` does (no trailing separator)."""
    text = ""
    spans = []
    for index, label in enumerate(labels):
        if index:
            text += separator
        spans.append((len(text), len(text) + len(label)))
        text += label
    return Glipv2Prompt(text=text, label_spans=spans, label_ids=list(label_ids))


def _normalize_span_entries(spans: Sequence[Any]) -> list[list[Span]]:
    """Turn `[(b, e), [(b, e), (b, e)], ...]` into a list of span lists (MDETR `tokens_positive` style)."""
    entries = []
    for entry in spans:
        if len(entry) == 2 and all(isinstance(value, int) or hasattr(value, "__index__") for value in entry):
            entries.append([(int(entry[0]), int(entry[1]))])
        else:
            entries.append([(int(begin), int(end)) for begin, end in entry])
    return entries


def _token_chars(encoding: Any, batch_index: int, token: int) -> Any:
    """Character span (`.start`, `.end`) of `token` in sequence `batch_index`; None for special or padding tokens."""
    try:
        return encoding.token_to_chars(batch_index, token)
    except (IndexError, ValueError, TypeError):
        return None


def _split_phrases(token_ids: list[int], period_id: int | None, special_ids: set[int]) -> list[list[int]]:
    """Group token positions into phrases separated by `period_id` tokens, skipping special tokens."""
    phrases: list[list[int]] = []
    current: list[int] = []
    for position, token_id in enumerate(token_ids):
        if token_id in special_ids or token_id == period_id:
            if current:
                phrases.append(current)
            current = []
        else:
            current.append(position)
    if current:
        phrases.append(current)
    return phrases


class Glipv2Processor(ProcessorMixin):
    r"""Wraps a [`Glipv2ImageProcessor`] and a BERT-style fast tokenizer into a single processor.

    Besides `__call__` it builds detection prompts from class names (`build_prompt`, `build_prompts` for label sets
    that do not fit in 256 tokens), maps character spans to token positions (`positive_map`) and turns grounding
    outputs into detections (`post_process_grounded_object_detection`, the Grounding DINO contract).
    """

    def __init__(self, image_processor: Glipv2ImageProcessor, tokenizer: Any) -> None:
        super().__init__(image_processor, tokenizer)

    @classmethod
    def _get_arguments_from_pretrained(
        cls, pretrained_model_name_or_path: str, processor_dict: dict | None = None, **kwargs: Any
    ) -> list[Any]:
        """Load the image processor by its own class, so no Auto registration is needed (remote code included).

        Hub options (token, revision, cache and download settings) reach both halves; `trust_remote_code` reaches
        the tokenizer, so a user who passed it is not asked again.
        """
        from transformers import AutoTokenizer

        kwargs.pop("_from_auto", None)
        hub_keys = ("subfolder", "token", "revision", "cache_dir", "force_download", "local_files_only", "proxies")
        hub = {key: kwargs[key] for key in hub_keys if key in kwargs}
        image_processor = Glipv2ImageProcessor.from_pretrained(pretrained_model_name_or_path, **hub)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return [image_processor, tokenizer]

    # ----------------------------------------------------------------------------------------------- prompts
    def build_prompt(self, labels: Sequence[str], separator: str = DEFAULT_SEPARATOR) -> Glipv2Prompt:
        """Join class names into one prompt, e.g. `["cat", "dog"] -> "cat. dog"`.

        The format is the official evaluation prompt (`create_queries_and_maps`): names joined with
        `DATASETS.SEPARATION_TOKENS = ". "`, no trailing separator. Names are used verbatim (the official code
        first applies `clean_name`; see `clean_label_name`).
        """
        _validate_labels(labels)
        self._label_token_ids(labels)
        return _join_labels(labels, range(len(labels)), separator)

    def _label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        """Each label's token ids (no special tokens added); a label made only of special tokens (e.g. "[SEP]")
        raises: its score would be a special token's. The unknown token stands for a word (an emoji is [UNK])."""
        special = set(self.tokenizer.all_special_ids) - {self.tokenizer.unk_token_id}
        token_ids = [self.tokenizer(label, add_special_tokens=False)["input_ids"] for label in labels]
        for index, (label, ids) in enumerate(zip(labels, token_ids)):
            if not any(token not in special for token in ids):
                raise ValueError(
                    f"Label {index} ({preview(label)}) has no word, only special tokens: nothing to detect."
                )
        return token_ids

    def _num_tokens(self, text: str) -> int:
        """Number of token positions of `text`, special tokens included."""
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def build_prompts(
        self, labels: Sequence[str], max_length: int = MAX_TEXT_LENGTH, separator: str = DEFAULT_SEPARATOR
    ) -> list[Glipv2Prompt]:
        """Split class names into as few prompts as possible, each at most `max_length` tokens.

        Prompts are filled greedily in order (each as full as possible), keep the original label indices in
        `label_ids`, and every label appears in exactly one prompt. A label that does not fit alone raises.
        """
        _validate_labels(labels)
        # Per-label token counts give a first estimate; every chunk is then checked by tokenizing it for real.
        label_lengths = [len(ids) for ids in self._label_token_ids(labels)]
        separator_length = len(self.tokenizer(separator, add_special_tokens=False)["input_ids"])
        special_length = self._num_tokens("")

        def chunk_length(start: int, end: int) -> int:
            return self._num_tokens(separator.join(labels[start:end]))

        prompts = []
        start = 0
        while start < len(labels):
            if chunk_length(start, start + 1) > max_length:
                raise ValueError(
                    f"Label {start} ({preview(labels[start])}) is {chunk_length(start, start + 1)} tokens long with "
                    f"special tokens, more than max_length={max_length}: it cannot fit in any prompt."
                )
            end, estimate = start + 1, special_length + label_lengths[start]
            while end < len(labels) and estimate + separator_length + label_lengths[end] <= max_length:
                estimate += separator_length + label_lengths[end]
                end += 1
            while end > start + 1 and chunk_length(start, end) > max_length:
                end -= 1
            while end < len(labels) and chunk_length(start, end + 1) <= max_length:
                end += 1
            prompts.append(_join_labels(labels[start:end], range(start, end), separator))
            start = end
        return prompts

    # ------------------------------------------------------------------------------------------ positive map
    def positive_map(
        self,
        encoding_or_text: Any,
        spans: Sequence[Any],
        normalize: bool = False,
        batch_index: int = 0,
        text: str | None = None,
    ) -> torch.Tensor:
        """Token positions covered by character spans: the official `create_positive_map`.

        Args:
            encoding_or_text: a caption (`str`, tokenized here) or a fast-tokenizer `BatchEncoding`.
            spans: one entry per row, each a `(begin, end)` span or a list of them (MDETR `tokens_positive`).
            normalize: divide each row by its sum (+1e-6), as the official function returns.
            batch_index: which sequence of a batched `BatchEncoding` the spans refer to.
            text: the caption of an encoding (lets spans be checked against its length).

        Returns:
            `(num_spans, seq_len)` float tensor; `seq_len` is the (padded) length of the encoded sequence.

        A span `(b, e)` covers tokens `char_to_token(b) .. char_to_token(e - 1)`, i.e. every token that overlaps it.
        When `b` or `e - 1` falls on whitespace, the first / last character of the span that has a token is used:
        this extends the official fallbacks (`b + 1`, `b + 2`; `e - 2`, `e - 3`), with the same result wherever they
        find a token, so that a label such as `"   cat"` keeps its token. A last character split into several tokens
        (a Hangul syllable) gives all of them, where the official code keeps only the first. Unlike the official
        code, a span outside its caption or one that maps to no token raises `ValueError` instead of being dropped.
        """
        if isinstance(encoding_or_text, str):
            text = encoding_or_text
            encoding = self.tokenizer(text, add_special_tokens=True)
            batch_index = 0
        else:
            encoding = encoding_or_text
        input_ids = encoding["input_ids"]
        if isinstance(input_ids, torch.Tensor):
            seq_len = input_ids.shape[-1]
        else:
            seq_len = len(input_ids[batch_index]) if input_ids and isinstance(input_ids[0], list) else len(input_ids)
        text_length = len(text) if text is not None else None
        entries = _normalize_span_entries(spans)
        positive = torch.zeros((len(entries), seq_len), dtype=torch.float32)
        for row, entry in enumerate(entries):
            for begin, end in entry:
                begin_token, end_token = self._span_to_tokens(encoding, batch_index, begin, end, text, text_length)
                positive[row, begin_token : end_token + 1] = 1.0
        if normalize:
            positive = positive / (positive.sum(-1, keepdim=True) + 1e-6)
        return positive

    @staticmethod
    def _span_to_tokens(
        encoding: Any, batch_index: int, begin: int, end: int, text: str | None, text_length: int | None
    ) -> tuple[int, int]:
        """First and last token index of the character span `[begin, end)` (see `positive_map`)."""
        where = f"span ({begin}, {end}) of caption {preview(text)}" if text is not None else f"span ({begin}, {end})"
        if begin < 0 or begin >= end or (text_length is not None and end > text_length):
            raise ValueError(
                f"Invalid {where}: need 0 <= begin < end <= len(caption)"
                + (f" = {text_length}." if text_length is not None else ".")
            )

        def char_to_token(position: int) -> int | None:
            if position < 0 or (text_length is not None and position >= text_length):
                return None
            try:
                return encoding.char_to_token(batch_index, position)
            except (IndexError, ValueError, TypeError):
                return None

        # The span may start or end on whitespace: take its first and last characters that have a token (the
        # official fallbacks try only 2 more characters on each side, and drop e.g. a label with 3 leading spaces).
        positions = range(begin, end if text_length is None else min(end, text_length))
        begin_token = next((token for token in map(char_to_token, positions) if token is not None), None)
        end_token = next((token for token in map(char_to_token, reversed(positions)) if token is not None), None)
        if begin_token is None or end_token is None or end_token < begin_token:
            raise ValueError(f"The {where} maps to no token (e.g. only whitespace or beyond the text).")
        # char_to_token gives a character's first token, but one character can give several (a Hangul syllable is
        # split into its jamo): also take the tokens that follow and still start inside the span.
        while (chars := _token_chars(encoding, batch_index, end_token + 1)) is not None and chars.start < end:
            end_token += 1
        return begin_token, end_token

    # ------------------------------------------------------------------------------------------------ __call__
    def _prepare_texts(self, text: Any, max_length: int) -> list[str]:
        """Normalise `text` (str, list of str, list of label lists or `Glipv2Prompt`s) to one string per image."""
        items = [text] if isinstance(text, (str, Glipv2Prompt)) else list(text)
        if not items:
            raise ValueError("text is an empty list: give one prompt per image.")
        texts = []
        for index, item in enumerate(items):
            if isinstance(item, Glipv2Prompt):
                item = item.text
            elif not isinstance(item, str):
                if not isinstance(item, Sequence):
                    raise TypeError(f"Prompt {index} is a {type(item).__name__}; expected a str or a list of labels.")
                item = self.build_prompt(item).text
                num_tokens = self._num_tokens(item)
                if num_tokens > max_length:
                    raise ValueError(
                        f"The labels of prompt {index} make {num_tokens} tokens, more than max_length={max_length}. "
                        "Split them with `processor.build_prompts(labels)` and run the model once per chunk."
                    )
            if not item.strip():
                raise ValueError(f"Prompt {index} is empty or whitespace only ({preview(item)}).")
            texts.append(item)
        return texts

    def _tokenize(self, texts: list[str], max_length: int, return_tensors: str | None, **kwargs: Any) -> Any:
        """Tokenize with padding to the longest prompt; raise (never truncate) when one exceeds `max_length`."""
        for index, text in enumerate(texts):
            num_tokens = self._num_tokens(text)
            if num_tokens > max_length:
                raise ValueError(
                    f"Prompt {index} is {num_tokens} tokens long, more than max_length={max_length} (special tokens "
                    "included); it would be truncated. Shorten it, or for class names use `build_prompts`."
                )
        kwargs.pop("truncation", None)
        kwargs.pop("padding", None)
        return self.tokenizer(texts, padding="longest", truncation=False, return_tensors=return_tensors, **kwargs)

    def __call__(
        self,
        images: Any = None,
        text: Any = None,
        grounding_targets: list[dict[str, Any]] | None = None,
        return_tensors: str | None = "pt",
        max_length: int = MAX_TEXT_LENGTH,
        **kwargs: Any,
    ) -> BatchFeature:
        """Prepare images and prompts (and optional grounding targets) for the model.

        Args:
            images: a PIL image, numpy `(H, W, C)` array, torch `(C, H, W)` tensor or a list of them.
            text: a prompt (str), one prompt per image (list of str), or one label list per image
                (`list[list[str]]`, joined with `build_prompt`). With one image, a flat list of strings is that
                image's label list (as Grounding DINO's processor reads it).
            grounding_targets: per image `{"boxes": (N, 4) xyxy in original pixels, "spans": N span lists}`, and
                optionally `"masks"`: `(N, H, W)` 0/1 at the image's original size (segmentation) and
                `"class_labels"`: N ints, each box's category (detection data: boxes of one category in different
                images are then positives of GLIPv2's inter-image region-word loss).
            return_tensors: "pt" (default), "np" or None.
            max_length: the most tokens a prompt may have, special tokens included (256 in GLIP).
            kwargs: image processor options (e.g. `size`) go to the image processor, the rest to the tokenizer.

        Returns:
            `BatchFeature` with `pixel_values` `(B, 3, H, W)`, `pixel_mask` `(B, H, W)`, `input_ids`,
            `attention_mask` (and `token_type_ids`) `(B, T)`, and with targets `labels`: per image
            `{"boxes": (N, 4) normalised cxcywh, "positive_map": (N, T) float 0/1}` (and `"masks"` `(N, h, w)` bool,
            resized with the image to its unpadded size in `pixel_values`; `"class_labels"` `(N,)` int64 when
            given).
        """
        if images is None and text is None:
            raise ValueError("Give images, text or both.")
        image_keys = set(self.image_processor.valid_kwargs.__annotations__)
        image_kwargs = {key: kwargs.pop(key) for key in list(kwargs) if key in image_keys}
        flat_images = flatten_images(images) if images is not None else None
        if flat_images is not None and len(flat_images) == 1 and _is_label_list(text):
            text = [list(text)]  # one image and a flat list: its labels, as Grounding DINO's processor reads it
        texts = self._prepare_texts(text, max_length) if text is not None else None
        if flat_images is not None and texts is not None and len(flat_images) != len(texts):
            raise ValueError(
                f"Got {len(flat_images)} images but {len(texts)} prompts; give one prompt per image (for the class "
                "names of a single image pass them as one list: text=[labels])."
            )
        data: dict[str, Any] = {}
        if flat_images is not None:
            data.update(self.image_processor(flat_images, return_tensors=return_tensors, **image_kwargs))
        encoding = None
        if texts is not None:
            encoding = self._tokenize(texts, max_length, return_tensors, **kwargs)
            data.update(encoding)
        batch = BatchFeature(data=data)
        if grounding_targets is not None:
            if flat_images is None or encoding is None:
                raise ValueError("grounding_targets need both images and text.")
            exif = image_kwargs.get("do_exif_transpose", getattr(self.image_processor, "do_exif_transpose", True))
            sizes = [get_image_size(image, exif) for image in flat_images]
            batch["labels"] = self._prepare_targets(grounding_targets, sizes, encoding, texts)
            if any("masks" in target for target in grounding_targets):
                pixel_mask = torch.as_tensor(data["pixel_mask"])
                processed = [(int(m.any(1).sum()), int(m.any(0).sum())) for m in pixel_mask]
                for index, (target, label) in enumerate(zip(grounding_targets, batch["labels"])):
                    if "masks" in target:
                        masks = _checked_masks(target["masks"], index, len(label["boxes"]), sizes[index])
                        label["masks"] = resize_masks(masks, processed[index])
        return batch

    # ------------------------------------------------------------------------------------------------- targets
    def _prepare_targets(
        self, grounding_targets: list[dict[str, Any]], sizes: list[tuple[int, int]], encoding: Any, texts: list[str]
    ) -> list[dict[str, torch.Tensor]]:
        """Validate boxes, normalise them to cxcywh in [0, 1] and build each image's `(N, T)` positive map."""
        if len(grounding_targets) != len(sizes):
            raise ValueError(f"Got {len(sizes)} images but {len(grounding_targets)} grounding_targets.")
        labels = []
        num_clipped = 0
        for index, (target, (height, width)) in enumerate(zip(grounding_targets, sizes)):
            boxes, clipped = _validate_and_clip_boxes(target["boxes"], index, height, width)
            num_clipped += clipped
            spans = target["spans"]
            if len(spans) != len(boxes):
                raise ValueError(f"Image {index}: {len(boxes)} boxes but {len(spans)} span lists.")
            scale = torch.tensor([width, height, width, height], dtype=torch.float64)
            center_size = xyxy_to_cxcywh(boxes / scale)
            positive_map = self.positive_map(encoding, spans, batch_index=index, text=texts[index])
            label = {"boxes": center_size.to(torch.float32), "positive_map": positive_map}
            if "class_labels" in target:
                label["class_labels"] = _checked_class_labels(target["class_labels"], index, len(boxes))
            labels.append(label)
        if num_clipped:
            warnings.warn(
                f"{num_clipped} box(es) extended beyond their image and were clipped to it.", UserWarning, stacklevel=3
            )
        return labels

    # ----------------------------------------------------------------------------------------- post-processing
    def _label_positive_maps(
        self, labels: Sequence[str], seq_len: int, input_ids: torch.Tensor | None, index: int
    ) -> torch.Tensor:
        """`(num_labels, seq_len)` positive map of the prompt `build_prompt(labels)`, checked against `input_ids`."""
        prompt = self.build_prompt(labels)
        encoding = self.tokenizer(prompt.text)
        token_ids = list(encoding["input_ids"])
        if len(token_ids) > seq_len:
            raise ValueError(
                f"text_labels[{index}] make a prompt of {len(token_ids)} tokens but the logits have {seq_len}."
            )
        if input_ids is not None and [int(t) for t in input_ids[: len(token_ids)]] != token_ids:
            raise ValueError(
                f"text_labels[{index}] do not give the prompt the model was run on ({prompt.text!r} tokenizes "
                "differently from input_ids)."
            )
        positive_map = self.positive_map(encoding, prompt.label_spans, text=prompt.text)
        return torch.nn.functional.pad(positive_map, (0, seq_len - positive_map.shape[1]))

    def _phrase_positive_maps(self, input_ids: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, list[str]]:
        """Phrases of a prompt (tokens between "." tokens) as a `(num_phrases, seq_len)` map and their text."""
        token_ids = [int(t) for t in input_ids[:seq_len]]
        period_id = self.tokenizer.convert_tokens_to_ids(".")
        special_ids = set(self.tokenizer.all_special_ids)
        phrases = _split_phrases(token_ids, period_id, special_ids)
        positive_map = torch.zeros((len(phrases), seq_len), dtype=torch.float32)
        names = []
        for row, positions in enumerate(phrases):
            positive_map[row, positions] = 1.0
            names.append(self.tokenizer.decode([token_ids[p] for p in positions]).strip())
        return positive_map, names

    def post_process_grounded_object_detection(
        self,
        outputs: Any,
        input_ids: torch.Tensor | None = None,
        threshold: float = 0.05,
        text_threshold: float | None = None,
        target_sizes: torch.Tensor | list[tuple[int, int]] | None = None,
        text_labels: list[list[str]] | list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Turn grounding outputs into detections, with Grounding DINO's processor contract.

        Args:
            outputs: model output with `logits` `(B, A, T)`, `pred_boxes` `(B, A, 4)` normalised cxcywh,
                `centerness` `(B, A)`, `spatial_shapes` `(L, 2)` and `input_ids` `(B, T')`.
            input_ids: `(B, T')` token ids; defaults to `outputs.input_ids`.
            threshold: minimum class score (official GLIP: 0.05).
            text_threshold: accepted for API compatibility and ignored: GLIP scores a label by the mean of its
                tokens' sigmoids (official `convert_grounding_to_od_logits`), so there is no per-token threshold.
            target_sizes: `(B, 2)` `(height, width)` per image; boxes are absolute xyxy in that size.
            text_labels: per image the label list the prompt was built from (as given to `__call__`); labels then
                index into it. Without it, the prompt is split into phrases at "." tokens.

        Returns:
            Per image `{"scores": (N,), "boxes": (N, 4) xyxy, "labels": (N,) int64, "text_labels": list[str]}`.
        """
        from .post_processing import post_process_grounding

        del text_threshold  # see the docstring
        positive_maps, names, target_sizes = self._named_labels(outputs, input_ids, text_labels, target_sizes)
        results = post_process_grounding(
            outputs.logits,
            outputs.pred_boxes,
            outputs.centerness,
            outputs.spatial_shapes,
            positive_maps,
            threshold=threshold,
            target_sizes=target_sizes,
        )
        for result, label_names in zip(results, names):
            result["labels"] = result["labels"].to(torch.int64)
            result["text_labels"] = [label_names[label] for label in result["labels"].tolist()]
        return results

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.3,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: torch.Tensor | list[tuple[int, int]] | None = None,
        text_labels: list[list[str]] | list[str] | None = None,
        input_ids: torch.Tensor | None = None,
        return_coco_annotation: bool = False,
        return_binary_maps: bool = False,
        top_k: int = 100,
    ) -> list[dict[str, Any]]:
        """Instances of an open-vocabulary prompt (or a referring expression) from [`Glipv2ForInstanceSegmentation`]
        outputs: GLIP's detections among the mask candidates, each with its mask at the target size.

        Labels are named as in [`post_process_grounded_object_detection`] (`text_labels`, else the prompt's phrases).

        Returns:
            Per image `{"segmentation", "segments_info", "scores", "labels", "boxes", "masks", "text_labels"}`
            (see `Glipv2ImageProcessor.post_process_instance_segmentation`); each segment's info also has `label`.
        """
        positive_maps, names, target_sizes = self._named_labels(outputs, input_ids, text_labels, target_sizes)
        results = self.image_processor.post_process_instance_segmentation(
            outputs,
            threshold=threshold,
            mask_threshold=mask_threshold,
            overlap_mask_area_threshold=overlap_mask_area_threshold,
            target_sizes=target_sizes,
            return_coco_annotation=return_coco_annotation,
            return_binary_maps=return_binary_maps,
            top_k=top_k,
            positive_maps=positive_maps,
        )
        for result, label_names in zip(results, names):
            result["text_labels"] = [label_names[label] for label in result["labels"].tolist()]
            for segment in result["segments_info"]:
                segment["label"] = label_names[segment["label_id"]]
        return results

    def _named_labels(
        self, outputs: Any, input_ids: torch.Tensor | None, text_labels: Any, target_sizes: Any
    ) -> tuple[list[torch.Tensor], list[list[str]], torch.Tensor | None]:
        """Per image the label-token maps and label names of the prompt, and the checked target sizes."""
        logits = outputs.logits
        batch_size, seq_len = logits.shape[0], logits.shape[-1]
        input_ids = input_ids if input_ids is not None else getattr(outputs, "input_ids", None)
        if target_sizes is not None:
            if len(target_sizes) != batch_size:
                raise ValueError(f"Got {len(target_sizes)} target_sizes for a batch of {batch_size} images.")
            target_sizes = torch.as_tensor(target_sizes, device=logits.device)
        if text_labels is not None and all(isinstance(label, str) for label in text_labels):
            text_labels = [text_labels]
        if text_labels is not None and len(text_labels) != batch_size:
            raise ValueError(f"Got {len(text_labels)} text_labels lists for a batch of {batch_size} images.")
        if text_labels is None and input_ids is None:
            raise ValueError("Give text_labels, or input_ids (directly or as outputs.input_ids), to name the labels.")
        positive_maps, names = [], []
        for index in range(batch_size):
            ids = input_ids[index] if input_ids is not None else None
            if text_labels is not None:
                positive_maps.append(self._label_positive_maps(text_labels[index], seq_len, ids, index))
                names.append(list(text_labels[index]))
            else:
                positive_map, phrase_names = self._phrase_positive_maps(ids, seq_len)
                positive_maps.append(positive_map)
                names.append(phrase_names)
        positive_maps = [positive_map.to(logits.device, logits.dtype) for positive_map in positive_maps]
        return positive_maps, names, target_sizes


def resize_masks(masks: Any, size: tuple[int, int]) -> torch.Tensor:
    """`(N, H, W)` 0/1 masks (tensor or array) resized to `size` `(height, width)`: bilinear, then above 1/2 (a
    resized mask keeps its area, as the image's bilinear resize keeps a shape's). Returns bool `(N, *size)`."""
    values = torch.as_tensor(numpy.asarray(masks) if not isinstance(masks, torch.Tensor) else masks).float()
    if tuple(values.shape[1:]) != tuple(size):
        if len(values):
            values = torch.nn.functional.interpolate(values[:, None], size=tuple(size), mode="bilinear")[:, 0]
        else:
            values = values.new_zeros(0, *size)
    return values > 0.5


def _checked_masks(masks: Any, index: int, num_boxes: int, size: tuple[int, int]) -> torch.Tensor:
    """Image `index`'s `(N, H, W)` masks, checked: one per box, at the image's original `size`."""
    masks = torch.as_tensor(numpy.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if masks.dim() != 3 or masks.shape[0] != num_boxes or tuple(masks.shape[1:]) != tuple(size):
        raise ValueError(
            f"Image {index}: masks must be (num_boxes={num_boxes}, {size[0]}, {size[1]}) 0/1 at the image's size, "
            f"got {tuple(masks.shape)}."
        )
    return masks


def _checked_class_labels(class_labels: Any, index: int, num_boxes: int) -> torch.Tensor:
    """Image `index`'s `(N,)` int64 class labels, checked: one integer per box."""
    values = torch.as_tensor(class_labels)
    if values.numel() == 0:  # an image without boxes: `[]` reads as float
        values = values.to(torch.int64).reshape(-1)
    if values.dim() != 1 or values.shape[0] != num_boxes or values.is_floating_point() or values.is_complex():
        raise ValueError(
            f"Image {index}: class_labels must be {num_boxes} integers (one per box), got {tuple(values.shape)} "
            f"{values.dtype}."
        )
    return values.to(torch.int64)


def _is_label_list(text: Any) -> bool:
    """A flat list (or tuple) of two or more strings."""
    return isinstance(text, (list, tuple)) and len(text) > 1 and all(isinstance(item, str) for item in text)


def _validate_and_clip_boxes(boxes: Any, index: int, height: int, width: int) -> tuple[torch.Tensor, int]:
    """Check `(N, 4)` xyxy boxes of image `index` (size `height` x `width`) and clip them to the image.

    Raises `ValueError` for a NaN/infinite value, a zero or negative area, or a box entirely outside the image.
    Returns the clipped boxes (float64) and how many were clipped.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    if boxes.numel() == 0:
        return boxes.reshape(0, 4), 0
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"Image {index}: boxes must have shape (N, 4) xyxy, got {tuple(boxes.shape)}.")
    for box_index, box in enumerate(boxes.tolist()):
        x1, y1, x2, y2 = box
        if not all(math.isfinite(value) for value in box):
            raise ValueError(f"Image {index}, box {box_index} has a NaN or infinite value: {box}.")
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"Image {index}, box {box_index} has zero or negative area (xyxy {box}).")
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            raise ValueError(
                f"Image {index}, box {box_index} (xyxy {box}) lies entirely outside the image "
                f"(width {width}, height {height})."
            )
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    num_clipped = int((clipped != boxes).any(dim=1).sum())
    return clipped, num_clipped


def clean_label_name(name: str) -> str:
    """The official `clean_name` (`od_to_grounding.py`): drop "(...)", "_" -> " ", collapse double spaces.

    E.g. LVIS `"bow_(weapon)"` -> `"bow "`. Not applied automatically; call it before `build_prompt` to match the
    official prompts exactly.
    """
    name = re.sub(r"\(.*\)", "", name)
    name = re.sub(r"_", " ", name)
    name = re.sub(r"  ", " ", name)
    return name


__all__ = ["Glipv2Processor", "Glipv2Prompt", "clean_label_name", "resize_masks"]
