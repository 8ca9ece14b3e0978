"""Synthetic multitask generator: determinism, held-out pairs, formats readable by every loader, speed."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tasks.captioning import load_coco_captions, load_karpathy_split
from tasks.detection import load_coco_detection
from tasks.grounding import load_mdetr_grounding
from tasks.synthetic import COLORS, DEFAULT_HELD_OUT_PAIRS, SHAPES, generate_synthetic_multitask, split_paths
from tasks.synthetic.__main__ import main
from tasks.vqa import build_answer_vocab, load_vqa


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_multitask(root, seed=3, num_train=40, num_val=10)
    return root


def _digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_same_seed_gives_identical_files(synthetic: Path, tmp_path: Path) -> None:
    assert main(["--output", str(tmp_path / "again"), "--seed", "3", "--num-train", "40", "--num-val", "10"]) == 0
    assert _digests(tmp_path / "again") == _digests(synthetic)
    generate_synthetic_multitask(tmp_path / "other", seed=4, num_train=40, num_val=10)
    assert (tmp_path / "other/annotations/instances_train.json").read_bytes() != (
        synthetic / "annotations/instances_train.json"
    ).read_bytes()


def _without_segmentation(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _without_segmentation(value) for key, value in data.items() if key != "segmentation"}
    if isinstance(data, list):
        return [_without_segmentation(value) for value in data]
    return data


def _content_before_masks(root: Path) -> str:
    """A digest of what the generator wrote before it had masks: the images' pixels and every JSON file without
    its ``segmentation`` fields (the refexp files are new)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("refexp_"):
            continue
        if path.suffix == ".png":
            with Image.open(path) as image:
                content = image.convert("RGB").tobytes()
        else:
            content = json.dumps(_without_segmentation(json.loads(path.read_text())), sort_keys=True).encode()
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(content).digest())
    return digest.hexdigest()


def test_masks_leave_the_random_stream_alone(synthetic: Path) -> None:
    """The masks and referring expressions draw nothing from the random stream: the images and every other field
    are those the generator wrote before them (digest of the output of the generator at the commit before masks,
    same arguments)."""
    assert _content_before_masks(synthetic) == "9d3dd5425acc551a6c2d52a8459492433e71a4b1f75bd07d7be2517a02213a42"


def test_held_out_pairs(synthetic: Path) -> None:
    metadata = json.loads((synthetic / "metadata.json").read_text())
    held_out = {f"{color} {shape}" for color, shape in DEFAULT_HELD_OUT_PAIRS}
    assert set(metadata["held_out_pairs"]) == held_out
    names = {category["id"]: category["name"] for category in metadata["categories"]}

    def pairs_in(split: str) -> list[set[str]]:
        dataset, _ = load_coco_detection(
            synthetic / f"annotations/instances_{split}.json", synthetic / "images" / split
        )
        return [{names[c] for c in objects["category_id"]} for objects in dataset["objects"]]

    train = set().union(*pairs_in("train"))
    assert not train & held_out
    assert not set().union(*pairs_in("val")) & held_out
    assert all(image & held_out for image in pairs_in("val_unseen"))
    # each held-out pair's colour and shape are still seen in training, in other pairs
    for color, shape in DEFAULT_HELD_OUT_PAIRS:
        assert any(name.startswith(color + " ") for name in train) and any(
            name.endswith(" " + shape) for name in train
        )
    assert {name.split()[0] for name in names.values()} == set(COLORS)
    assert {name.split()[1] for name in names.values()} == set(SHAPES)


def test_every_format_loads_and_agrees(synthetic: Path) -> None:
    paths = split_paths(synthetic, "val")
    detection, _ = load_coco_detection(paths.instances, paths.image_dir)
    grounding = load_mdetr_grounding(paths.grounding, paths.image_dir)
    captions = load_coco_captions(paths.captions, paths.image_dir)
    karpathy = load_karpathy_split(paths.karpathy, paths.karpathy_image_root, paths.karpathy_split)
    vqa = load_vqa(
        paths.vqa_questions, paths.vqa_annotations, paths.image_dir, image_name_format=paths.vqa_image_name_format
    )
    assert len(detection) == len(grounding) == len(captions) == len(karpathy) == 10
    assert len(vqa) >= 10 and set(build_answer_vocab(vqa)) <= {str(n) for n in range(5)} | set(COLORS) | set(SHAPES)
    names = {i + 1: f"{c} {s}" for i, (c, s) in enumerate((c, s) for c in COLORS for s in SHAPES)}
    for det, ground, cap, karp in zip(detection, grounding, captions, karpathy):
        assert det["objects"]["bbox"] == ground["objects"]["bbox"]
        assert cap["captions"] == [ground["caption"]] == karp["captions"]
        spans = [ground["caption"][b:e] for [[b, e]] in ground["objects"]["tokens_positive"]]
        assert spans == [names[c] for c in det["objects"]["category_id"]]
        # objects are listed left to right, as the caption reads
        centres = [x + w / 2 for x, _, w, _ in det["objects"]["bbox"]]
        assert centres == sorted(centres)
        assert 1 <= len(centres) <= 4


def test_boxes_are_tight_around_drawn_pixels(synthetic: Path) -> None:
    dataset, _ = load_coco_detection(synthetic / "annotations/instances_train.json", synthetic / "images/train")
    record = next(row for row in dataset if len(row["objects"]["bbox"]) == 1)
    x, y, w, h = (int(v) for v in record["objects"]["bbox"][0])
    image = record["image"].convert("RGB")
    background = image.getpixel((0, 0)) if (x, y) != (0, 0) else image.getpixel((127, 127))
    columns = [i for i in range(image.width) if any(image.getpixel((i, j)) != background for j in range(image.height))]
    rows = [j for j in range(image.height) if any(image.getpixel((i, j)) != background for i in range(image.width))]
    assert abs(columns[0] - x) <= 1 and abs(columns[-1] + 1 - (x + w)) <= 1
    assert abs(rows[0] - y) <= 1 and abs(rows[-1] + 1 - (y + h)) <= 1


def test_generation_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate_synthetic_multitask(tmp_path, seed=0, num_train=300, num_val=50)
    assert 400 / (time.perf_counter() - start) >= 200
