"""Checkpoints saved by earlier versions keep loading with identical outputs.

`tests/data/compat_checkpoint` is an all-heads checkpoint saved before the library was reorganised by task family,
`tests/data/state_dict_keys.json` every public class's state-dict keys and shapes at that time, and
`tests/data/compat_outputs.safetensors` each class's outputs on fixed inputs (`tests/data/make_compat_fixture.py`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForObjectDetection,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    AutoModelForZeroShotImageClassification,
    AutoModelForZeroShotObjectDetection,
)

import glipv2

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
from make_compat_fixture import CLASS_NAMES, class_outputs, fixture_config  # noqa: E402

AUTO_CLASSES = {
    "Glipv2Model": AutoModel,
    "Glipv2ForGrounding": AutoModelForZeroShotObjectDetection,
    "Glipv2ForObjectDetection": AutoModelForObjectDetection,
    "Glipv2ForQuestionAnswering": AutoModelForVisualQuestionAnswering,
    "Glipv2ForConditionalGeneration": AutoModelForImageTextToText,
    "Glipv2ForZeroShotImageClassification": AutoModelForZeroShotImageClassification,
    "Glipv2ForPreTraining": AutoModelForPreTraining,
}


def _frozen_outputs(name: str) -> dict[str, torch.Tensor]:
    tensors = load_file(DATA / "compat_outputs.safetensors")
    return {key[len(name) + 1 :]: value for key, value in tensors.items() if key.startswith(name + ".")}


def _inputs() -> dict[str, torch.Tensor]:
    tensors = load_file(DATA / "compat_outputs.safetensors")
    return {key[len("input.") :]: value for key, value in tensors.items() if key.startswith("input.")}


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_state_dict_keys_unchanged(name: str) -> None:
    expected = json.loads((DATA / "state_dict_keys.json").read_text())[name]
    state = getattr(glipv2, name)(fixture_config()).state_dict()
    assert {key: list(value.shape) for key, value in state.items()} == expected


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_old_checkpoint_gives_identical_outputs(name: str) -> None:
    model = getattr(glipv2, name).from_pretrained(DATA / "compat_checkpoint").eval()
    outputs = class_outputs(name, model, _inputs())
    frozen = _frozen_outputs(name)
    assert sorted(outputs) == sorted(frozen)
    for key, value in frozen.items():
        torch.testing.assert_close(outputs[key], value, rtol=1e-5, atol=1e-6, msg=f"{name}.{key}")


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_old_checkpoint_loads_through_auto_classes(name: str) -> None:
    """The folder's `auto_map` names modules of the old layout; with glipv2 imported the registered classes load."""
    model = AUTO_CLASSES[name].from_pretrained(DATA / "compat_checkpoint")
    assert type(model).__name__ == name
