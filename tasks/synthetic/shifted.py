"""A domain-shifted synthetic detection set: pink, cyan and brown diamonds, crosses and rings on a lighter
background, none of them in the demo data. Fine-tuning (LoRA, prompt tuning) is measured on it."""

from __future__ import annotations

import os
import random
from collections import Counter
from typing import Any

from PIL import Image, ImageDraw

from tasks.common import write_json
from tasks.synthetic.scenes import SceneObject, coco_annotation, describe, pair_name, sample_scene

SHIFTED_COLORS: dict[str, tuple[int, int, int]] = {
    "pink": (250, 120, 190),
    "cyan": (20, 200, 215),
    "brown": (135, 80, 35),
}
SHIFTED_SHAPES: tuple[str, ...] = ("diamond", "cross", "ring")
SHIFTED_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in SHIFTED_COLORS for s in SHIFTED_SHAPES)
SHIFTED_CATEGORIES = [{"id": i + 1, "name": pair_name(p), "supercategory": p[1]} for i, p in enumerate(SHIFTED_PAIRS)]


def draw_shifted_scene(objects: list[SceneObject], image_size: int, background: tuple[int, int, int]) -> Image.Image:
    """Renders diamonds, crosses and rings filling their boxes (pixels `x0..x1-1`, `y0..y1-1`)."""
    image = Image.new("RGB", (image_size, image_size), background)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        right, bottom = x1 - 1, y1 - 1
        fill = SHIFTED_COLORS[obj.color]
        cx, cy, third = (x0 + right) / 2, (y0 + bottom) / 2, (x1 - x0) / 6
        if obj.shape == "diamond":
            draw.polygon([(cx, y0), (right, cy), (cx, bottom), (x0, cy)], fill=fill)
        elif obj.shape == "cross":
            draw.rectangle((cx - third, y0, cx + third, bottom), fill=fill)
            draw.rectangle((x0, cy - third, right, cy + third), fill=fill)
        else:
            draw.ellipse((x0, y0, right, bottom), outline=fill, width=max(2, (x1 - x0) // 6))
    return image


def generate_shifted_shapes(
    output_dir: str | os.PathLike,
    seed: int = 0,
    num_train: int = 400,
    num_val: int = 100,
    image_size: int = 128,
    max_objects: int = 4,
) -> dict[str, Any]:
    """A detection + grounding set of pink/cyan/brown diamonds, crosses and rings on a darker background (none of
    them in `tasks.synthetic`), written in its layout: `images/<split>/`, `annotations/instances_<split>.json`,
    `annotations/grounding_<split>.json` for splits `train` and `val`. Deterministic in `seed`."""
    rng = random.Random(seed)
    background = (200, 205, 190)
    os.makedirs(os.path.join(output_dir, "annotations"), exist_ok=True)
    category_ids = {category["name"]: category["id"] for category in SHIFTED_CATEGORIES}
    next_id, counts = 1, Counter()
    for split, count in (("train", num_train), ("val", num_val)):
        os.makedirs(os.path.join(output_dir, "images", split), exist_ok=True)
        images, annotations, grounding_images = [], [], []
        for image_id in range(next_id, next_id + count):
            objects = sample_scene(rng, list(SHIFTED_PAIRS), image_size, max_objects)
            name = f"{image_id:06d}.png"
            draw_shifted_scene(objects, image_size, background).save(os.path.join(output_dir, "images", split, name))
            image = {"id": image_id, "file_name": name, "width": image_size, "height": image_size}
            caption, spans = describe(objects)
            images.append(image)
            grounding_images.append({**image, "caption": caption, "dataset_name": "shifted_shapes"})
            for index, (obj, span) in enumerate(zip(objects, spans)):
                annotation = coco_annotation(obj, image_id * 10 + index, image_id, category_ids[obj.name])
                annotations.append({**annotation, "tokens_positive": [list(span)]})
                counts[obj.name] += 1
        next_id += count
        instances = [{k: v for k, v in a.items() if k != "tokens_positive"} for a in annotations]
        base = {"info": {"description": f"domain-shifted shapes, split {split}"}, "categories": SHIFTED_CATEGORIES}
        write_json(
            os.path.join(output_dir, "annotations", f"instances_{split}.json"),
            {**base, "images": images, "annotations": instances},
        )
        write_json(
            os.path.join(output_dir, "annotations", f"grounding_{split}.json"),
            {**base, "images": grounding_images, "annotations": annotations},
        )
    return {"seed": seed, "categories": SHIFTED_CATEGORIES, "objects": dict(counts)}


__all__ = ["SHIFTED_CATEGORIES", "SHIFTED_COLORS", "SHIFTED_PAIRS", "SHIFTED_SHAPES", "generate_shifted_shapes"]
