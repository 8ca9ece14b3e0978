"""Drawing detections and masks: the one helper behind the demo report's pictures and the web demo's
(`tasks/app.py`).

Labels are readable at any image size: text on a filled tag in the box's colour (white, or black where white would
be faint: WCAG contrast), the font scaled with the image, every box drawn before any tag so that no outline crosses a
label, tags kept inside the image (a label too long for it is shortened with an ellipsis) and moved off the tags
already placed. Each label gets its own colour from a fixed palette.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image, ImageDraw, ImageFont

# Tableau 10: distinct colours.
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
# WCAG 2 contrast ratio for large text (AA): below it, white text on a tag is too faint and black is used.
MIN_CONTRAST = 3.0

Box = tuple[float, float, float, float]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _luminance(colour: tuple[int, int, int]) -> float:
    """WCAG 2 relative luminance of an sRGB colour."""
    linear = [(c / 255 / 12.92) if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in colour]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """White, or black where white's contrast ratio on `background` is below [`MIN_CONTRAST`]."""
    return (255, 255, 255) if 1.05 / (_luminance(background) + 0.05) >= MIN_CONTRAST else (0, 0, 0)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_tag(box: Box, size: tuple[float, float], image_size: tuple[int, int], placed: list[Box]) -> Box:
    """Where a tag of `size` (width, height) goes for `box` (xyxy): above the box's top-left corner (inside the box
    when there is no room above), inside the image, then moved down (or, at the image's bottom, up) past the tags
    already `placed` until it covers none of them (it stays put when no free place exists)."""
    width, height = size
    x = max(0.0, min(box[0], image_size[0] - width))
    start = box[1] - height if box[1] - height >= 0 else box[1]
    start = max(0.0, min(start, image_size[1] - height))
    for step in (height, -height):
        y = start
        while 0 <= y <= image_size[1] - height:
            if not any(_overlaps((x, y, x + width, y + height), other) for other in placed):
                return (x, y, x + width, y + height)
            y += step
    return (x, start, x + width, start + height)


def _fit(canvas: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: float) -> str:
    """`text`, shortened with an ellipsis until it is at most `width` pixels wide."""
    if canvas.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and canvas.textlength(text + "\u2026", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "\u2026"


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
    boxes = []
    for detection in detections:
        box = detection.get("box") or _mask_box(detection.get("mask"))
        if box is not None:
            xy = (box["xmin"] * factor, box["ymin"] * factor, box["xmax"] * factor, box["ymax"] * factor)
            boxes.append((detection, xy))
            canvas.rectangle(xy, outline=colours[str(detection.get("label", ""))], width=width)
    placed: list[Box] = []
    for detection, xy in boxes:  # tags after every box: no outline is drawn across a label
        label = str(detection.get("label", ""))
        score = f" {detection['score']:.2f}" if "score" in detection else ""
        text = _fit(canvas, label, font, image.width - 2 * width - canvas.textlength(score, font=font)) + score
        left, top, right, bottom = canvas.textbbox((0, 0), text, font=font)
        tag = place_tag(xy, (right - left + 2 * width, bottom - top + 2 * width), image.size, placed)
        placed.append(tag)
        canvas.rectangle(tag, fill=colours[label])
        canvas.text((tag[0] + width - left, tag[1] + width - top), text, fill=text_colour(colours[label]), font=font)
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


__all__ = ["MIN_SIDE", "PALETTE", "draw_detections", "place_tag", "png_base64", "text_colour"]
