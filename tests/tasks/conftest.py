"""Fixtures for the tasks tests: hand-written annotation files in the real formats, and images matching them."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tasks_test_utils import FIXTURES

# (relative path, width, height) of every image the fixture files refer to.
FIXTURE_IMAGES = [
    ("000000397133.jpg", 640, 427),
    ("000000037777.jpg", 352, 230),
    ("1000092795.jpg", 500, 333),
    ("COCO_val2014_000000397133.jpg", 640, 427),
    ("COCO_val2014_000000037777.jpg", 352, 230),
    ("val2014/COCO_val2014_000000397133.jpg", 640, 427),
    ("train2014/COCO_train2014_000000037777.jpg", 352, 230),
    ("val2014/COCO_val2014_000000000042.jpg", 64, 48),
]


def load_fixture(name: str) -> dict[str, Any]:
    """A parsed copy of ``fixtures/<name>``."""
    with open(FIXTURES / name, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a small solid-colour JPEG for every image the fixtures name."""
    root = tmp_path_factory.mktemp("images")
    for index, (name, width, height) in enumerate(FIXTURE_IMAGES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (width, height), (index * 30, 100, 200)).save(path)
    return root


@pytest.fixture
def write_variant(tmp_path: Path) -> Callable[[str, Callable[[dict[str, Any]], None]], str]:
    """Write a mutated copy of a fixture file into ``tmp_path`` and return its path."""

    def write(name: str, mutate: Callable[[dict[str, Any]], None]) -> str:
        data = copy.deepcopy(load_fixture(name))
        mutate(data)
        path = tmp_path / f"variant_{name}"
        path.write_text(json.dumps(data), encoding="utf-8")
        return os.fspath(path)

    return write
