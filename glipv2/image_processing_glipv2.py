"""Image processor for GLIPv2-style models.

Reproduces the official GLIP test-time transform (``maskrcnn_benchmark/data/transforms``: ``Resize`` ->
``ToTensor`` -> ``Normalize(format="bgr255")`` and ``to_image_list`` padding) as a transformers image processor
that round-trips through ``preprocessor_config.json``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict, load_image
from transformers.processing_utils import ImagesKwargs, Unpack

try:  # torch is a hard dependency of the library, but keep the image processor importable without it
    import torch
except ImportError:  # pragma: no cover
    torch = None

# Official GLIP configs: INPUT.PIXEL_MEAN / PIXEL_STD, given in BGR order for INPUT.TO_BGR255=True
# (maskrcnn_benchmark/config/defaults.py and configs/pretrain/glip_*.yaml).
GLIP_PIXEL_MEAN_BGR = (103.53, 116.28, 123.675)
GLIP_PIXEL_STD_BGR = (57.375, 57.12, 58.395)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class Glipv2ImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    channel_order (`str`, *optional*, defaults to `"bgr"`):
        Channel order of `pixel_values`: `"bgr"` (official GLIP) or `"rgb"`. `image_mean`/`image_std` are given in
        this order.
    size_divisor (`int`, *optional*, defaults to 32):
        Pad height and width up to a multiple of this (official `DATALOADER.SIZE_DIVISIBILITY`). 0 or None: pad only
        to the batch maximum.
    do_exif_transpose (`bool`, *optional*, defaults to `True`):
        Apply the EXIF orientation of PIL images. The official GLIP loader does not (`pil_loader` only calls
        `convert("RGB")`); set False to match it, e.g. for COCO annotations given in stored-pixel coordinates.
    """

    channel_order: str
    size_divisor: int
    do_exif_transpose: bool


def get_glip_resize_size(
    height: int, width: int, shortest_edge: int, longest_edge: int | None = None
) -> tuple[int, int]:
    """Output `(height, width)` of the official GLIP resize for an image of `(height, width)`.

    Same arithmetic as `Resize.get_size` in the official `maskrcnn_benchmark/data/transforms/transforms.py`
    (torchvision's old `get_size` with a max-size cap): the short side becomes `shortest_edge` unless the long side
    would exceed `longest_edge`, in which case the short side becomes `int(round(longest_edge * short / long))`; the
    long side is then `int(short_target * long / short)` (truncated, not rounded). The only addition is that no side
    is returned smaller than 1 (the official code would return 0 for aspect ratios beyond ~1:2666).
    """
    size = shortest_edge
    if longest_edge is not None:
        min_original_size = float(min(width, height))
        max_original_size = float(max(width, height))
        if max_original_size / min_original_size * size > longest_edge:
            size = int(round(longest_edge * min_original_size / max_original_size))
    size = max(size, 1)
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return max(int(size * height / width), 1), size
    return size, max(int(size * width / height), 1)


def _image_description(image: Any) -> str:
    """A short description of an input for error messages."""
    shape = getattr(image, "shape", None)
    if shape is not None:
        return f"{type(image).__module__}.{type(image).__name__} of shape {tuple(shape)}"
    return f"{type(image).__module__}.{type(image).__name__}"


class Glipv2ImageFileError(ValueError):
    """An image file that cannot be used. The message is `"<path>: <problem>"`; `path` and `problem` are kept."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def open_image(source: str | os.PathLike) -> Image.Image:
    """Open an image file and decode it fully, keeping its stored mode and EXIF orientation.

    Unlike transformers' `load_image` (which converts to 8-bit RGB and applies the EXIF orientation), the image
    processor then does both as documented in `to_rgb_array`: 16-bit values are scaled rather than clipped, and
    `do_exif_transpose` is honoured. `http(s)://` and `data:image/` URLs, and strings without a "." in their last
    path component (possibly base64, whose alphabet has no "."), are passed on to `load_image`.

    Raises:
        Glipv2ImageFileError (a `ValueError`) naming the file: no such file, an empty file, not an image, corrupt or
        truncated data, or more pixels than PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, kept on:
        the size is read from the header, so the pixels are never allocated).
    """
    path = os.fspath(source)
    if path.startswith(("http://", "https://", "data:image/")):
        return load_image(path)
    if not os.path.isfile(path):
        if "." not in os.path.basename(path):
            return load_image(path)
        raise Glipv2ImageFileError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise Glipv2ImageFileError(path, "empty file (0 bytes), not an image")
    try:
        with Image.open(path) as image:  # leaving the block closes the file; the decoded pixels stay
            image.load()  # `Image.verify` alone misses truncated JPEGs
    except Image.DecompressionBombError as error:
        raise Glipv2ImageFileError(
            path,
            f"too many pixels, refused as a possible decompression bomb ({error}); raise PIL.Image.MAX_IMAGE_PIXELS "
            "only for files you trust",
        ) from error
    except UnidentifiedImageError as error:
        raise Glipv2ImageFileError(path, "not an image file (PIL cannot identify its format)") from error
    except Exception as error:  # PIL raises many types for broken data (OSError, SyntaxError, EOFError, ...)
        raise Glipv2ImageFileError(path, f"corrupt or truncated image data ({error})") from error
    return image


def _pil_to_array(image: Image.Image, index: int, exif_transpose: bool = True) -> np.ndarray:
    """Convert a PIL image of any mode to an RGB `(H, W, 3)` array (uint8, or float32 on the 0-255 scale).

    EXIF orientation is applied first. 16-bit modes are scaled to 0-255 as float32 (dividing by 257) instead of
    PIL's `convert("RGB")`, which would clip every value above 255; alpha is dropped as `convert("RGB")` does, with a
    warning when some pixels are actually transparent.
    """
    try:
        image.load()  # decode here, so a broken lazily opened file is reported by name, not deep inside PIL
    except Exception as error:  # PIL raises many types for broken data (OSError, SyntaxError, EOFError, ...)
        name = f" ({image.filename})" if getattr(image, "filename", "") else ""
        raise ValueError(
            f"Image {index}{name} cannot be decoded: corrupt or truncated image data ({error})."
        ) from error
    if exif_transpose:
        image = ImageOps.exif_transpose(image)
    if image.width == 0 or image.height == 0:
        raise ValueError(f"Image {index} has zero size (width={image.width}, height={image.height}).")
    if image.mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(image, dtype=np.float32) / 257.0
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("I", "F"):
        gray = np.asarray(image, dtype=np.float32)
        if gray.min() < 0 or gray.max() > 255:
            raise ValueError(
                f"Image {index} has PIL mode {image.mode!r} with values in [{gray.min()}, {gray.max()}]; the 0-255 "
                "scale cannot be inferred. Convert it to an 8-bit mode (e.g. 'L' or 'RGB') first."
            )
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[:, :, 3]
        if (alpha < 255).any():
            warnings.warn(
                f"Image {index} has transparent pixels; the alpha channel is dropped (colour values kept as stored).",
                stacklevel=4,
            )
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def _array_to_rgb(array: np.ndarray, index: int, channels_first: bool) -> np.ndarray:
    """Convert an `(H, W)`, `(H, W, C)` (or `(C, H, W)` if `channels_first`) array to RGB `(H, W, 3)`.

    uint8 arrays are on the 0-255 scale; float arrays must be in [0, 1] (the torchvision convention) and are
    returned as float32 on the 0-255 scale. C may be 1 (grey), 3 (RGB) or 4 (RGBA, alpha dropped).
    """
    if array.ndim == 3 and channels_first:
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"Image {index} must have 2 or 3 dimensions, got shape {tuple(array.shape)}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"Image {index} has zero size (height={array.shape[0]}, width={array.shape[1]}).")
    num_channels = array.shape[2]
    if num_channels not in (1, 3, 4):
        layout = "(C, H, W)" if channels_first else "(H, W, C)"
        raise ValueError(
            f"Image {index} has {num_channels} channels (shape {layout} = {tuple(array.shape)}); expected 1 (grey), "
            "3 (RGB) or 4 (RGBA). numpy arrays must be (H, W, C), torch tensors (C, H, W)."
        )
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_:
        array = array.astype(np.float32)
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1 or np.isnan(array).any()):
            raise ValueError(
                f"Image {index} is a float array with values outside [0, 1] (min {np.nanmin(array)}, max "
                f"{np.nanmax(array)}); float images must be in [0, 1], or pass uint8 on the 0-255 scale."
            )
        array = array * 255.0
    else:
        raise ValueError(f"Image {index} has dtype {array.dtype}; expected uint8 (0-255) or float (0-1).")
    if num_channels == 1:
        array = np.repeat(array, 3, axis=2)
    elif num_channels == 4:
        array = array[:, :, :3]
    return array


def to_rgb_array(image: Any, index: int = 0, exif_transpose: bool = True) -> np.ndarray:
    """Convert one input image (PIL, numpy `(H, W[, C])`, torch `(C, H, W)`/`(H, W)`) to RGB `(H, W, 3)`.

    Returns uint8, or float32 on the 0-255 scale for float and 16-bit inputs (kept in float so nothing is rounded).
    Raises `TypeError` for a non-image and `ValueError` for empty or uninterpretable images, naming `index`.
    """
    if isinstance(image, Image.Image):
        return _pil_to_array(image, index, exif_transpose)
    if torch is not None and isinstance(image, torch.Tensor):
        return _array_to_rgb(image.detach().cpu().numpy(), index, channels_first=True)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, index, channels_first=False)
    raise TypeError(
        f"Image {index} is a {type(image).__module__}.{type(image).__name__}; expected a PIL.Image.Image, a numpy "
        "array (H, W, C) or a torch tensor (C, H, W)."
    )


def _exif_swaps_axes(image: Image.Image) -> bool:
    """Whether the EXIF orientation of `image` is a transpose/rotation by 90 degrees (tags 5-8)."""
    return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)


def get_image_size(image: Any, exif_transpose: bool = True) -> tuple[int, int]:
    """`(height, width)` of one input image as the processor sees it (after EXIF orientation), without decoding.

    numpy arrays are `(H, W[, C])`, torch tensors `(C, H, W)` or `(H, W)`.
    """
    if isinstance(image, Image.Image):
        width, height = image.size
        if exif_transpose and _exif_swaps_axes(image):
            width, height = height, width
        return height, width
    if torch is not None and isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    raise TypeError(f"Expected an image, got {type(image).__module__}.{type(image).__name__}.")


def flatten_images(images: Any) -> list[Any]:
    """Turn a single image, a list/tuple of images or a 4-D batch into a flat list of single images."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("No images were given (empty list).")
        return list(images)
    if torch is not None and isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images.unbind(0))
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images]


class Glipv2ImageProcessor(PilBackend):
    r"""GLIP image processor: RGB conversion, GLIP resize, channel order, normalisation and padding.

    Defaults follow the official GLIP test transform: shortest side 800, longest side at most 1333 (bilinear,
    PIL), BGR on the 0-255 scale, mean `[103.53, 116.28, 123.675]` and std `[57.375, 57.12, 58.395]` (BGR order),
    zero padding at the bottom/right to a multiple of 32 and to the largest image of the batch.

    Other presets can use RGB/ImageNet statistics with `channel_order="rgb"`, `do_rescale=True` (0-1 scale),
    `image_mean`/`image_std`.

    Returns a `BatchFeature` with
        - `pixel_values`: `(batch_size, 3, height, width)` float32, padded;
        - `pixel_mask`: `(batch_size, height, width)` int64, 1 on real pixels and 0 on padding.
    """

    valid_kwargs = Glipv2ImageProcessorKwargs
    model_input_names = ["pixel_values", "pixel_mask"]

    do_convert_rgb = True
    do_resize = True
    size = {"shortest_edge": 800, "longest_edge": 1333}
    default_to_square = False
    resample = PILImageResampling.BILINEAR
    do_rescale = False
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = list(GLIP_PIXEL_MEAN_BGR)
    image_std = list(GLIP_PIXEL_STD_BGR)
    do_pad = True
    channel_order = "bgr"
    size_divisor = 32
    do_exif_transpose = True

    def __init__(self, **kwargs: Unpack[Glipv2ImageProcessorKwargs]) -> None:
        super().__init__(**kwargs)
        self._check_channel_order(self.channel_order)

    @staticmethod
    def _check_channel_order(channel_order: str) -> None:
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}.")

    def get_resized_size(self, height: int, width: int, size: SizeDict | dict | None = None) -> tuple[int, int]:
        """The `(height, width)` an image of `(height, width)` has after resizing, before padding.

        `size` defaults to `self.size`; returns the input size when `do_resize` is False.
        """
        if not self.do_resize and size is None:
            return int(height), int(width)
        size = self.size if size is None else size
        shortest_edge = size["shortest_edge"] if isinstance(size, dict) else size.shortest_edge
        longest_edge = size.get("longest_edge") if isinstance(size, dict) else size.longest_edge
        if shortest_edge is None:
            raise ValueError(f"size must have a 'shortest_edge' key, got {dict(size)}.")
        return get_glip_resize_size(int(height), int(width), shortest_edge, longest_edge)

    def _prepare_image_like_inputs(
        self, images: Any, *args: Any, do_exif_transpose: bool | None = True, **kwargs: Any
    ) -> list[np.ndarray]:
        """Validate inputs and convert each to an RGB `(H, W, 3)` array (uint8 or float32 on the 0-255 scale)."""
        exif = True if do_exif_transpose is None else do_exif_transpose
        return [to_rgb_array(image, index, exif) for index, image in enumerate(flatten_images(images))]

    def resize(
        self, image: np.ndarray, size: SizeDict, resample: PILImageResampling | None = None, **kwargs: Any
    ) -> np.ndarray:
        """Resize an RGB `(H, W, 3)` array with PIL to the GLIP size; uint8 goes through PIL "RGB" exactly as the
        official code does (torchvision `F.resize` on a PIL image), float32 channel by channel in PIL "F" mode."""
        resample = PILImageResampling.BILINEAR if resample is None else resample
        out_height, out_width = self.get_resized_size(image.shape[0], image.shape[1], size)
        if (out_height, out_width) == image.shape[:2]:
            return image
        if image.dtype == np.uint8:
            return np.asarray(Image.fromarray(image).resize((out_width, out_height), resample))
        channels = []
        for channel in range(3):
            plane = Image.fromarray(np.ascontiguousarray(image[:, :, channel], dtype=np.float32))  # PIL mode "F"
            channels.append(np.asarray(plane.resize((out_width, out_height), resample)))
        return np.stack(channels, axis=2)

    def _pad_batch(
        self, images: list[np.ndarray], size_divisor: int | None, pad_size: SizeDict | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Zero-pad `(3, h, w)` images bottom/right to a common size, as the official `to_image_list` does.

        Returns `pixel_values` `(B, 3, H, W)` float32 and `pixel_mask` `(B, H, W)` int64.
        """
        height = max(image.shape[1] for image in images)
        width = max(image.shape[2] for image in images)
        if pad_size is not None and pad_size.height and pad_size.width:
            if pad_size.height < height or pad_size.width < width:
                raise ValueError(f"pad_size {dict(pad_size)} is smaller than the largest image ({height}, {width}).")
            height, width = pad_size.height, pad_size.width
        if size_divisor:
            height = -(-height // size_divisor) * size_divisor
            width = -(-width // size_divisor) * size_divisor
        pixel_values = np.zeros((len(images), 3, height, width), dtype=np.float32)
        pixel_mask = np.zeros((len(images), height, width), dtype=np.int64)
        for index, image in enumerate(images):
            pixel_values[index, :, : image.shape[1], : image.shape[2]] = image
            pixel_mask[index, : image.shape[1], : image.shape[2]] = 1
        return pixel_values, pixel_mask

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | None,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        do_pad: bool | None,
        pad_size: SizeDict | None,
        return_tensors: str | None,
        channel_order: str = "bgr",
        size_divisor: int | None = 32,
        **kwargs: Any,
    ) -> BatchFeature:
        """Resize, reorder channels, rescale, normalise and pad a list of RGB `(H, W, 3)` arrays.

        Order of operations follows the official `Normalize(format="bgr255")`: channel flip, scale, then
        `(x - mean) / std` with `mean`/`std` in the output channel order; padding is applied after normalisation,
        so padded pixels are exactly 0.
        """
        self._check_channel_order(channel_order)
        processed = []
        for image in images:
            if do_resize:
                image = self.resize(image, size=size, resample=resample)
            image = np.moveaxis(image.astype(np.float32), -1, 0)  # (3, h, w), 0-255 scale
            if channel_order == "bgr":
                image = image[::-1]
            if do_rescale:
                image = image * np.float32(rescale_factor)
            if do_normalize:
                mean = np.asarray(image_mean, dtype=np.float32).reshape(3, 1, 1)
                std = np.asarray(image_std, dtype=np.float32).reshape(3, 1, 1)
                image = (image - mean) / std
            processed.append(np.ascontiguousarray(image, dtype=np.float32))
        if not do_pad and len({image.shape for image in processed}) > 1:
            raise ValueError(
                "do_pad=False but the images have different sizes after resizing: "
                f"{[tuple(image.shape[1:]) for image in processed]}."
            )
        pixel_values, pixel_mask = self._pad_batch(processed, size_divisor if do_pad else None, pad_size)
        return BatchFeature(data={"pixel_values": pixel_values, "pixel_mask": pixel_mask}, tensor_type=return_tensors)

    def preprocess(self, images: Any, **kwargs: Unpack[Glipv2ImageProcessorKwargs]) -> BatchFeature:
        """Preprocess an image or a batch of images (see the class docstring). `return_tensors` defaults to "pt"."""
        kwargs.setdefault("return_tensors", "pt")
        return super().preprocess(images, **kwargs)

    def post_process_object_detection(
        self, outputs: Any, threshold: float = 0.05, target_sizes: Any = None, top_k: int = 100
    ) -> list[dict[str, torch.Tensor]]:
        """Detections for transformers' `object-detection` and `zero-shot-object-detection` pipelines.

        - Closed vocabulary ([`Glipv2ForObjectDetection`], outputs with `label_chunks`): `logits` are label logits;
          `labels` are ids of `config.id2label`.
        - Open vocabulary ([`Glipv2ForGrounding`] run on one phrase, as the stock zero-shot pipeline does): the whole
          prompt is one label (its real tokens without the first and last, i.e. [CLS] and [SEP]); `labels` are 0.

        Official GLIP post-processing in both cases (see `post_processing.post_process_grounding`).

        Returns:
            Per image `{"scores": (N,), "labels": (N,) int64, "boxes": (N, 4) absolute xyxy}`.
        """
        return self.detections(outputs, threshold, target_sizes, top_k)

    def detections(
        self,
        outputs: Any,
        threshold: float = 0.05,
        target_sizes: Any = None,
        top_k: int = 100,
        positive_maps: list[torch.Tensor] | None = None,
        mask_candidates_only: bool = False,
    ) -> list[dict[str, torch.Tensor]]:
        """[`post_process_object_detection`], and for open-vocabulary prompts of several labels their
        `positive_maps` (per image `(num_labels, T)`, from [`Glipv2Processor`]). With `mask_candidates_only` only the
        anchors of `outputs.mask_anchor_indices` are decoded and each result has their `anchor_indices` (with
        several prompt chunks `chunk * A + anchor`)."""
        from .post_processing import keep_only_anchors, post_process_grounding

        def get(name: str) -> Any:
            return outputs[name] if isinstance(outputs, dict) and name in outputs else getattr(outputs, name, None)

        logits, boxes, centerness = get("logits"), get("pred_boxes"), get("centerness")
        spatial_shapes, label_chunks = get("spatial_shapes"), get("label_chunks")
        candidates = get("mask_anchor_indices") if mask_candidates_only else None
        batch_size = logits.shape[0]
        options = {"threshold": threshold, "max_detections": top_k, "target_sizes": target_sizes}
        options["return_anchor_indices"] = mask_candidates_only
        if label_chunks is None:
            if positive_maps is None:
                mask, input_ids = get("text_attention_mask"), get("input_ids")
                lengths = mask.sum(-1) if mask is not None else torch.full((batch_size,), logits.shape[-1])
                positive_maps = [
                    _label_tokens(index, int(length), input_ids[index] if input_ids is not None else None, logits)
                    for index, length in enumerate(lengths.tolist())
                ]
            if candidates is not None:
                logits = keep_only_anchors(logits, candidates)
            return post_process_grounding(logits, boxes, centerness, spatial_shapes, positive_maps, **options)
        if boxes.dim() == 3:
            boxes, centerness = boxes[:, None], centerness[:, None]
        num_anchors = boxes.shape[2]
        per_chunk = []
        for chunk in range(boxes.shape[1]):
            label_ids = (label_chunks == chunk).nonzero().flatten()
            maps = [torch.eye(len(label_ids), device=logits.device)] * batch_size
            chunk_logits = logits[..., label_ids]
            if candidates is not None:
                in_chunk = torch.where(candidates // num_anchors == chunk, candidates % num_anchors, -1)
                chunk_logits = keep_only_anchors(chunk_logits, torch.where(candidates >= 0, in_chunk, -1))
            results = post_process_grounding(
                chunk_logits, boxes[:, chunk], centerness[:, chunk], spatial_shapes, maps, **options
            )
            for result in results:
                result["labels"] = label_ids[result["labels"]]
                if "anchor_indices" in result:
                    result["anchor_indices"] = result["anchor_indices"] + chunk * num_anchors
            per_chunk.append(results)
        merged = []
        keys = (
            ("scores", "labels", "boxes", "anchor_indices") if mask_candidates_only else ("scores", "labels", "boxes")
        )
        for index in range(batch_size):  # labels differ across chunks, so class-wise NMS is already complete
            parts = [results[index] for results in per_chunk]
            scores = torch.cat([part["scores"] for part in parts])
            order = scores.argsort(descending=True, stable=True)[:top_k]
            merged.append({key: torch.cat([part[key] for part in parts])[order] for key in keys})
        return merged

    def post_process_instance_segmentation(
        self,
        outputs: Any,
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        overlap_mask_area_threshold: float = 0.8,
        target_sizes: Any = None,
        return_coco_annotation: bool = False,
        return_binary_maps: bool = False,
        top_k: int = 100,
        positive_maps: list[torch.Tensor] | None = None,
    ) -> list[dict[str, Any]]:
        """Instances (box, label, score and mask) from the outputs of [`Glipv2ForSegmentation`] (closed vocabulary,
        transformers' stock `image-segmentation` pipeline) or [`Glipv2ForInstanceSegmentation`] (one label per
        prompt here; for prompts of several labels use [`Glipv2Processor.post_process_instance_segmentation`]).

        The detections are GLIP's (`post_process_object_detection`: score `> threshold`, NMS, at most `top_k`) among
        the model's mask candidates; each mask is pasted into its box at the target size.

        Args:
            outputs: model outputs with `pred_masks` and `mask_anchor_indices`.
            threshold: minimum detection score. mask_threshold: a pixel belongs to a mask above this probability.
            overlap_mask_area_threshold: see `post_processing.instance_segments`.
            target_sizes: `(B, 2)` `(height, width)` per image (default: the model input sizes).
            return_coco_annotation: per segment a COCO compressed RLE (for COCO results files).
            return_binary_maps: per segment a `(H, W)` binary map.
            positive_maps: per image `(num_labels, T)` label-token maps of an open-vocabulary prompt.

        Returns:
            Per image transformers' instance-segmentation dict `{"segmentation", "segments_info"}` (see
            `post_processing.instance_segments`) plus `"boxes"` `(N, 4)` absolute xyxy, `"scores"`, `"labels"` and
            `"masks"` `(N, H, W)` probabilities of every detection (segments index these).
        """
        from .post_processing import detection_masks, instance_segments

        def get(name: str) -> Any:
            return outputs[name] if isinstance(outputs, dict) and name in outputs else getattr(outputs, name, None)

        pred_masks = get("pred_masks")
        if pred_masks is None:
            raise ValueError(
                "These outputs have no masks (pred_masks): run a model with a mask head in eval mode without labels "
                "(Glipv2ForInstanceSegmentation, or Glipv2ForSegmentation for a closed vocabulary)."
            )
        candidates, image_sizes = get("mask_anchor_indices"), get("image_sizes")
        if target_sizes is None:
            target_sizes = image_sizes
        results = self.detections(outputs, threshold, target_sizes, top_k, positive_maps, mask_candidates_only=True)
        segmented = []
        for index, result in enumerate(results):
            height, width = (int(v) for v in torch.as_tensor(target_sizes[index]).reshape(2).tolist())
            masks = detection_masks(
                pred_masks[index], candidates[index], result["anchor_indices"], result["boxes"], height, width
            )
            segments = instance_segments(
                result["scores"],
                result["labels"],
                masks,
                mask_threshold,
                overlap_mask_area_threshold,
                return_binary_maps,
                return_coco_annotation,
            )
            segments.update(scores=result["scores"], labels=result["labels"], boxes=result["boxes"], masks=masks)
            segmented.append(segments)
        return segmented


def _label_tokens(index: int, length: int, input_ids: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """`(1, T)` map of the label tokens of a one-label prompt `[CLS] label [SEP]`: the positions between the first
    and the last real token, without tokens equal to those two (a label written "[SEP]" is a special token)."""
    positive = torch.zeros(1, logits.shape[-1], device=logits.device)
    positive[0, 1 : length - 1] = 1.0
    if input_ids is not None and length >= 2:
        ids = input_ids[:length]
        positive[0, :length] *= ((ids != ids[0]) & (ids != ids[length - 1])).to(positive.dtype)
    if not positive.any():
        raise ValueError(
            f"Prompt {index} has no word between [CLS] and [SEP] (an empty, whitespace-only or special-token-only "
            "label): there is nothing to detect; give a label with words."
        )
    return positive


__all__ = [
    "Glipv2ImageFileError",
    "Glipv2ImageProcessor",
    "flatten_images",
    "get_glip_resize_size",
    "get_image_size",
    "open_image",
    "to_rgb_array",
]
