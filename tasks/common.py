"""Shared helpers for the task loaders: the data error, skip reports, JSON reading, record validation and dataset
construction. Every loader in ``tasks/`` uses these, so each check exists exactly once."""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import datasets
from PIL import Image

logger = logging.getLogger(__name__)

# COCO / LVIS boxes are stored as rounded floats and may end a fraction of a pixel past the right or bottom image
# border; anything further out (or any negative coordinate) is a broken record.
BOX_TOLERANCE_PX = 1.0


class Glipv2DataError(ValueError):
    """A malformed input file or record. The message names the file, the record and the field."""

    def __init__(self, file: str | os.PathLike, record: str, field_name: str, problem: str) -> None:
        self.file = str(file)
        self.record = record
        self.field = field_name
        self.problem = problem
        super().__init__(f"{self.file}: {record}: field '{field_name}': {problem}")


@dataclass
class SkipReport:
    """Counts of records skipped by a loader called with ``skip_invalid=True``, per reason (the offending field).

    ``counts`` maps a field name to the number of skipped records; ``messages`` keeps the first few full error
    messages so the cause can be inspected.
    """

    counts: Counter = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)
    max_messages: int = 20

    @property
    def total(self) -> int:
        """Number of skipped records."""
        return sum(self.counts.values())

    def add(self, error: Glipv2DataError) -> None:
        """Count ``error`` and log it as a warning."""
        self.counts[error.field] += 1
        if len(self.messages) < self.max_messages:
            self.messages.append(str(error))
        logger.warning("skipping invalid record: %s", error)

    def log_summary(self, source: str) -> None:
        """Log one warning with the totals, if anything was skipped."""
        if self.total:
            logger.warning("%s: skipped %d invalid records (%s)", source, self.total, dict(self.counts))


class RecordChecker:
    """Validation helpers bound to one source file; raises :class:`Glipv2DataError` naming file, record, field."""

    def __init__(self, file: str | os.PathLike) -> None:
        self.file = str(file)

    def fail(self, record: str, field_name: str, problem: str) -> Glipv2DataError:
        """Build the error for ``record``/``field_name`` (the caller raises it)."""
        return Glipv2DataError(self.file, record, field_name, problem)

    def get(self, entry: Mapping[str, Any], key: str, types: type | tuple[type, ...], record: str) -> Any:
        """``entry[key]``, checked to be present and of ``types`` (bool is never accepted as a number)."""
        if not isinstance(entry, Mapping):
            raise self.fail(record, key, f"expected an object, got {type(entry).__name__}")
        if key not in entry:
            raise self.fail(record, key, "missing key")
        value = entry[key]
        if isinstance(value, bool) and bool not in _as_tuple(types) or not isinstance(value, types):
            raise self.fail(record, key, f"expected {_type_names(types)}, got {type(value).__name__}")
        return value

    def text(self, entry: Mapping[str, Any], key: str, record: str) -> str:
        """A non-empty (after stripping) string field."""
        value = self.get(entry, key, str, record)
        if not value.strip():
            raise self.fail(record, key, "empty string")
        return value

    def bbox_xywh(self, bbox: Any, width: int, height: int, record: str, key: str = "bbox") -> list[float]:
        """A finite, positive-area COCO ``[x, y, w, h]`` box inside a ``width`` x ``height`` image."""
        if not isinstance(bbox, list | tuple) or len(bbox) != 4:
            raise self.fail(record, key, f"expected 4 numbers [x, y, w, h], got {bbox!r}")
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in bbox):
            raise self.fail(record, key, f"non-numeric value in {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise self.fail(record, key, f"non-finite value in {bbox!r}")
        if w <= 0 or h <= 0:
            raise self.fail(record, key, f"zero or negative size in {bbox!r}")
        if x < 0 or y < 0:
            raise self.fail(record, key, f"negative coordinate in {bbox!r}")
        tol = BOX_TOLERANCE_PX
        if x + w > width + tol or y + h > height + tol:
            raise self.fail(record, key, f"box {bbox!r} lies outside the {width}x{height} image")
        return [x, y, w, h]

    def spans(self, spans: Any, text: str, record: str, key: str = "tokens_positive") -> list[list[int]]:
        """A non-empty list of ``[begin, end]`` character spans with ``0 <= begin < end <= len(text)``."""
        if not isinstance(spans, list | tuple) or not spans:
            raise self.fail(record, key, f"expected a non-empty list of [begin, end] spans, got {spans!r}")
        checked = []
        for span in spans:
            if (
                not isinstance(span, list | tuple)
                or len(span) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in span)
            ):
                raise self.fail(record, key, f"expected [begin, end] integers, got {span!r}")
            begin, end = span
            if not 0 <= begin < end <= len(text):
                raise self.fail(record, key, f"span {list(span)} outside the caption of length {len(text)}")
            checked.append([begin, end])
        return checked

    def unique(self, seen: set, value: Any, record: str, key: str) -> None:
        """Record ``value`` in ``seen``; a second occurrence is an error."""
        if value in seen:
            raise self.fail(record, key, f"duplicate id {value!r}")
        seen.add(value)

    def image_file(self, image_dir: str | os.PathLike, file_name: str, record: str, verify: bool) -> str:
        """The path of an existing image file; with ``verify`` also checked to decode with PIL."""
        path = os.path.join(image_dir, file_name)
        if not os.path.isfile(path):
            raise self.fail(record, "file_name", f"image file not found: {path}")
        if verify:
            problem = image_problem(path)
            if problem is not None:
                raise self.fail(record, "file_name", problem)
        return path


def image_problem(path: str) -> str | None:
    """Why the image file at ``path`` cannot be used, or None when it decodes fully.

    The whole image is decoded (``glipv2.image_processing_glipv2.open_image``: ``Image.verify`` misses truncated
    JPEGs). Empty, unidentifiable, corrupt and truncated files give ``"corrupt image file <path>: <problem>"``; a
    header claiming more pixels than PIL's decompression-bomb limit gives ``"oversized image file <path>: too many
    pixels, ..."`` (the pixels are never allocated).
    """
    from glipv2.image_processing_glipv2 import Glipv2ImageFileError, open_image

    try:
        open_image(path)
    except Glipv2ImageFileError as error:
        kind = "oversized" if isinstance(error.__cause__, Image.DecompressionBombError) else "corrupt"
        return f"{kind} image file {path}: {error.problem}"
    return None


@dataclass
class LazyImageCheck:
    """Verifies each record's image when a streamed record is produced, instead of all images up front.

    Used by the loaders for ``streaming=True, verify_images=True``: a broken image raises
    :class:`Glipv2DataError` (naming the file, the record's question/image id and ``file_name``) during
    iteration, or with ``skip_invalid`` is skipped and counted in ``report``.
    """

    file: str
    skip_invalid: bool
    report: SkipReport

    def accept(self, record: dict[str, Any]) -> bool:
        """True when the record's image decodes; otherwise raise, or count and return False."""
        path = record["image"]["path"]
        problem = image_problem(path)
        if problem is None:
            return True
        ids = [f"{key.replace('_', ' ')}={record[key]}" for key in ("question_id", "image_id") if key in record]
        error = Glipv2DataError(self.file, " ".join(ids) or f"image {path}", "file_name", problem)
        if not self.skip_invalid:
            raise error
        self.report.add(error)
        return False


def lazy_image_check(
    file: str | os.PathLike, verify_images: bool, streaming: bool, skip_invalid: bool, report: SkipReport
) -> LazyImageCheck | None:
    """The check to run while streaming, when images are to be verified and the dataset is streamed."""
    return LazyImageCheck(str(file), skip_invalid, report) if verify_images and streaming else None


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


def read_json(path: str | os.PathLike, expected: type = dict) -> Any:
    """Parse a JSON file, raising :class:`Glipv2DataError` for a missing, unreadable or wrongly typed file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError as error:
        raise Glipv2DataError(path, "<file>", "<file>", "file not found") from error
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Glipv2DataError(path, "<file>", "<file>", f"cannot parse JSON: {error}") from error
    if not isinstance(data, expected):
        raise Glipv2DataError(path, "<file>", "<root>", f"expected a JSON {expected.__name__}")
    return data


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as compact, key-sorted JSON (byte-identical for equal data)."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        handle.write("\n")


def collect_valid(
    items: list[Any], parse: Callable[[Any], Any], skip_invalid: bool, report: SkipReport
) -> Iterator[Any]:
    """Yield ``parse(item)`` for each item; an invalid item raises, or with ``skip_invalid`` is counted in
    ``report`` and skipped."""
    for item in items:
        try:
            yield parse(item)
        except Glipv2DataError as error:
            if not skip_invalid:
                raise
            report.add(error)


def _yield_records(
    records: list[dict[str, Any]], lazy_check: LazyImageCheck | None = None
) -> Iterator[dict[str, Any]]:
    for record in records:
        if lazy_check is None or lazy_check.accept(record):
            yield record


def _yield_nothing() -> Iterator[dict[str, Any]]:
    yield from ()


def build_dataset(
    records: list[dict[str, Any]],
    features: datasets.Features,
    streaming: bool,
    lazy_check: LazyImageCheck | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Build a map-style ``Dataset`` (or an ``IterableDataset`` when ``streaming``) from validated records.

    Images are stored as ``{"path": ..., "bytes": None}`` and decoded lazily by ``datasets.Image()``. In the
    streaming case the record list is passed as a shardable ``gen_kwargs`` list, so DataLoader workers split it,
    and ``lazy_check`` (if any) verifies each image as its record is produced.
    """
    if not records:
        if streaming:
            return datasets.IterableDataset.from_generator(_yield_nothing, features=features)
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    if streaming:
        return datasets.IterableDataset.from_generator(
            _yield_records, features=features, gen_kwargs={"records": records, "lazy_check": lazy_check}
        )
    return datasets.Dataset.from_generator(_yield_records, features=features, gen_kwargs={"records": records})


def image_feature_value(path: str) -> dict[str, Any]:
    """The stored value of a ``datasets.Image()`` column for an image file on disk."""
    return {"path": path, "bytes": None}


def image_fields(image_id: int, image: dict[str, Any]) -> dict[str, Any]:
    """The per-image fields of a COCO-style record: ``image``, ``image_id``, ``file_name``, ``width``, ``height``."""
    return {
        "image": image_feature_value(image["path"]),
        "image_id": image_id,
        "file_name": image["file_name"],
        "width": image["width"],
        "height": image["height"],
    }


def finish_dataset(
    records: list[dict[str, Any]],
    features: datasets.Features,
    source: str | os.PathLike,
    streaming: bool,
    verify_images: bool,
    skip_invalid: bool,
    report: SkipReport,
) -> datasets.Dataset | datasets.IterableDataset:
    """The last step of every loader: log what was skipped, build the dataset (checking images while streaming)."""
    report.log_summary(str(source))
    lazy_check = lazy_image_check(source, verify_images, streaming, skip_invalid, report)
    return build_dataset(records, features, streaming, lazy_check)
