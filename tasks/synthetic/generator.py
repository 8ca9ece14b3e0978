"""Write a synthetic multitask dataset of coloured shapes in every format the loaders read.

Layout under ``output_dir``::

    images/<split>/<image_id:06d>.png
    annotations/instances_<split>.json          COCO instances (categories: all colour-shape pairs)
    annotations/grounding_<split>.json          MDETR-style grounding (caption + tokens_positive)
    annotations/refexp_<split>.json             MDETR's refexp format (RefCOCO's finetune_*.json): one image
                                                entry per object, caption "the <colour> <shape>"
    annotations/vqa_questions_<split>.json      VQAv2 questions
    annotations/vqa_annotations_<split>.json    VQAv2 annotations (10 answers each)
    annotations/captions_<split>.json           COCO captions
    annotations/dataset_coco.json               Karpathy split file (train -> "train", val -> "val",
                                                val_unseen -> "test"); filepath is the split folder
    metadata.json                               seed, pairs seen in training, held-out pairs, counts

Every annotation of the instances, grounding and refexp files carries ``segmentation``, the object's exact mask as
a COCO compressed RLE ``{"size": [height, width], "counts": str}``: the pixels the image shows of it, i.e. its
shape drawn by the same PIL calls as the image, minus the parts of objects drawn after it (``visible_masks``).

Splits: ``train`` and ``val`` use only the seen pairs; every ``val_unseen`` image contains at least one
held-out pair. Everything is a deterministic function of ``seed`` (JSON byte-identical across runs); the masks
and the refexp files draw nothing from the random stream, so the images and every other field are those the
generator wrote before it had them.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

from tasks.common import write_json
from tasks.masks import encode_mask
from tasks.synthetic.scenes import (
    ALL_PAIRS,
    DEFAULT_HELD_OUT_PAIRS,
    SceneObject,
    coco_annotation,
    describe,
    draw_scene,
    pair_name,
    questions,
    sample_scene,
    visible_masks,
)

SPLITS = ("train", "val", "val_unseen")
KARPATHY_SPLIT = {"train": "train", "val": "val", "val_unseen": "test"}
CATEGORIES = [
    {"id": index + 1, "name": pair_name(pair), "supercategory": pair[1]} for index, pair in enumerate(ALL_PAIRS)
]
CATEGORY_IDS = {category["name"]: category["id"] for category in CATEGORIES}


@dataclass(frozen=True)
class SyntheticSplitPaths:
    """Where :func:`generate_synthetic_multitask` put one split's files (arguments for the loaders)."""

    image_dir: str
    instances: str
    grounding: str
    vqa_questions: str
    vqa_annotations: str
    captions: str
    karpathy: str
    karpathy_image_root: str
    karpathy_split: str
    refexp: str
    vqa_image_name_format: str = "{image_id:06d}.png"


def split_paths(output_dir: str | os.PathLike, split: str) -> SyntheticSplitPaths:
    """The file paths of ``split`` (one of :data:`SPLITS`) under ``output_dir``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    annotations = os.path.join(output_dir, "annotations")
    return SyntheticSplitPaths(
        image_dir=os.path.join(output_dir, "images", split),
        instances=os.path.join(annotations, f"instances_{split}.json"),
        grounding=os.path.join(annotations, f"grounding_{split}.json"),
        vqa_questions=os.path.join(annotations, f"vqa_questions_{split}.json"),
        vqa_annotations=os.path.join(annotations, f"vqa_annotations_{split}.json"),
        captions=os.path.join(annotations, f"captions_{split}.json"),
        karpathy=os.path.join(annotations, "dataset_coco.json"),
        karpathy_image_root=os.path.join(output_dir, "images"),
        karpathy_split=KARPATHY_SPLIT[split],
        refexp=os.path.join(annotations, f"refexp_{split}.json"),
    )


def _refexp_entries(
    image: dict[str, Any], obj: SceneObject, annotation: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The image entry and the annotation of one referring expression, as MDETR's ``refexp_coco_format.py`` writes
    them: ``original_id`` is the scene image's id (image entry) and the instances annotation's id (annotation).
    The expression's id is its instances annotation's id."""
    expression_id = annotation["id"]
    caption = f"the {obj.name}"
    begin = len("the ")
    entry = {
        **image,
        "id": expression_id,
        "original_id": image["id"],
        "caption": caption,
        "dataset_name": "synthetic_refexp",
        "tokens_negative": [],
    }
    target = {
        **annotation,
        "id": expression_id,
        "image_id": expression_id,
        "original_id": annotation["id"],
        "tokens_positive": [[begin, begin + len(obj.name)]],
    }
    return entry, target


def _split_json(
    split: str,
    scenes: list[tuple[int, list[SceneObject]]],
    image_size: int,
    rng: random.Random,
    segmentations: dict[int, list[dict[str, Any]]],
) -> dict[str, dict[str, Any]]:
    """All annotation files of one split (keyed by kind) for its ``(image_id, objects)`` scenes, with each object's
    mask from ``segmentations[image_id]``."""
    images, instances, grounding_images, grounding_annotations = [], [], [], []
    vqa_questions, vqa_annotations, captions = [], [], []
    refexp_images, refexp_annotations = [], []
    for image_id, objects in scenes:
        image = {"id": image_id, "file_name": f"{image_id:06d}.png", "width": image_size, "height": image_size}
        caption, spans = describe(objects)
        images.append(image)
        grounding_images.append({**image, "caption": caption, "dataset_name": "synthetic_shapes"})
        captions.append({"id": image_id, "image_id": image_id, "caption": caption})
        for index, (obj, span, segmentation) in enumerate(zip(objects, spans, segmentations[image_id])):
            annotation = coco_annotation(obj, image_id * 10 + index, image_id, CATEGORY_IDS[obj.name])
            annotation["segmentation"] = segmentation
            instances.append(annotation)
            grounding_annotations.append({**annotation, "tokens_positive": [list(span)], "phrase_ids": index})
            refexp_image, refexp_annotation = _refexp_entries(image, obj, annotation)
            refexp_images.append(refexp_image)
            refexp_annotations.append(refexp_annotation)
        for index, (question, answer, answer_type) in enumerate(questions(objects, rng)):
            question_id = image_id * 10 + index
            vqa_questions.append({"image_id": image_id, "question": question, "question_id": question_id})
            vqa_annotations.append(
                {
                    "question_id": question_id,
                    "image_id": image_id,
                    "answer_type": answer_type,
                    "question_type": " ".join(question.split()[:3]),
                    "multiple_choice_answer": answer,
                    "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)],
                }
            )
    info = {"description": f"synthetic coloured shapes, split {split}", "version": "1.0"}
    return {
        "instances": {"info": info, "images": images, "annotations": instances, "categories": CATEGORIES},
        "grounding": {
            "info": info,
            "images": grounding_images,
            "annotations": grounding_annotations,
            "categories": CATEGORIES,
        },
        "vqa_questions": {"info": info, "data_subtype": split, "questions": vqa_questions},
        "vqa_annotations": {"info": info, "data_subtype": split, "annotations": vqa_annotations},
        "captions": {"info": info, "images": images, "annotations": captions},
        "refexp": {
            "info": info,
            "images": refexp_images,
            "annotations": refexp_annotations,
            "categories": CATEGORIES,
        },
    }


def _karpathy_entries(split: str, scenes: list[tuple[int, list[SceneObject]]]) -> list[dict[str, Any]]:
    entries = []
    for image_id, objects in scenes:
        caption, _ = describe(objects)
        sentence = {
            "raw": caption,
            "tokens": caption.rstrip(".").replace(",", "").split(),
            "imgid": image_id,
            "sentid": image_id,
        }
        entries.append(
            {
                "filepath": split,
                "filename": f"{image_id:06d}.png",
                "imgid": image_id,
                "cocoid": image_id,
                "split": KARPATHY_SPLIT[split],
                "sentids": [image_id],
                "sentences": [sentence],
            }
        )
    return entries


def generate_synthetic_multitask(
    output_dir: str | os.PathLike,
    seed: int,
    num_train: int,
    num_val: int,
    image_size: int = 128,
    num_val_unseen: int | None = None,
    held_out_pairs: tuple[tuple[str, str], ...] = DEFAULT_HELD_OUT_PAIRS,
    max_objects: int = 4,
) -> dict[str, Any]:
    """Generate the dataset (see the module docstring for the layout) and return its metadata.

    Args:
        output_dir: folder to write into (created).
        seed: seed of the single ``random.Random`` that drives everything.
        num_train, num_val: images in ``train`` and ``val`` (seen pairs only).
        image_size: side of the square images in pixels.
        num_val_unseen: images in ``val_unseen`` (default ``num_val``); each has at least one held-out pair.
        held_out_pairs: colour-shape pairs never shown in training.
        max_objects: at most this many objects (at least one) per image.
    """
    held_out = [tuple(pair) for pair in held_out_pairs]
    seen = [pair for pair in ALL_PAIRS if pair not in held_out]
    counts = {"train": num_train, "val": num_val, "val_unseen": num_val if num_val_unseen is None else num_val_unseen}
    rng = random.Random(seed)
    os.makedirs(os.path.join(output_dir, "annotations"), exist_ok=True)
    karpathy: list[dict[str, Any]] = []
    next_id = 1
    for split in SPLITS:
        image_dir = os.path.join(output_dir, "images", split)
        os.makedirs(image_dir, exist_ok=True)
        scenes, segmentations = [], {}
        for image_id in range(next_id, next_id + counts[split]):
            if split == "val_unseen":
                objects = sample_scene(rng, list(ALL_PAIRS), image_size, max_objects, must_include=held_out)
            else:
                objects = sample_scene(rng, seen, image_size, max_objects)
            draw_scene(objects, image_size).save(os.path.join(image_dir, f"{image_id:06d}.png"))
            scenes.append((image_id, objects))
            segmentations[image_id] = [encode_mask(mask) for mask in visible_masks(objects, image_size)]
        next_id += counts[split]
        for kind, data in _split_json(split, scenes, image_size, rng, segmentations).items():
            write_json(os.path.join(output_dir, "annotations", f"{kind}_{split}.json"), data)
        karpathy.extend(_karpathy_entries(split, scenes))
    write_json(os.path.join(output_dir, "annotations", "dataset_coco.json"), {"dataset": "coco", "images": karpathy})
    metadata = {
        "seed": seed,
        "image_size": image_size,
        "counts": counts,
        "categories": CATEGORIES,
        "vqa_image_name_format": "{image_id:06d}.png",
        "seen_pairs": [pair_name(pair) for pair in seen],
        "held_out_pairs": [pair_name(pair) for pair in held_out],
    }
    write_json(os.path.join(output_dir, "metadata.json"), metadata)
    return metadata
