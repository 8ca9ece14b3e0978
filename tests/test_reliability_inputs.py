"""Bad-input corpus, generated in a temporary folder: broken and unusual image files, degenerate prompts and empty
annotation texts, sent through the loaders, the processors and the pipelines.

Every input must give either a clear error (a `ValueError` naming the file or the prompt and saying what is wrong;
a `Glipv2DataError` naming file, record and field in the loaders) or the documented handling, checked by value.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline
from transformers.image_utils import load_image

from glipv2 import Glipv2ForGrounding, Glipv2ForQuestionAnswering, Glipv2Processor
from glipv2.image_processing_glipv2 import Glipv2ImageFileError, get_image_size, open_image
from tasks.captioning import load_coco_captions
from tasks.common import Glipv2DataError, SkipReport, image_problem
from tasks.detection import load_coco_detection
from tasks.grounding import load_mdetr_grounding
from tasks.vqa import load_vqa
from tests.conftest import bert_processor, tiny_config

# ----------------------------------------------------------------------------------------------- image corpus
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BOMB_SIDE = 100_000  # 10^10 pixels claimed, more than twice PIL's default MAX_IMAGE_PIXELS (89,478,485)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png() -> bytes:
    """A 150-byte PNG whose IHDR claims BOMB_SIDE x BOMB_SIDE 8-bit grey pixels (valid CRCs, one row of data)."""
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * (BOMB_SIDE // 1000 + 1))
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def _noise() -> Image.Image:
    """64x48 random RGB: no two rows alike, so half a file really lacks half the pixels."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))


def _palette_png() -> bytes:
    """40x20 "P" image: index 0 opaque red, index 1 transparent green, only at pixel (0, 0)."""
    image = Image.new("P", (40, 20), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    image.putpixel((0, 0), 1)
    return _encode(image, "PNG", transparency=1)


def _exif_rotated_jpeg() -> bytes:
    """Stored 40 wide x 20 high, left half red, right half blue, EXIF orientation 6 (display rotated 90 deg CW)."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = image.getexif()
    exif[0x0112] = 6
    return _encode(image, "JPEG", quality=95, exif=exif.tobytes())


def _broken_files() -> dict[str, bytes]:
    jpeg, png = _encode(_noise(), "JPEG", quality=90), _encode(_noise(), "PNG")
    return {
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "x.jpg": b"",
        "text.png": b"this is a text file, not a picture\n",
        "bomb.png": _bomb_png(),
    }


def _odd_files() -> dict[str, bytes]:
    return {
        "cmyk.jpg": _encode(Image.new("CMYK", (40, 20), (0, 255, 255, 0)), "JPEG", quality=95),
        "gray16.png": _encode(Image.fromarray(np.full((20, 40), 40000, dtype=np.uint16)), "PNG"),
        "palette.png": _palette_png(),
        "rgba.png": _encode(Image.new("RGBA", (40, 20), (10, 20, 30, 0)), "PNG"),
        "l.png": _encode(Image.new("L", (40, 20), 77), "PNG"),
        "la.png": _encode(Image.new("LA", (40, 20), (77, 128)), "PNG"),
        "one_pixel.png": _encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"),
        "exif6.jpg": _exif_rotated_jpeg(),
    }


# file -> what `open_image` says after "<path>: " (PIL's own text follows in parentheses where useful)
BROKEN = {
    "truncated.jpg": r"corrupt or truncated image data \(image file is truncated",
    "truncated.png": r"corrupt or truncated image data \(",
    "x.jpg": r"empty file \(0 bytes\), not an image",
    "text.png": r"not an image file \(PIL cannot identify its format\)",
    "bomb.png": r"too many pixels, refused as a possible decompression bomb \(Image size \(10000000000 pixels\)",
}

# file -> (stored PIL mode, (height, width) seen by the processor, {(y, x): expected RGB}, tolerance, warns)
ODD = {
    "cmyk.jpg": ("CMYK", (20, 40), {(10, 20): (255, 0, 0)}, 3.0, False),
    "gray16.png": ("I;16", (20, 40), {(10, 20): (40000 / 257,) * 3}, 1e-3, False),  # scaled, not clipped to 255
    "palette.png": ("P", (20, 40), {(10, 20): (255, 0, 0), (0, 0): (0, 255, 0)}, 0.0, True),
    "rgba.png": ("RGBA", (20, 40), {(10, 20): (10, 20, 30)}, 0.0, True),
    "l.png": ("L", (20, 40), {(10, 20): (77, 77, 77)}, 0.0, False),
    "la.png": ("LA", (20, 40), {(10, 20): (77, 77, 77)}, 0.0, True),
    "one_pixel.png": ("RGB", (1, 1), {(0, 0): (1, 2, 3)}, 0.0, False),
    "exif6.jpg": ("RGB", (40, 20), {(5, 10): (255, 0, 0), (35, 10): (0, 0, 255)}, 6.0, False),
}
ALPHA_WARNING = "transparent pixels; the alpha channel is dropped"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bad_inputs")
    for name, data in {**_broken_files(), **_odd_files()}.items():
        (folder / name).write_bytes(data)
    return folder


def test_corpus_files_are_what_they_claim(corpus: Path) -> None:
    assert (corpus / "x.jpg").stat().st_size == 0
    assert (corpus / "bomb.png").stat().st_size < 200
    assert struct.unpack(">II", (corpus / "bomb.png").read_bytes()[16:24]) == (BOMB_SIDE, BOMB_SIDE)
    for name, (mode, *_) in ODD.items():
        with Image.open(corpus / name) as image:
            assert image.mode == mode, name
    with Image.open(corpus / "exif6.jpg") as image:
        assert image.size == (40, 20) and image.getexif()[0x0112] == 6


# ------------------------------------------------------------------------------------ open_image / image_problem
@pytest.mark.parametrize("name", list(BROKEN))
def test_open_image_names_the_file_and_the_problem(corpus: Path, name: str) -> None:
    path = corpus / name
    with pytest.raises(Glipv2ImageFileError, match=rf"^{re.escape(str(path))}: {BROKEN[name]}") as error:
        open_image(path)
    assert isinstance(error.value, ValueError) and error.value.path == str(path)
    kind = "oversized" if name == "bomb.png" else "corrupt"
    assert re.match(rf"{kind} image file {re.escape(str(path))}: {BROKEN[name]}", image_problem(str(path)))


def test_open_image_missing_file_and_valid_modes(corpus: Path) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(str(corpus / 'absent.jpg'))}: no such file$"):
        open_image(str(corpus / "absent.jpg"))
    for name, (mode, *_) in ODD.items():
        image = open_image(corpus / name)  # stored mode and orientation kept: the processor converts
        assert image.mode == mode and image_problem(str(corpus / name)) is None
    assert open_image(corpus / "exif6.jpg").size == (40, 20)


# ------------------------------------------------------------------------------------------------------ loaders
def _write_coco(folder: Path, file_names: list[str]) -> Path:
    """COCO instances JSON: image ids 7, 8, ... for `file_names`, one box each."""
    data = {
        "images": [{"id": 7 + i, "file_name": name, "width": 40, "height": 20} for i, name in enumerate(file_names)],
        "annotations": [
            {"id": 100 + i, "image_id": 7 + i, "bbox": [1, 1, 5, 5], "category_id": 1} for i in range(len(file_names))
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = folder / f"coco_{len(file_names)}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("name", list(BROKEN))
def test_detection_loader_verify_images(corpus: Path, tmp_path: Path, name: str) -> None:
    annotation_file = _write_coco(tmp_path, [name, "l.png"])
    unverified, _ = load_coco_detection(annotation_file, corpus)  # by default only existence is checked
    assert unverified["image_id"] == [7, 8]
    with pytest.raises(Glipv2DataError) as error:
        load_coco_detection(annotation_file, corpus, verify_images=True)
    assert (error.value.file, error.value.record, error.value.field) == (
        str(annotation_file),
        "image id=7",
        "file_name",
    )
    assert re.search(rf"image file {re.escape(str(corpus / name))}: {BROKEN[name]}", str(error.value))
    report = SkipReport()
    kept, _ = load_coco_detection(annotation_file, corpus, verify_images=True, skip_invalid=True, report=report)
    assert kept["image_id"] == [8] and report.counts == {"file_name": 1}
    streamed, _ = load_coco_detection(annotation_file, corpus, streaming=True, verify_images=True)
    with pytest.raises(Glipv2DataError, match=rf"image id=7: field 'file_name': .*{re.escape(name)}"):
        list(streamed)


def test_other_loaders_verify_images(corpus: Path, tmp_path: Path) -> None:
    """A truncated JPEG (which `Image.verify` used to pass) through the VQA, captions and grounding loaders."""
    (tmp_path / "img_7.jpg").write_bytes((corpus / "truncated.jpg").read_bytes())
    (tmp_path / "img_8.jpg").write_bytes((corpus / "cmyk.jpg").read_bytes())
    questions = tmp_path / "questions.json"
    entries = [{"question_id": 70 + i, "image_id": i, "question": "what?"} for i in (7, 8)]
    questions.write_text(json.dumps({"questions": entries}))
    with pytest.raises(Glipv2DataError) as error:
        load_vqa(questions, None, tmp_path, image_name_format="img_{image_id}.jpg", verify_images=True)
    assert (error.value.record, error.value.field) == ("question id=77 (image id=7)", "file_name")
    assert "img_7.jpg: corrupt or truncated image data" in str(error.value)
    report = SkipReport()
    kept = load_vqa(
        questions,
        None,
        tmp_path,
        image_name_format="img_{image_id}.jpg",
        verify_images=True,
        skip_invalid=True,
        report=report,
    )
    assert kept["question_id"] == [78] and report.counts == {"file_name": 1}
    images = [{"id": i, "file_name": f"img_{i}.jpg", "width": 40, "height": 20, "caption": "a cat"} for i in (7, 8)]
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"images": images, "annotations": []}))
    grounding = tmp_path / "grounding.json"
    grounding.write_text(json.dumps({"images": images, "annotations": []}))
    for load, path in ((load_coco_captions, captions), (load_mdetr_grounding, grounding)):
        with pytest.raises(Glipv2DataError, match=r"image id=7: field 'file_name': corrupt image file .*img_7\.jpg"):
            load(path, tmp_path, verify_images=True)
        report = SkipReport()
        assert load(path, tmp_path, verify_images=True, skip_invalid=True, report=report)["image_id"] == [8]
        assert report.counts == {"file_name": 1}


def test_loaders_accept_every_valid_odd_image(corpus: Path, tmp_path: Path) -> None:
    annotation_file = _write_coco(tmp_path, list(ODD))
    report = SkipReport()
    dataset, _ = load_coco_detection(annotation_file, corpus, verify_images=True, skip_invalid=True, report=report)
    assert report.total == 0 and dataset["file_name"] == list(ODD)
    assert [dataset[i]["image"].mode for i in range(len(ODD))] == [mode for mode, *_ in ODD.values()]


# ---------------------------------------------------------------------------------------- image (pre)processing
@pytest.fixture(scope="module")
def processor() -> Glipv2Processor:
    return bert_processor(32, 64)


RAW = {"do_resize": False, "do_normalize": False, "channel_order": "rgb", "size_divisor": 0}  # pixels as stored


@pytest.mark.parametrize("name", list(ODD))
def test_processors_convert_every_mode_to_rgb(corpus: Path, processor: Glipv2Processor, name: str) -> None:
    _, size, pixels, tolerance, warns = ODD[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        direct = processor.image_processor(Image.open(corpus / name), **RAW)["pixel_values"]
        combined = processor(images=Image.open(corpus / name), text="a cat", **RAW)["pixel_values"]
        resized = processor.image_processor(Image.open(corpus / name))["pixel_values"]
    assert direct.shape == (1, 3, *size) and direct.dtype == torch.float32
    torch.testing.assert_close(combined, direct)
    for (y, x), rgb in pixels.items():
        torch.testing.assert_close(direct[0, :, y, x], torch.tensor(rgb, dtype=torch.float32), atol=tolerance, rtol=0)
    assert direct.max() <= 255.0 and direct.min() >= 0.0
    assert sum(ALPHA_WARNING in str(w.message) for w in caught) == (3 if warns else 0)
    short, long = min(size), max(size)
    expected = (32, 32) if short == long else (32, 64) if size[0] < size[1] else (64, 32)
    assert resized.shape == (1, 3, *expected) and torch.isfinite(resized).all()


def test_exif_orientation_is_optional(corpus: Path, processor: Glipv2Processor) -> None:
    image = Image.open(corpus / "exif6.jpg")
    assert get_image_size(image) == (40, 20) and get_image_size(image, exif_transpose=False) == (20, 40)
    stored = processor.image_processor(image, **RAW, do_exif_transpose=False)["pixel_values"]
    assert stored.shape == (1, 3, 20, 40)
    torch.testing.assert_close(stored[0, :, 10, 5], torch.tensor([255.0, 0.0, 0.0]), atol=6.0, rtol=0)


def test_lazily_opened_broken_image_is_named(corpus: Path, processor: Glipv2Processor) -> None:
    path = corpus / "truncated.jpg"
    pattern = rf"^Image 0 \({re.escape(str(path))}\) cannot be decoded: corrupt or truncated image data"
    with pytest.raises(ValueError, match=pattern):
        processor.image_processor(Image.open(path))
    with pytest.raises(ValueError, match=pattern):
        processor(images=Image.open(path), text="a cat")


# ------------------------------------------------------------------------------------------------------ prompts
LONG_PROMPT = "cat " * 2500  # 10,000 characters, 2,500 word tokens
EMOJI = "🐱🐶"
PUNCTUATION = "!!! ... ???"


@pytest.mark.parametrize("text", ["", " \t\n "])
def test_processor_empty_prompts(processor: Glipv2Processor, text: str) -> None:
    image = Image.new("RGB", (40, 20))
    with pytest.raises(ValueError, match=r"^Prompt 0 is empty or whitespace only"):
        processor(images=image, text=text)
    with pytest.raises(ValueError, match=r"^Label 0 is empty or whitespace only"):
        processor(images=image, text=[[text]])
    with pytest.raises(ValueError, match=r"^Label 1 is empty or whitespace only"):
        processor(images=image, text=[["cat", text]])
    with pytest.raises(ValueError, match=r"^Label 1 is empty or whitespace only"):
        processor.build_prompts(["cat", text])


def test_processor_long_prompt_is_refused_not_truncated(processor: Glipv2Processor) -> None:
    image = Image.new("RGB", (40, 20))
    with pytest.raises(ValueError, match=r"^Prompt 0 is 2502 tokens long, more than max_length=256"):
        processor(images=image, text=LONG_PROMPT)
    with pytest.raises(ValueError, match=r"^The labels of prompt 0 make 2502 tokens, more than max_length=256"):
        processor(images=image, text=[[LONG_PROMPT]])
    with pytest.raises(ValueError) as error:
        processor.build_prompts(["dog", LONG_PROMPT])
    message = str(error.value)
    assert message.startswith("Label 1 ('cat cat") and "(10000 characters)) is 2502 tokens long" in message
    assert len(message) < 250  # the label is quoted in part, not in full


def test_processor_emoji_and_punctuation_prompts(processor: Glipv2Processor) -> None:
    tokens = processor.tokenizer.convert_ids_to_tokens
    for text in (EMOJI, [[EMOJI]]):
        assert tokens(processor(text=text)["input_ids"][0]) == ["[CLS]", "[UNK]", "[SEP]"]
    expected = ["[CLS]", "!", "!", "!", ".", ".", ".", "?", "?", "?", "[SEP]"]
    for text in (PUNCTUATION, [[PUNCTUATION]]):
        assert tokens(processor(text=text)["input_ids"][0]) == expected
    (prompt,) = processor.build_prompts([EMOJI, "dog"])
    assert prompt.text == f"{EMOJI}. dog" and prompt.label_spans == [(0, 2), (4, 7)]
    positive = processor.positive_map(prompt.text, prompt.label_spans)
    assert positive.tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]]  # [CLS] [UNK] . dog [SEP]


# ---------------------------------------------------------------------------------------------------- pipelines
@pytest.fixture(scope="module")
def pipes(tmp_path_factory: pytest.TempPathFactory, processor: Glipv2Processor) -> dict[str, Any]:
    """Untrained tiny grounding and VQA models saved with the processor, loaded as the three pipelines."""
    folder = tmp_path_factory.mktemp("tiny_models")
    torch.manual_seed(0)
    Glipv2ForGrounding(tiny_config()).save_pretrained(folder / "grounding")
    answers = {"id2label": {0: "yes", 1: "no"}, "label2id": {"yes": 0, "no": 1}}
    Glipv2ForQuestionAnswering(tiny_config(**answers)).save_pretrained(folder / "vqa")
    for name in ("grounding", "vqa"):
        processor.save_pretrained(folder / name)
    return {
        "detect": pipeline("open-vocabulary-detection", model=str(folder / "grounding")),
        "ground": pipeline("phrase-grounding", model=str(folder / "grounding")),
        "vqa": pipeline("visual-question-answering", model=str(folder / "vqa")),
    }


def _pipeline_calls(pipes: dict[str, Any]) -> dict[str, Callable[[Any], Any]]:
    """One call per pipeline; threshold 0 so that even the untrained model returns boxes to compare."""
    return {
        "detect": lambda image: pipes["detect"](image, candidate_labels=["cat"], threshold=0.0, max_detections=5),
        "ground": lambda image: pipes["ground"](image, caption="a cat", phrases=["cat"], threshold=0.0),
        "vqa": lambda image: pipes["vqa"](image, "what is it?"),
    }


@pytest.mark.parametrize("name", [*BROKEN, "absent.jpg"])
def test_pipelines_name_a_broken_image_file(corpus: Path, pipes: dict[str, Any], name: str) -> None:
    path = str(corpus / name)
    problem = BROKEN.get(name, "no such file")
    for task, call in _pipeline_calls(pipes).items():
        with pytest.raises(ValueError, match=rf"^{re.escape(path)}: {problem}"):
            call(path)
            pytest.fail(f"{task} accepted {name}")


def test_pipelines_read_paths_like_opened_images(corpus: Path, pipes: dict[str, Any]) -> None:
    """A path is decoded in its stored mode: a 16-bit PNG is scaled (transformers' `load_image`, used before, clipped
    it to white) and the EXIF orientation is applied once, by the image processor."""
    calls = _pipeline_calls(pipes)
    gray16 = str(corpus / "gray16.png")
    for task, call in calls.items():
        from_path = call(gray16)
        assert from_path == call(Image.open(gray16)) and from_path != call(load_image(gray16)), task
    from_path = calls["detect"](str(corpus / "exif6.jpg"))
    assert from_path and from_path == calls["detect"](Image.open(corpus / "exif6.jpg"))
    assert max(d["box"]["xmax"] for d in from_path) <= 20.0 < max(d["box"]["ymax"] for d in from_path) <= 40.0
    (grounded,) = calls["ground"](str(corpus / "exif6.jpg"))
    assert grounded["boxes"][0]["box"]["xmax"] <= 20.0 and grounded["boxes"][0]["box"]["ymax"] <= 40.0


def test_pipelines_refuse_empty_and_overlong_text(pipes: dict[str, Any]) -> None:
    image = Image.new("RGB", (40, 20), (100, 50, 20))
    detect, ground, vqa = pipes["detect"], pipes["ground"], pipes["vqa"]
    for blank in ("", "   "):
        with pytest.raises(ValueError, match=r"^Label 0 is empty or whitespace only"):
            detect(image, candidate_labels=[blank])
        with pytest.raises(ValueError, match=r"^Label 1 is empty or whitespace only"):
            detect(image, candidate_labels=["cat", blank])
        with pytest.raises(ValueError, match=r"^The caption is empty"):
            ground(image, caption=blank, phrases=["cat"])
        with pytest.raises(ValueError, match=r"^Phrase 1 is empty or whitespace only"):
            ground(image, caption="a cat", phrases=["cat", blank])
        with pytest.raises(ValueError, match=r"^The question is empty"):
            vqa(image, blank)
    with pytest.raises(ValueError, match=r"^candidate_labels is empty"):
        detect(image, candidate_labels=[])
    with pytest.raises(
        ValueError, match=r"^Label 0 \('cat cat.*\(10000 characters\)\) is 2502 tokens long.*max_length=256"
    ):
        detect(image, candidate_labels=[LONG_PROMPT])
    with pytest.raises(ValueError, match=r"^Prompt 0 is 2502 tokens long, more than max_length=256"):
        ground(image, caption=LONG_PROMPT, phrases=["cat"])
    with pytest.raises(ValueError, match=r"^The question is 2502 tokens long .* more than the 256"):
        vqa(image, LONG_PROMPT)


def test_open_vocabulary_pipeline_chunks_a_long_label_list(pipes: dict[str, Any], processor: Glipv2Processor) -> None:
    labels = [f"thing {index}" for index in range(1000)]  # 8,890 characters
    prompts = processor.build_prompts(labels)
    assert len(prompts) == 14 and sorted(i for p in prompts for i in p.label_ids) == list(range(1000))
    assert max(len(processor.tokenizer(p.text)["input_ids"]) for p in prompts) <= 256
    image = Image.new("RGB", (40, 20), (100, 50, 20))
    detections = pipes["detect"](image, candidate_labels=labels, threshold=0.0, max_detections=0)
    assert {d["label"] for d in detections} == set(labels)  # every label scored: none dropped or truncated
    assert all(0.0 <= d["score"] <= 1.0 for d in detections)


@pytest.mark.parametrize("text", [EMOJI, PUNCTUATION])
def test_pipelines_run_on_emoji_and_punctuation(pipes: dict[str, Any], text: str) -> None:
    image = Image.new("RGB", (40, 20), (100, 50, 20))
    detections = pipes["detect"](image, candidate_labels=[text, "cat"], threshold=0.0)
    assert {d["label"] for d in detections} == {text, "cat"}
    for detection in detections:
        assert math.isfinite(detection["score"]) and 0.0 <= detection["box"]["xmin"] < detection["box"]["xmax"] <= 40
    (grounded,) = pipes["ground"](image, caption=text, phrases=[text], threshold=0.0)
    assert grounded["phrase"] == text and grounded["span"] == (0, len(text))
    assert len(grounded["boxes"]) == 1 and 0.0 < grounded["boxes"][0]["score"] < 1.0
    answers = pipes["vqa"](image, text, top_k=2)
    assert {a["answer"] for a in answers} == {"yes", "no"} and all(0.0 < a["score"] < 1.0 for a in answers)


# ------------------------------------------------------------------------------------------ annotation texts
def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_empty_caption_and_answer_texts(corpus: Path, tmp_path: Path) -> None:
    """Empty strings (not only whitespace) in COCO captions, MDETR captions and VQA answers."""
    images = [{"id": i, "file_name": "l.png", "width": 40, "height": 20} for i in (1, 2)]
    captions = {"images": images, "annotations": [{"id": 10 + i, "image_id": i, "caption": ""} for i in (1,)]}
    captions["annotations"].append({"id": 12, "image_id": 2, "caption": "a grey square"})
    captions_file = _write(tmp_path / "captions.json", captions)
    with pytest.raises(Glipv2DataError) as error:
        load_coco_captions(captions_file, corpus)
    assert (error.value.file, error.value.record, error.value.field) == (
        str(captions_file),
        "caption id=11 (image id=1)",
        "caption",
    )
    assert error.value.problem == "empty string"
    report = SkipReport()
    dataset = load_coco_captions(captions_file, corpus, skip_invalid=True, report=report)
    assert dataset["captions"] == [[], ["a grey square"]] and report.counts == {"caption": 1}

    grounding = {
        "images": [{**images[0], "caption": ""}, {**images[1], "caption": "a grey square"}],
        "annotations": [{"id": 5, "image_id": 2, "bbox": [1, 1, 5, 5], "tokens_positive": [[2, 6]]}],
    }
    grounding_file = _write(tmp_path / "grounding.json", grounding)
    with pytest.raises(Glipv2DataError) as error:
        load_mdetr_grounding(grounding_file, corpus)
    assert (error.value.record, error.value.field, error.value.problem) == ("image id=1", "caption", "empty string")
    report = SkipReport()
    dataset = load_mdetr_grounding(grounding_file, corpus, skip_invalid=True, report=report)
    assert dataset["image_id"] == [2] and dataset["caption"] == ["a grey square"] and report.counts == {"caption": 1}

    (tmp_path / "img_1.png").write_bytes((corpus / "l.png").read_bytes())
    questions = _write(
        tmp_path / "questions.json",
        {"questions": [{"question_id": q, "image_id": 1, "question": "what colour?"} for q in (1, 2, 3)]},
    )
    annotation = {"multiple_choice_answer": "grey", "answers": [{"answer": "grey"}] * 10}
    annotations = _write(
        tmp_path / "annotations.json",
        {
            "annotations": [
                {**annotation, "question_id": 1, "answers": [{"answer": ""}] + [{"answer": "grey"}] * 9},
                {**annotation, "question_id": 2, "multiple_choice_answer": ""},
                {**annotation, "question_id": 3},
            ]
        },
    )
    with pytest.raises(Glipv2DataError) as error:
        load_vqa(questions, annotations, tmp_path, image_name_format="img_{image_id}.png")
    assert (error.value.file, error.value.record, error.value.field) == (str(annotations), "question id=1", "answer")
    report = SkipReport()
    dataset = load_vqa(
        questions, annotations, tmp_path, image_name_format="img_{image_id}.png", skip_invalid=True, report=report
    )
    assert dataset["question_id"] == [3] and report.counts == {"answer": 1, "multiple_choice_answer": 1}
