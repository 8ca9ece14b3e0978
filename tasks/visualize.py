"""Drawing detections and masks: the one helper behind the demo report's pictures.

Labels are readable at any image size: white text on a filled tag in the box's colour, the font scaled with the
image, tags kept inside the image and moved down when they would cover an earlier tag. Each label gets its own
colour from a fixed palette.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image, ImageDraw, ImageFont

# Tableau 10: distinct, readable behind white text.
PALETTE = (
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
    (188, 189, 34),
    (127, 127, 127),
)
# Small images are enlarged first so that labels stay legible.
MIN_SIDE = 384


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def draw_detections(image: Image.Image, detections: list[dict[str, Any]]) -> Image.Image:
    """A copy of `image` (RGB, enlarged to at least `MIN_SIDE` pixels) with each detection's mask (tinted), box and
    `"<label> <score>"` tag. A detection is `{"label", "score", "box": {"xmin", "ymin", "xmax", "ymax"}}` in the
    image's pixels, optionally with `"mask"` (a PIL "L" image of the image's size, nonzero inside), as the pipelines
    return them; a mask without a box gets its tag at the mask's bounding box."""
    image = image.convert("RGB")
    factor = max(1.0, MIN_SIDE / max(image.size))
    size = (round(image.width * factor), round(image.height * factor))
    image = image.resize(size, Image.Resampling.BICUBIC) if factor > 1 else image.copy()
    colours: dict[str, tuple[int, int, int]] = {}
    for detection in detections:
        colour = colours.setdefault(str(detection.get("label", "")), PALETTE[len(colours) % len(PALETTE)])
        if detection.get("mask") is not None:
            mask = detection["mask"].convert("L").resize(image.size, Image.Resampling.NEAREST)
            tint = Image.new("RGB", image.size, colour)
            image.paste(Image.blend(image, tint, 0.5), (0, 0), mask.point(lambda value: 255 if value else 0))
    canvas = ImageDraw.Draw(image)
    font = _font(max(12, round(max(image.size) / 36)))
    width = max(2, round(max(image.size) / 250))
    placed: list[tuple[float, float, float, float]] = []
    for detection in detections:
        label = str(detection.get("label", ""))
        colour = colours[label]
        box = detection.get("box") or _mask_box(detection.get("mask"))
        if box is None:
            continue
        xy = [box["xmin"] * factor, box["ymin"] * factor, box["xmax"] * factor, box["ymax"] * factor]
        canvas.rectangle(xy, outline=colour, width=width)
        text = f"{label} {detection['score']:.2f}" if "score" in detection else label
        left, top, right, bottom = canvas.textbbox((0, 0), text, font=font)
        tag_w, tag_h = right - left + 2 * width, bottom - top + 2 * width
        x = min(max(xy[0], 0), image.width - tag_w)
        y = xy[1] - tag_h if xy[1] - tag_h >= 0 else xy[1]
        while any(x < p[2] and p[0] < x + tag_w and y < p[3] and p[1] < y + tag_h for p in placed):
            y += tag_h  # below the tag it would cover
        y = min(y, image.height - tag_h)
        placed.append((x, y, x + tag_w, y + tag_h))
        canvas.rectangle([x, y, x + tag_w, y + tag_h], fill=colour)
        canvas.text((x + width - left, y + width - top), text, fill=(255, 255, 255), font=font)
    return image


def _mask_box(mask: Image.Image | None) -> dict[str, float] | None:
    """The bounding box of a mask's nonzero pixels (None for no mask or an empty one)."""
    bounds = mask.getbbox() if mask is not None else None
    if bounds is None:
        return None
    return dict(zip(("xmin", "ymin", "xmax", "ymax"), map(float, bounds)))


def png_base64(image: Image.Image) -> str:
    """The image as a base64 PNG (for an HTML `data:` URL)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


__all__ = ["PALETTE", "draw_detections", "png_base64"]
