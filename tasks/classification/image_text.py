"""Generic image-text pairs (contrastive pre-training, zero-shot classification, pseudo-labelling)."""

from __future__ import annotations

import json
import os
from typing import Any

import datasets

from tasks.common import RecordChecker, SkipReport, collect_valid, finish_dataset, image_feature_value

PAIR_FEATURES = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})


def _read_jsonl(path: str | os.PathLike, checker: RecordChecker) -> list[Any]:
    """Parse a JSON-lines file; a malformed line raises naming its line number."""
    if not os.path.isfile(path):
        raise checker.fail("<file>", "<file>", "file not found")
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    entries.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise checker.fail(f"line {number}", "<line>", f"invalid JSON: {error}") from error
    return entries


def load_image_text_pairs(
    dataset_or_path: datasets.Dataset | str | os.PathLike,
    image_column: str = "image",
    text_column: str = "text",
    streaming: bool = False,
    skip_invalid: bool = False,
    verify_images: bool = False,
    report: SkipReport | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Image-text pairs with columns ``image`` (``datasets.Image()``) and ``text`` from either source.

    Args:
        dataset_or_path: a ``datasets.Dataset`` with an image column (``Image`` feature, or file paths) and a
            text column; or a JSON-lines file whose lines are objects with an image path (relative to the file's
            folder) and a text.
        image_column, text_column: the column / key names in the source.
        streaming, skip_invalid, verify_images, report: as in :func:`tasks.detection.load_coco_detection`.

    Returns:
        A dataset with exactly the columns ``image`` and ``text`` (non-empty texts). A ``Dataset`` input with
        an ``Image`` column is validated and renamed in place (images are not re-read); with ``streaming`` it is
        returned as an ``IterableDataset``.
    """
    report = SkipReport() if report is None else report
    if isinstance(dataset_or_path, datasets.Dataset):
        return _from_dataset(dataset_or_path, image_column, text_column, streaming, skip_invalid, report)
    checker = RecordChecker(dataset_or_path)
    root = os.path.dirname(os.path.abspath(dataset_or_path))

    def parse(item: tuple[int, Any]) -> dict[str, Any]:
        number, entry = item
        record = f"line {number}"
        text = checker.text(entry, text_column, record).strip()
        image_path = checker.text(entry, image_column, record)
        return {
            "image": image_feature_value(
                checker.image_file(root, image_path, record, verify_images and not streaming)
            ),
            "text": text,
        }

    records = list(collect_valid(_read_jsonl(dataset_or_path, checker), parse, skip_invalid, report))
    return finish_dataset(records, PAIR_FEATURES, dataset_or_path, streaming, verify_images, skip_invalid, report)


def _from_dataset(
    dataset: datasets.Dataset,
    image_column: str,
    text_column: str,
    streaming: bool,
    skip_invalid: bool,
    report: SkipReport,
) -> datasets.Dataset | datasets.IterableDataset:
    source = dataset.info.dataset_name or "<datasets.Dataset>"
    checker = RecordChecker(source)
    for column in (image_column, text_column):
        if column not in dataset.column_names:
            raise checker.fail("<dataset>", column, f"missing column (columns: {dataset.column_names})")
    texts = dataset[text_column]
    bad = [index for index, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    for index in bad:
        error = checker.fail(f"row {index}", text_column, "empty or non-string text")
        if not skip_invalid:
            raise error
        report.add(error)
    dataset = dataset.select(sorted(set(range(len(dataset))) - set(bad))) if bad else dataset
    dataset = dataset.select_columns([image_column, text_column])
    if (image_column, text_column) != ("image", "text"):
        dataset = dataset.rename_columns({image_column: "image", text_column: "text"})
    if not isinstance(dataset.features["image"], datasets.Image):
        dataset = dataset.cast_column("image", datasets.Image())
    report.log_summary(source)
    return dataset.to_iterable_dataset() if streaming else dataset
