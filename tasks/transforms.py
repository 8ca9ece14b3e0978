"""Training transforms for GLIP-style data: multi-scale resize, horizontal flip with left/right caption swap, and
the object-detection-to-grounding prompt conversion.

Images are PIL images; boxes are absolute ``[x0, y0, x1, y1]`` in continuous pixel coordinates; character spans
are ``[begin, end)`` into the caption. Randomness always comes from an explicit ``random.Random``.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from PIL import Image

logger = logging.getLogger(__name__)

Boxes = list[list[float]]
Spans = list[list[int]]


def resize_output_size(width: int, height: int, min_size: int, max_size: int | None) -> tuple[int, int]:
    """``(out_height, out_width)`` with the shorter side ``min_size`` and the longer side at most ``max_size``.

    Same arithmetic as the official ``Resize.get_size`` (maskrcnn_benchmark/data/transforms/transforms.py):
    when the longer side would exceed ``max_size`` the shorter side becomes ``round(max_size * short / long)``,
    and the longer side is then truncated with ``int``.
    """
    size = min_size
    if max_size is not None:
        short, long = float(min(width, height)), float(max(width, height))
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize(
    image: Image.Image, boxes: Sequence[Sequence[float]], out_size: tuple[int, int]
) -> tuple[Image.Image, Boxes]:
    """Resize ``image`` to ``out_size = (height, width)`` (bilinear) and scale the xyxy ``boxes`` per axis."""
    out_height, out_width = out_size
    ratio_x, ratio_y = out_width / image.width, out_height / image.height
    scaled = [[x0 * ratio_x, y0 * ratio_y, x1 * ratio_x, y1 * ratio_y] for x0, y0, x1, y1 in boxes]
    if (out_width, out_height) != image.size:
        image = image.resize((out_width, out_height), Image.BILINEAR)
    return image, scaled


@dataclass
class MultiScaleResize:
    """GLIP's training resize: the shorter side is a random choice of ``min_sizes``, the longer capped at
    ``max_size`` (the official defaults are ``(480, 560, ..., 800)`` and 1333)."""

    min_sizes: Sequence[int] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    max_size: int | None = 1333

    def __call__(
        self, image: Image.Image, boxes: Sequence[Sequence[float]], rng: random.Random
    ) -> tuple[Image.Image, Boxes]:
        """Resize ``image`` and its xyxy ``boxes`` to a randomly chosen scale."""
        size = resize_output_size(image.width, image.height, rng.choice(list(self.min_sizes)), self.max_size)
        return resize(image, boxes, size)


_LEFT_RIGHT = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def swap_left_right(caption: str, tokens_positive: Sequence[Sequence[Sequence[int]]] = ()) -> tuple[str, list[Spans]]:
    """Swap the whole words "left" and "right" (keeping their case) and move the spans with the text.

    "right" is one character longer than "left", so every span boundary after a swapped word shifts; a span
    boundary at a swapped word's start or end stays at the new word's start or end. (The official GLIP flip
    replaces substrings -- also inside "bright" -- and leaves the spans unchanged, which breaks them.)

    Args:
        caption: the caption.
        tokens_positive: per object, its list of ``[begin, end)`` spans.

    Returns:
        ``(new_caption, new_tokens_positive)``.
    """
    pieces, edits, cursor, shift = [], [], 0, 0
    for match in _LEFT_RIGHT.finditer(caption):
        replacement = _SWAP[match.group(0)]
        pieces += [caption[cursor : match.start()], replacement]
        new_start = match.start() + shift
        shift += len(replacement) - len(match.group(0))
        edits.append((match.start(), match.end(), new_start, new_start + len(replacement)))
        cursor = match.end()
    pieces.append(caption[cursor:])

    def move(position: int, is_end: bool) -> int:
        offset = 0
        for old_start, old_end, new_start, new_end in edits:
            if old_start < position < old_end:
                return new_end if is_end else new_start
            if position < old_end:
                break
            offset = new_end - old_end
        return position + offset

    spans = [
        [[move(begin, False), move(end, True)] for begin, end in object_spans] for object_spans in tokens_positive
    ]
    return "".join(pieces), spans


def horizontal_flip(
    image: Image.Image,
    boxes: Sequence[Sequence[float]],
    caption: str | None = None,
    tokens_positive: Sequence[Sequence[Sequence[int]]] = (),
) -> tuple[Image.Image, Boxes, str | None, list[Spans]]:
    """Mirror ``image`` and its xyxy ``boxes`` (``x0' = W - x1``, ``x1' = W - x0``, continuous coordinates);
    when a caption is given, swap "left"/"right" in it with :func:`swap_left_right`."""
    width = image.width
    flipped = [[width - x1, y0, width - x0, y1] for x0, y0, x1, y1 in boxes]
    spans = [[list(span) for span in object_spans] for object_spans in tokens_positive]
    if caption is not None:
        caption, spans = swap_left_right(caption, tokens_positive)
    return image.transpose(Image.FLIP_LEFT_RIGHT), flipped, caption, spans


def clean_category_name(name: str) -> str:
    """The official ``clean_name``: drop parenthesised parts, underscores to spaces (LVIS ``bow_(weapon)``)."""
    name = re.sub(r"\(.*\)", "", name)
    name = re.sub(r"_", " ", name)
    name = re.sub(r"  ", " ", name)
    return name


def approximate_token_count(text: str) -> int:
    """Words plus punctuation marks: a tokenizer-free lower bound of a WordPiece token count."""
    return len(re.findall(r"\w+|[^\w\s]", text))


@dataclass
class GroundingPrompt:
    """The result of :func:`od_to_grounding`.

    Attributes:
        caption: class names joined with the separator, e.g. ``"dog. person. chair"``.
        label_to_span: category id -> ``[begin, end)`` of its name in ``caption``.
        positive_ids: categories present in the image and in the caption.
        negative_ids: sampled absent categories in the caption.
        dropped_positive_ids: present categories that did not fit in ``max_tokens`` (their objects have
            ``keep`` False); empty unless the image alone has too many classes.
        tokens_positive: per input object, ``[[begin, end]]`` of its class name, or ``[]`` when dropped.
        keep: per input object, whether its class is in the caption.
    """

    caption: str
    label_to_span: dict[int, list[int]]
    positive_ids: list[int]
    negative_ids: list[int]
    dropped_positive_ids: list[int] = field(default_factory=list)
    tokens_positive: list[Spans] = field(default_factory=list)
    keep: list[bool] = field(default_factory=list)


def _fit(labels: list[int], names: Mapping[int, str], budget: int, count_tokens: Callable[[str], int]) -> list[int]:
    """The longest prefix of ``labels`` whose ``name + ". "`` token counts stay within ``budget``."""
    kept, used = [], 0
    for label in labels:
        used += count_tokens(clean_category_name(names[label]) + ". ")
        if used > budget:
            break
        kept.append(label)
    return kept


def od_to_grounding(
    object_category_ids: Sequence[int],
    categories: Mapping[int, str],
    rng: random.Random,
    num_negatives: int,
    max_tokens: int = 256,
    count_tokens: Callable[[str], int] = approximate_token_count,
    separator: str = ". ",
    negative_pool: Sequence[int] | None = None,
) -> GroundingPrompt:
    """Turn detection labels into a grounding prompt, as the official
    ``convert_object_detection_to_grounding_optimized_for_od``.

    All classes present in the image are positives (shuffled). Up to ``num_negatives`` absent classes are sampled
    from ``negative_pool`` (default: every category) and kept while the total token count stays within
    ``max_tokens``; then positives and negatives are shuffled together and joined with ``separator``. Negatives are
    always dropped before positives; if the positives alone overflow, the ones that do not fit are dropped, listed
    in ``dropped_positive_ids`` and logged as a warning (the official ``check_for_positive_overflow``).

    Unlike the official code, negatives are sampled among absent classes only, so ``num_negatives`` is exact.

    Args:
        object_category_ids: category id of each object in the image.
        categories: category id -> name.
        rng: the only source of randomness (same seed, same prompt).
        num_negatives: how many absent classes to add at most.
        max_tokens: token budget of the class names (256, BERT's limit in GLIP).
        count_tokens: tokens in a string, e.g. ``lambda s: len(tokenizer.tokenize(s))``.
        separator: between class names (GLIP's ``SEPARATION_TOKENS``).
        negative_pool: the categories negatives may come from.
    """
    unknown = sorted(set(object_category_ids) - set(categories))
    if unknown:
        raise ValueError(f"unknown category ids {unknown}")
    positives = list(dict.fromkeys(object_category_ids))
    rng.shuffle(positives)
    kept_positives = _fit(positives, categories, max_tokens, count_tokens)
    dropped = positives[len(kept_positives) :]
    if dropped:
        logger.warning(
            "prompt overflow: dropped %d positive classes %s beyond %d tokens", len(dropped), dropped, max_tokens
        )
    used = sum(count_tokens(clean_category_name(categories[label]) + ". ") for label in kept_positives)
    pool = [label for label in (categories if negative_pool is None else negative_pool) if label not in positives]
    negatives = rng.sample(pool, min(num_negatives, len(pool)))
    negatives = _fit(negatives, categories, max_tokens - used, count_tokens)
    labels = negatives + kept_positives
    rng.shuffle(labels)
    caption, label_to_span = "", {}
    for index, label in enumerate(labels):
        name = clean_category_name(categories[label])
        label_to_span[label] = [len(caption), len(caption) + len(name)]
        caption += name + (separator if index < len(labels) - 1 else "")
    spans = [[label_to_span[label]] if label in label_to_span else [] for label in object_category_ids]
    return GroundingPrompt(
        caption=caption,
        label_to_span=label_to_span,
        positive_ids=kept_positives,
        negative_ids=negatives,
        dropped_positive_ids=dropped,
        tokens_positive=spans,
        keep=[bool(span) for span in spans],
    )
