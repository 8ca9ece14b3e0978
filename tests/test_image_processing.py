"""Tests of Glipv2ImageProcessor against hand computations of the official GLIP transform."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from glipv2.image_processing_glipv2 import Glipv2ImageProcessor, get_glip_resize_size, get_image_size

MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)


def expected_glip_values(rgb: np.ndarray) -> np.ndarray:
    """Hand computation of the official `Normalize(format="bgr255")`: (3, H, W) BGR, (x - mean) / std."""
    bgr = rgb[:, :, ::-1].astype(np.float32)
    return ((bgr - MEAN_BGR) / STD_BGR).transpose(2, 0, 1)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (480, 640, (800, 1066)),  # 800 * 640 / 480 = 1066.67, truncated
        (427, 640, (800, 1199)),  # typical COCO image: int(1199.06)
        (640, 427, (1199, 800)),
        (800, 1333, (800, 1333)),  # already the target size: returned unchanged
        (1000, 3000, (444, 1332)),  # capped: round(1333 * 1000 / 3000) = 444, long side int(444 * 3) = 1332
        (100, 50, (1332, 666)),  # round(666.5) = 666 (Python rounds half to even, like the official code)
        (800, 800, (800, 800)),
        (10, 10, (800, 800)),
    ],
)
def test_resize_size_matches_official_arithmetic(height: int, width: int, expected: tuple[int, int]) -> None:
    assert get_glip_resize_size(height, width, 800, 1333) == expected
    assert Glipv2ImageProcessor().get_resized_size(height, width) == expected


def test_resize_size_without_cap_and_custom_size() -> None:
    assert get_glip_resize_size(100, 50, 800, None) == (1600, 800)
    processor = Glipv2ImageProcessor(size={"shortest_edge": 224, "longest_edge": 400})
    # short side round(400 * 100 / 300) = 133; long side int(133 * 300 / 100) = 399 (not 400: truncated)
    assert processor.get_resized_size(100, 300) == (133, 399)


def test_values_bgr_normalisation_padding_and_mask() -> None:
    rgb = np.array(
        [[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[10, 20, 30], [40, 50, 60], [70, 80, 90]]], dtype=np.uint8
    )  # (2, 3, 3): short side 2 == shortest_edge, so the official get_size returns the size unchanged
    processor = Glipv2ImageProcessor(size={"shortest_edge": 2, "longest_edge": 1333})
    out = processor(Image.fromarray(rgb))
    assert out["pixel_values"].dtype == torch.float32 and out["pixel_mask"].dtype == torch.int64
    assert tuple(out["pixel_values"].shape) == (1, 3, 32, 32)
    assert tuple(out["pixel_mask"].shape) == (1, 32, 32)
    values = out["pixel_values"][0].numpy()
    np.testing.assert_allclose(values[:, :2, :3], expected_glip_values(rgb), rtol=0, atol=1e-5)
    # red pixel in BGR: channel 0 is blue = (0 - 103.53) / 57.375
    assert values[0, 0, 0] == pytest.approx(-103.53 / 57.375, abs=1e-6)
    assert values[2, 0, 0] == pytest.approx((255 - 123.675) / 58.395, abs=1e-6)
    assert np.all(values[:, 2:, :] == 0) and np.all(values[:, :, 3:] == 0)
    mask = out["pixel_mask"][0].numpy()
    assert mask[:2, :3].sum() == 6 and mask.sum() == 6


def test_resize_is_pil_bilinear_and_batch_padding() -> None:
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    second = rng.integers(0, 256, (20, 5, 3), dtype=np.uint8)
    processor = Glipv2ImageProcessor(size={"shortest_edge": 48, "longest_edge": 100})
    out = processor([first, second])
    # first: (30, 40) -> (48, int(48 * 40 / 30) = 64); second: (20, 5) -> 4 * 48 > 100, capped: short side
    # round(100 * 5 / 20) = 25, long side int(25 * 20 / 5) = 100 -> (100, 25). Batch max (100, 64) -> (128, 64).
    assert tuple(out["pixel_values"].shape) == (2, 3, 128, 64)
    resized = np.asarray(Image.fromarray(first).resize((64, 48), Image.BILINEAR))
    np.testing.assert_allclose(out["pixel_values"][0, :, :48, :64].numpy(), expected_glip_values(resized), atol=1e-5)
    assert out["pixel_mask"][0].sum() == 48 * 64 and out["pixel_mask"][0, :48, :64].all()
    assert out["pixel_mask"][1].sum() == 100 * 25 and out["pixel_mask"][1, :100, :25].all()
    assert torch.all(out["pixel_values"][1, :, 100:, :] == 0)


def test_input_types_agree() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    processor = Glipv2ImageProcessor(size={"shortest_edge": 40, "longest_edge": 100})
    from_pil = processor(Image.fromarray(rgb))["pixel_values"]
    from_numpy = processor(rgb)["pixel_values"]
    from_tensor = processor(torch.from_numpy(rgb).permute(2, 0, 1))["pixel_values"]
    from_batch = processor(torch.from_numpy(rgb).permute(2, 0, 1)[None])["pixel_values"]
    assert (
        torch.equal(from_pil, from_numpy) and torch.equal(from_pil, from_tensor) and torch.equal(from_pil, from_batch)
    )
    # float tensors in [0, 1] (torchvision convention) give the same values up to the uint8 rounding of the resize
    from_float = processor(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)["pixel_values"]
    assert torch.allclose(from_pil, from_float, atol=1.0 / 57.0 + 1e-4)


def test_rgb_imagenet_preset() -> None:
    rgb = np.array([[[255, 128, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]], dtype=np.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    processor = Glipv2ImageProcessor(
        channel_order="rgb", do_rescale=True, image_mean=mean, image_std=std, size_divisor=4, do_resize=False
    )
    out = processor(rgb)["pixel_values"][0]
    assert tuple(out.shape) == (3, 4, 4)
    expected = (np.array([255, 128, 0]) / 255 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), expected, atol=1e-5)


def _make_mode_image(mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.array([[0, 257 * 100], [65535, 257]], dtype=np.uint16))
    base = Image.fromarray(np.array([[[200, 100, 50], [0, 0, 0]], [[255, 255, 255], [10, 20, 30]]], dtype=np.uint8))
    return base.convert(mode)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1"])
def test_odd_modes_become_rgb(mode: str) -> None:
    image = _make_mode_image(mode)
    processor = Glipv2ImageProcessor(do_resize=False, do_normalize=False, channel_order="rgb", size_divisor=1)
    out = processor(image)["pixel_values"][0]
    assert tuple(out.shape) == (3, 2, 2)
    if mode == "I;16":  # scaled to 0-255 (not clipped as PIL's convert("RGB") would)
        np.testing.assert_allclose(out[0].numpy(), [[0, 100], [255, 1]], atol=1e-4)
        assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])
    else:
        expected = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
        np.testing.assert_array_equal(out.numpy(), expected)


def test_transparent_alpha_warns() -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Glipv2ImageProcessor(do_resize=False)(Image.fromarray(rgba))  # opaque: no warning
    rgba[0, 0, 3] = 0
    with pytest.warns(UserWarning, match="transparent"):
        Glipv2ImageProcessor(do_resize=False)(Image.fromarray(rgba))


def test_exif_orientation_is_applied() -> None:
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", exif=exif)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    processor = Glipv2ImageProcessor(do_resize=False, size_divisor=1)
    assert tuple(processor(image)["pixel_values"].shape) == (1, 3, 3, 2)
    assert get_image_size(image) == (3, 2) and get_image_size(image, exif_transpose=False) == (2, 3)
    unrotated = Glipv2ImageProcessor(do_resize=False, size_divisor=1, do_exif_transpose=False)
    assert tuple(unrotated(image)["pixel_values"].shape) == (1, 3, 2, 3)


def test_save_load_round_trip(tmp_path: object) -> None:
    processor = Glipv2ImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}, channel_order="rgb")
    processor.save_pretrained(str(tmp_path))
    assert (tmp_path / "preprocessor_config.json").exists()
    loaded = Glipv2ImageProcessor.from_pretrained(str(tmp_path))
    assert loaded.to_dict() == processor.to_dict()
    assert loaded.channel_order == "rgb" and loaded.size.shortest_edge == 64 and loaded.size_divisor == 32
    image = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    assert torch.equal(loaded(image)["pixel_values"], processor(image)["pixel_values"])
    default = Glipv2ImageProcessor()
    default.save_pretrained(str(tmp_path / "default"))
    reloaded = Glipv2ImageProcessor.from_pretrained(str(tmp_path / "default"))
    assert list(reloaded.image_mean) == [103.53, 116.28, 123.675] and reloaded.channel_order == "bgr"


def test_return_numpy() -> None:
    out = Glipv2ImageProcessor(do_resize=False)(np.zeros((5, 6, 3), dtype=np.uint8), return_tensors="np")
    assert isinstance(out["pixel_values"], np.ndarray) and out["pixel_values"].shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        ("path/to/image.jpg", TypeError, "str"),
        ({"image": 1}, TypeError, "dict"),
        ([np.zeros((4, 4, 3), np.uint8), 3.5], TypeError, "Image 1 is a builtins.float"),
        ([np.zeros((4, 4, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)], ValueError, r"Image 1 has zero size.*0"),
        (np.zeros((4, 4, 2), np.uint8), ValueError, "2 channels"),
        (np.zeros((4, 4, 5), np.uint8), ValueError, "5 channels"),
        (torch.zeros(7, 4, 4), ValueError, "7 channels"),
        (np.full((4, 4, 3), 2.0, np.float32), ValueError, r"outside \[0, 1\]"),
        (np.zeros((4, 4, 3), np.int32), ValueError, "dtype int32"),
        ([], ValueError, "No images"),
    ],
)
def test_bad_inputs_raise(bad: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Glipv2ImageProcessor()(bad)


def test_zero_size_pil_image_raises() -> None:
    with pytest.raises(ValueError, match=r"Image 0 has zero size \(width=0, height=3\)"):
        Glipv2ImageProcessor()(Image.new("RGB", (0, 3)))


def test_bad_channel_order_raises() -> None:
    with pytest.raises(ValueError, match="channel_order"):
        Glipv2ImageProcessor(channel_order="bgra")
