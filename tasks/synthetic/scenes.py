"""Seeded scenes of coloured shapes: sampling, drawing and the text (captions, questions) derived from them."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 60, 180),
    "orange": (245, 135, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
BACKGROUND = (235, 235, 235)

# Held out of training: each colour and each shape of these pairs still appears in training in other pairs.
DEFAULT_HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("blue", "circle"),
    ("green", "triangle"),
    ("yellow", "square"),
)
ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((color, shape) for color in COLORS for shape in SHAPES)


def pair_name(pair: tuple[str, str]) -> str:
    """The category name of a colour-shape pair, e.g. ``"red circle"``."""
    return f"{pair[0]} {pair[1]}"


@dataclass(frozen=True)
class SceneObject:
    """One shape: colour, shape name and its box ``(x0, y0, x1, y1)`` in pixel-edge coordinates."""

    color: str
    shape: str
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        """Category name, e.g. ``"red circle"``."""
        return pair_name((self.color, self.shape))


def coco_annotation(obj: SceneObject, annotation_id: int, image_id: int, category_id: int) -> dict:
    """The COCO instances entry of a drawn object (its box covers pixels `x0..x1-1`, `y0..y1-1`)."""
    x0, y0, x1, y1 = obj.box
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": float((x1 - x0) * (y1 - y0)),
        "iscrowd": 0,
    }


def _overlap_fraction(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area over the smaller box's area."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller


def sample_scene(
    rng: random.Random,
    pairs: list[tuple[str, str]],
    image_size: int,
    max_objects: int = 4,
    max_overlap: float = 0.15,
    must_include: list[tuple[str, str]] | None = None,
) -> list[SceneObject]:
    """Sample 1..``max_objects`` objects with distinct colour-shape pairs, sorted left to right.

    Sizes are 18-32% of the image side; a placement overlapping an earlier object by more than ``max_overlap``
    (of the smaller box) or sharing its horizontal centre is retried, and dropped after 30 tries. When
    ``must_include`` is given, one of its pairs is always the first object placed.
    """
    count = rng.randint(1, max_objects)
    chosen = rng.sample(pairs, min(count, len(pairs)))
    if must_include:
        required = rng.choice(must_include)
        chosen = [required] + [pair for pair in chosen if pair != required][: count - 1]
    objects: list[SceneObject] = []
    for color, shape in chosen:
        for _ in range(30):
            side = rng.randint(int(0.18 * image_size), int(0.32 * image_size))
            x0 = rng.randint(0, image_size - side)
            y0 = rng.randint(0, image_size - side)
            box = (x0, y0, x0 + side, y0 + side)
            centre = x0 * 2 + side
            if all(
                _overlap_fraction(box, other.box) <= max_overlap and centre != other.box[0] + other.box[2]
                for other in objects
            ):
                objects.append(SceneObject(color, shape, box))
                break
    return sorted(objects, key=lambda obj: obj.box[0] + obj.box[2])


def _star_points(box: tuple[int, int, int, int]) -> list[tuple[float, float]]:
    """A five-pointed star stretched so its outer points touch all four edges of ``box``."""
    x0, y0, x1, y1 = box
    cx, radius = (x0 + x1) / 2, (x1 - x0) / 2
    # Outer points at -90 + k*72 degrees span 2 cos(18) r across and (1 + cos(36)) r down: stretch both.
    x_scale = 1 / math.cos(math.radians(18))
    y_scale = (y1 - y0) / (radius * (1 + math.cos(math.radians(36))))
    points = []
    for k in range(10):
        r = radius if k % 2 == 0 else radius * 0.45
        angle = math.radians(-90 + 36 * k)
        points.append((cx + r * math.cos(angle) * x_scale, y0 + (r * math.sin(angle) + radius) * y_scale))
    return points


def _draw_shape(draw: ImageDraw.ImageDraw, obj: SceneObject, fill: int | tuple[int, int, int]) -> None:
    """Draw ``obj``'s shape with ``fill``: the same PIL calls for the scene image and for its masks."""
    x0, y0, x1, y1 = obj.box
    inner = (x0, y0, x1 - 1, y1 - 1)
    if obj.shape == "circle":
        draw.ellipse(inner, fill=fill)
    elif obj.shape == "square":
        draw.rectangle(inner, fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(x0, y1 - 1), ((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1)], fill=fill)
    else:
        draw.polygon(_star_points(inner), fill=fill)


def draw_scene(objects: list[SceneObject], image_size: int) -> Image.Image:
    """Render ``objects`` on a plain background, in list order (a later object covers an earlier one where they
    overlap). A shape fills its box's pixels ``x0..x1-1``, ``y0..y1-1``."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        _draw_shape(draw, obj, COLORS[obj.color])
    return image


def shape_mask(obj: SceneObject, image_size: int) -> np.ndarray:
    """The ``(image_size, image_size)`` boolean mask of the pixels :func:`draw_scene` paints for ``obj`` (the same
    PIL calls, drawn into a mask image)."""
    mask = Image.new("L", (image_size, image_size), 0)
    _draw_shape(ImageDraw.Draw(mask), obj, 1)
    return np.asarray(mask) > 0


def visible_masks(objects: list[SceneObject], image_size: int) -> list[np.ndarray]:
    """Each object's pixels in the image :func:`draw_scene` renders: its shape minus the parts of the objects drawn
    after it (later in the list) that cover it."""
    covered = np.zeros((image_size, image_size), dtype=bool)
    visible = []
    for obj in reversed(objects):
        shape = shape_mask(obj, image_size)
        visible.append(shape & ~covered)
        covered |= shape
    return visible[::-1]


def describe(objects: list[SceneObject]) -> tuple[str, list[tuple[int, int]]]:
    """The scene caption and the character span of each object's name (objects are sorted left to right).

    One object: ``"a red circle."``; two: ``"a red circle to the left of a blue star."``; more:
    ``"a red circle, a blue star and a green square from left to right."``.
    """
    phrases = [f"{_article(obj.name)} {obj.name}" for obj in objects]
    if len(phrases) == 1:
        caption = f"{phrases[0]}."
    elif len(phrases) == 2:
        caption = f"{phrases[0]} to the left of {phrases[1]}."
    else:
        caption = f"{', '.join(phrases[:-1])} and {phrases[-1]} from left to right."
    spans = []
    cursor = 0
    for obj, phrase in zip(objects, phrases):
        begin = caption.index(phrase, cursor) + len(phrase) - len(obj.name)
        spans.append((begin, begin + len(obj.name)))
        cursor = begin + len(obj.name)
    return caption, spans


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def questions(objects: list[SceneObject], rng: random.Random, per_image: int = 3) -> list[tuple[str, str, str]]:
    """Up to ``per_image`` ``(question, answer, answer_type)`` triples answerable from the scene."""
    candidates = [("how many objects are there?", str(len(objects)), "number")]
    shapes = [obj.shape for obj in objects]
    colors = [obj.color for obj in objects]
    for shape in SHAPES:
        candidates.append((f"how many {shape}s are there?", str(shapes.count(shape)), "number"))
    for obj in objects:
        if shapes.count(obj.shape) == 1:
            candidates.append((f"what color is the {obj.shape}?", obj.color, "other"))
        if colors.count(obj.color) == 1:
            candidates.append((f"what shape is the {obj.color} object?", obj.shape, "other"))
    return rng.sample(candidates, min(per_image, len(candidates)))
