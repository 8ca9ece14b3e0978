"""Sharded training data: Parquet shards written from any task's loader, streamed back through `datasets`.

Writing ([`write_shards`], `scripts/write_shards.py`): a task's records, read by the task's own loader from any file
it accepts (COCO / Objects365 / LVIS instances, MDETR / GoldG grounding, PhraseCut, RefCOCO, VQAv2, COCO captions,
pseudo-labels), are cut into Parquet files of `records_per_shard` rows with the image bytes embedded, so shards can
be copied to any machine or bucket without the image folders. One task folder may hold several parts (GoldG's
`mixed` and `flickr`, caption pseudo-labels, ...); `shards.json` lists them with what the collator needs besides the
records (detection's categories, VQA's answers).

Reading ([`ShardSource`] / [`ShardStream`]): `datasets.load_dataset("parquet", streaming=True)` over the shards,
`datasets.distributed.split_dataset_by_node` so each process reads its own shards (disjoint examples, together one
epoch of the whole data), and a shuffle buffer; nothing holds more than the buffer and a Parquet row group.

Exact resume: `datasets` restores a stream's position (`IterableDataset.state_dict()`) but not a shuffle buffer's
content (its own `shuffle` refills the buffer with new data after a resume). The buffer here is therefore this
module's: its random generator state, the order of its entries and the stream position before its oldest entry are
saved; a resume reloads that position and re-reads the (undecoded) rows up to the saved read count, keeping the
entries that were in the buffer. The stream then continues with the same examples in the same order as an
uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

logger = logging.getLogger(__name__)

MANIFEST = "shards.json"
KEY = "__key__"  # the record's identity in the shards: "<part>/<index>" (the WebDataset convention's name)
SHARD_SUFFIX = ".parquet"
DEFAULT_SHUFFLE_BUFFER = 1000


class ShardError(ValueError):
    """Shards that cannot be read or extended as asked (the message names the folder and the problem)."""


# ------------------------------------------------------------------------------------------------------ writing
def write_shards(
    task: str,
    data: Any,
    output_dir: str | os.PathLike,
    part: str = "train",
    records_per_shard: int = 1000,
    row_group_size: int = 100,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes `data` (a task's `TaskData`) as `<output_dir>/<part>-NNNNN-of-MMMMM.parquet` and records the part in
    `<output_dir>/shards.json`; returns the manifest.

    Image columns are embedded as bytes. Parts must agree on the task, the columns and (detection) the categories; a
    part written again is replaced. Files are written under temporary names and renamed, the manifest last, so a
    killed run leaves the folder as it was.
    """
    if records_per_shard <= 0 or row_group_size <= 0:
        raise ValueError(f"records_per_shard ({records_per_shard}) and row_group_size ({row_group_size}) must be > 0")
    if "/" in part or not part:
        raise ValueError(f"part {part!r}: a non-empty name without '/'")
    dataset = data.dataset
    if not isinstance(dataset, datasets.Dataset):
        raise ShardError(f"{task}: shards are written from a map-style datasets.Dataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ShardError(f"{task}: no records to write into {output_dir} (part {part!r})")
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    keyed_features = datasets.Features({**dataset.features, KEY: datasets.Value("string")})
    manifest = _read_manifest(output_dir) or {"task": task, "features": keyed_features.to_dict(), "parts": {}}
    _check_compatible(manifest, task, dataset.features, data, output_dir)
    keyed = dataset.map(lambda _, index: {KEY: f"{part}/{index:09d}"}, with_indices=True, features=keyed_features)
    count = math.ceil(len(keyed) / records_per_shard)
    files = []
    for index in range(count):
        shard = keyed.shard(count, index, contiguous=True)
        shard = shard.with_format("arrow").map(datasets.table.embed_table_storage, batched=True).with_format(None)
        name = f"{part}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"
        temporary = os.path.join(output_dir, name + ".tmp")
        shard.to_parquet(temporary, batch_size=row_group_size)
        os.replace(temporary, os.path.join(output_dir, name))
        files.append(name)
    stale = manifest["parts"].get(part, {}).get("files", [])
    manifest["parts"][part] = {
        "files": files,
        "num_records": len(keyed),
        "source": source or {},
        "categories": data.categories,
        "answers": data.answers,
    }
    _write_manifest(output_dir, manifest)
    for name in set(stale) - set(files):
        os.remove(os.path.join(output_dir, name))
    return manifest


def shard_task_files(
    task: str,
    files: Any,
    output_root: str | os.PathLike,
    part: str = "train",
    skip_invalid: bool = False,
    verify_images: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Reads `files` (`tasks.spec.DataFiles`) with the task's own loader and writes them as part `part` of
    `<output_root>/<task>` ([`write_shards`]); returns the manifest."""
    import dataclasses

    from tasks.common import SkipReport
    from tasks.registry import get_task

    report = SkipReport()
    data = get_task(task).load(files, None, skip_invalid=skip_invalid, verify_images=verify_images, report=report)
    source = {key: value for key, value in dataclasses.asdict(files).items() if value is not None}
    if report.total:
        source["skipped_invalid"] = dict(report.counts)
    return write_shards(task, data, os.path.join(os.fspath(output_root), task), part, source=source, **options)


def shard_recipe(recipe: Any, output_root: str | os.PathLike, part: str = "train", **options: Any) -> dict[str, Any]:
    """Every task of a recipe, its training split read from the recipe's data folder / `files` as training would
    read it, written to `<output_root>/<task>`; returns the manifests by task."""
    from tasks.multitask import ensure_data, task_files

    ensure_data(recipe.data)
    data = recipe.data
    return {
        task.name: shard_task_files(
            task.name,
            task_files(recipe, task, data.train_split),
            output_root,
            part,
            skip_invalid=data.skip_invalid,
            verify_images=data.verify_images,
            **options,
        )
        for task in recipe.tasks
    }


def _read_manifest(folder: str) -> dict[str, Any] | None:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ShardError(f"{path}: not valid JSON ({error})") from error


def _write_manifest(folder: str, manifest: dict[str, Any]) -> None:
    temporary = os.path.join(folder, MANIFEST + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
    os.replace(temporary, os.path.join(folder, MANIFEST))


def _check_compatible(manifest: dict[str, Any], task: str, features: Any, data: Any, folder: str) -> None:
    if manifest["task"] != task:
        raise ShardError(f"{folder} holds shards of task {manifest['task']!r}, not {task!r}: use another folder")
    written = datasets.Features.from_dict(manifest["features"])
    written.pop(KEY, None)
    if written != features:
        raise ShardError(
            f"{folder}: the records of task {task!r} have columns {sorted(features)} of other types than the shards "
            f"already there ({sorted(written)}); write them to another folder"
        )
    for name, part in manifest["parts"].items():
        if data.categories is not None and part.get("categories") not in (None, data.categories):
            raise ShardError(
                f"{folder}: part {name!r} has other categories than these records; a detection task's parts must "
                "share one category list (the prompt)"
            )


# ------------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class ShardSource:
    """A task folder of shards (see the module docstring): what the trainer opens one [`ShardStream`] per process
    from. It has no length and no random access: records come only through a stream."""

    folder: str
    files: tuple[str, ...]
    features: Any
    num_records: int
    buffer_size: int = DEFAULT_SHUFFLE_BUFFER

    def open_stream(self, seed: int, task_index: int, rank: int, world_size: int) -> ShardStream:
        return ShardStream(self, seed, task_index, rank, world_size)


def load_shards(folder: str | os.PathLike, task: str, buffer_size: int = DEFAULT_SHUFFLE_BUFFER) -> Any:
    """The `TaskData` of a shard folder: a [`ShardSource`] as its dataset, the categories / answers of its parts."""
    from tasks.spec import TaskData

    folder = os.fspath(folder)
    manifest = _read_manifest(folder)
    if manifest is None:
        raise FileNotFoundError(
            f"{folder}: no {MANIFEST}; write shards there with scripts/write_shards.py (task {task!r})"
        )
    if manifest["task"] != task:
        raise ShardError(f"{folder} holds shards of task {manifest['task']!r}, not {task!r}")
    if buffer_size <= 0:
        raise ValueError(f"data.shuffle_buffer must be > 0, got {buffer_size}")
    parts = [manifest["parts"][name] for name in sorted(manifest["parts"])]
    files = tuple(os.path.join(folder, name) for part in parts for name in part["files"])
    missing = [path for path in files if not os.path.isfile(path)]
    if not files or missing:
        raise FileNotFoundError(f"{folder}: {MANIFEST} lists shards that are not there: {missing or 'none at all'}")
    categories = next((part["categories"] for part in parts if part.get("categories") is not None), None)
    answers = _merged_answers([part.get("answers") for part in parts])
    source = ShardSource(
        folder,
        files,
        datasets.Features.from_dict(manifest["features"]),
        sum(part["num_records"] for part in parts),
        buffer_size,
    )
    return TaskData(dataset=source, categories=categories, answers=answers)


def _merged_answers(lists: list[list[str] | None]) -> list[str] | None:
    """One answer vocabulary from the parts' (each most frequent first): by the parts' summed ranks' order."""
    present = [answers for answers in lists if answers is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    votes: Counter = Counter()
    for answers in present:
        for rank, answer in enumerate(answers):
            votes[answer] += len(answers) - rank
    return [answer for answer, _ in sorted(votes.items(), key=lambda item: (-item[1], item[0]))]


@dataclass
class _Entry:
    seq: int  # place in this epoch's stream of this process
    before: dict | None  # the stream's state before this record was read (None: the epoch's start)
    record: dict[str, Any]  # undecoded


class ShardStream:
    """One process's endless, resumable record stream over a [`ShardSource`].

    Epoch `e` orders the shard files by a permutation seeded by (seed, task, e), the same in every process;
    `split_dataset_by_node` then gives process `rank` its shards (every `world_size`-th; when the shard count is not
    a multiple of `world_size`, every `world_size`-th record). Records pass through a shuffle buffer of
    `source.buffer_size` entries seeded by (seed, task, rank, e), which empties at the end of an epoch. Each record
    comes decoded, with `augment_seed` set from its key and epoch, so augmentation is the same after a resume.
    """

    def __init__(self, source: ShardSource, seed: int, task_index: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.source, self.seed, self.task_index, self.rank, self.world_size = (
            source,
            seed,
            task_index,
            rank,
            world_size,
        )
        self._start_epoch(0)

    # ---------------------------------------------------------------------------------------------- iteration
    def _epoch_files(self, epoch: int) -> list[str]:
        order = np.random.default_rng([self.seed, self.task_index, epoch]).permutation(len(self.source.files))
        return [self.source.files[i] for i in order]

    def _start_epoch(self, epoch: int, position: dict | None = None) -> None:
        from datasets.distributed import split_dataset_by_node

        stream = datasets.load_dataset(
            "parquet", data_files={"train": self._epoch_files(epoch)}, split="train", streaming=True
        )
        stream = split_dataset_by_node(stream.decode(False), rank=self.rank, world_size=self.world_size)
        if position is not None:
            stream.load_state_dict(position)
        self.epoch, self.read, self.exhausted = epoch, 0, False
        self.rng = np.random.default_rng([self.seed, self.task_index, self.rank, epoch])
        self.buffer: list[_Entry] = []
        self.close()
        self._dataset, self._iterator, self._last_state = stream, iter(stream), position
        # closes the Parquet reader while the interpreter is whole (at exit, `datasets`' generator would otherwise
        # be finalised after its modules are gone and print an ignored exception)
        self._finalizer = weakref.finalize(self, self._iterator.close)

    def close(self) -> None:
        """Closes the open Parquet reader (the stream reopens at its next epoch or `load_state_dict`)."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()

    def _pull(self) -> _Entry | None:
        """Reads the next record of the epoch (None at its end)."""
        try:
            record = next(self._iterator)
        except StopIteration:
            self.exhausted = True
            return None
        entry = _Entry(self.read, self._last_state, record)
        self._last_state = self._dataset.state_dict()
        self.read += 1
        return entry

    def _next_entry(self) -> _Entry:
        while True:
            while not self.exhausted and len(self.buffer) < self.source.buffer_size:
                entry = self._pull()
                if entry is not None:
                    self.buffer.append(entry)
            if self.buffer:
                index = int(self.rng.integers(len(self.buffer)))
                self.buffer[index], self.buffer[-1] = self.buffer[-1], self.buffer[index]
                return self.buffer.pop()
            if self.read == 0:
                raise ShardError(
                    f"{self.source.folder}: process {self.rank} of {self.world_size} got no records (fewer records "
                    "than processes?)"
                )
            self._start_epoch(self.epoch + 1)

    def take(self, count: int) -> list[dict[str, Any]]:
        """The next `count` records, decoded, each with `augment_seed`."""
        out = []
        for _ in range(count):
            entry = self._next_entry()
            record = self.source.features.decode_example(dict(entry.record))
            record["augment_seed"] = f"{self.seed}:{self.task_index}:{self.epoch}:{record[KEY]}"
            out.append(record)
        return out

    def keys(self) -> Iterator[str]:
        """The keys of the records to come, endlessly (no decoding; for checks and tests)."""
        while True:
            yield self._next_entry().record[KEY]

    # -------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position: epoch, read count, buffer order, generator state, the replay anchor."""
        anchor = min(self.buffer, key=lambda entry: entry.seq) if self.buffer else None
        return {
            "files": [os.path.basename(path) for path in self.source.files],
            "world_size": self.world_size,
            "rank": self.rank,
            "buffer_size": self.source.buffer_size,
            "epoch": self.epoch,
            "read": self.read,
            "exhausted": self.exhausted,
            "rng": self.rng.bit_generator.state,
            "buffer": [entry.seq for entry in self.buffer],
            "anchor_seq": anchor.seq if anchor else self.read,
            "anchor_state": anchor.before if anchor else self._last_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a [`state_dict`] of the same shards, process count, rank and buffer size."""
        expected = {
            "files": [os.path.basename(path) for path in self.source.files],
            "world_size": self.world_size,
            "rank": self.rank,
            "buffer_size": self.source.buffer_size,
        }
        for name, value in expected.items():
            if state.get(name) != value:
                raise ShardError(
                    f"{self.source.folder}: the saved stream position was taken with {name}={state.get(name)!r}, this "
                    f"run has {value!r}; an exact resume of streamed data needs the same shards, number of "
                    "processes and train.shuffle_buffer"
                )
        self._start_epoch(state["epoch"], state["anchor_state"])
        self.read = state["anchor_seq"]
        wanted = set(state["buffer"])
        found: dict[int, _Entry] = {}
        while self.read < state["read"]:
            entry = self._pull()
            if entry is None:
                raise ShardError(
                    f"{self.source.folder}: the shards changed since the checkpoint (an epoch ended early)"
                )
            if entry.seq in wanted:
                found[entry.seq] = entry
        if state["exhausted"] and self._pull() is not None:
            raise ShardError(f"{self.source.folder}: the shards changed since the checkpoint (an epoch ran longer)")
        self.buffer = [found[seq] for seq in state["buffer"]]
        self.rng.bit_generator.state = state["rng"]


__all__ = [
    "DEFAULT_SHUFFLE_BUFFER",
    "KEY",
    "MANIFEST",
    "ShardError",
    "ShardSource",
    "ShardStream",
    "load_shards",
    "shard_recipe",
    "shard_task_files",
    "write_shards",
]
