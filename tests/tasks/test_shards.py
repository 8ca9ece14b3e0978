"""Streaming sharded data (`tasks/shards.py`, `scripts/write_shards.py`): shards written from every task's loader read
back as the loader's records; processes read disjoint records that together make one epoch; a stream's position,
shuffle buffer included, resumes exactly, through the trainer's checkpoints after a SIGKILL with 1 and 2 processes."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tasks.registry import TASKS, get_task
from tasks.shards import KEY, MANIFEST, ShardError, load_shards, shard_task_files, write_shards
from tests.tasks.test_multi_node import _kill_node
from tests.tasks.test_trainer import REPO, TRAIN, _env, _recipe, _run, assert_same_run, wait_until

WRITE = str(REPO / "scripts" / "write_shards.py")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tasks.synthetic import generate_synthetic_multitask

    folder = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_multitask(folder, seed=0, num_train=10, num_val=2, image_size=64)
    return folder


@pytest.fixture(scope="module")
def detection_shards(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 10 detection records in 4 shards (3 + 3 + 3 + 1 records... by `records_per_shard=3`)."""
    root = tmp_path_factory.mktemp("shards")
    files = get_task("detection").default_files(str(synthetic), "train")
    shard_task_files("detection", files, root, records_per_shard=3, row_group_size=2)
    return root / "detection"


def _epoch(stream) -> list[str]:
    """The keys one stream yields in its first epoch."""
    keys = []
    for key in stream.keys():
        if stream.epoch > 0:
            return keys
        keys.append(key)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_reads_back_as_its_loader_wrote(task: str, synthetic: Path, tmp_path: Path) -> None:
    spec = get_task(task)
    files = spec.default_files(str(synthetic), "train")
    loaded = spec.load(files, None)
    manifest = shard_task_files(task, files, tmp_path, records_per_shard=4)
    assert manifest["parts"]["train"]["num_records"] == len(loaded.dataset)
    data = load_shards(tmp_path / task, task, buffer_size=3)
    assert data.categories == loaded.categories and data.answers == loaded.answers
    stream = data.dataset.open_stream(seed=0, task_index=0, rank=0, world_size=1)
    records = {record[KEY]: record for record in stream.take(len(loaded.dataset))}
    assert len(records) == len(loaded.dataset)  # one epoch: every record once
    for index, expected in enumerate(loaded.dataset):
        got = records[f"train/{index:09d}"]
        for name, value in expected.items():
            if isinstance(value, Image.Image):  # decoded from the embedded bytes
                assert got[name].tobytes() == value.tobytes() and got[name].size == value.size, (task, index)
            else:
                assert got[name] == value, (task, index, name)
        assert got["augment_seed"] == f"0:0:0:train/{index:09d}"


def test_processes_read_disjoint_records_that_make_one_epoch(detection_shards: Path) -> None:
    source = load_shards(detection_shards, "detection", buffer_size=4).dataset
    assert len(source.files) == 4 and source.num_records == 10
    everything = _epoch(source.open_stream(0, 0, 0, 1))
    assert sorted(everything) == [f"train/{i:09d}" for i in range(10)]
    assert everything != sorted(everything)  # shuffled (shard order and buffer)
    for world in (2, 3):  # 4 shards: whole shards per process for 2, every 3rd record for 3
        seen = [_epoch(source.open_stream(0, 0, rank, world)) for rank in range(world)]
        assert sum(len(keys) for keys in seen) == 10
        assert set().union(*map(set, seen)) == set(everything)
    # the next epoch is another order of the same records
    stream = source.open_stream(0, 0, 0, 1)
    first, second = list(itertools.islice(stream.keys(), 10)), list(itertools.islice(stream.keys(), 10))
    assert sorted(first) == sorted(second) and first != second and stream.epoch == 1


@pytest.mark.parametrize("world,rank", [(1, 0), (2, 1)])
def test_a_stream_resumes_exactly_from_its_state(detection_shards: Path, world: int, rank: int) -> None:
    source = load_shards(detection_shards, "detection", buffer_size=4).dataset
    reference = list(itertools.islice(source.open_stream(3, 1, rank, world).keys(), 40))
    for cut in (0, 1, 3, 4, 5, 9, 10, 11, 17, 25):  # within the buffer's fill, at and across epoch ends
        stream = source.open_stream(3, 1, rank, world)
        before = list(itertools.islice(stream.keys(), cut))
        state = json.loads(json.dumps(stream.state_dict()))  # as a checkpoint stores it
        resumed = source.open_stream(3, 1, rank, world)
        resumed.load_state_dict(state)
        assert before + list(itertools.islice(resumed.keys(), 40 - cut)) == reference, cut
    stream = source.open_stream(3, 1, rank, world)
    other = load_shards(detection_shards, "detection", buffer_size=5).dataset.open_stream(3, 1, rank, world)
    with pytest.raises(ShardError, match="buffer_size=4.*this run has 5"):
        other.load_state_dict(stream.state_dict())
    with pytest.raises(ShardError, match="world_size"):
        source.open_stream(3, 1, 0, world + 1).load_state_dict(stream.state_dict())


def test_parts_and_clear_errors(synthetic: Path, tmp_path: Path) -> None:
    detection = get_task("detection")
    files = detection.default_files(str(synthetic), "train")
    shard_task_files("detection", files, tmp_path, part="a", records_per_shard=4)
    shard_task_files("detection", files, tmp_path, part="b", records_per_shard=100)
    data = load_shards(tmp_path / "detection", "detection")
    assert data.dataset.num_records == 20 and len(data.dataset.files) == 4
    # a part written again replaces its shards
    shard_task_files("detection", files, tmp_path, part="a", records_per_shard=10)
    assert sorted(p.name for p in (tmp_path / "detection").glob("a-*")) == ["a-00000-of-00001.parquet"]
    loaded = detection.load(files, None)
    renamed = dataclasses.replace(loaded, categories=[{"id": 1, "name": "something else"}])
    with pytest.raises(ShardError, match="other categories"):
        write_shards("detection", renamed, tmp_path / "detection", part="c")
    with pytest.raises(ShardError, match="holds shards of task 'detection', not 'grounding'"):
        write_shards(
            "grounding", get_task("grounding").load(files_of(synthetic, "grounding"), None), tmp_path / "detection"
        )
    with pytest.raises(ShardError, match="not 'vqa'"):
        load_shards(tmp_path / "detection", "vqa")
    with pytest.raises(FileNotFoundError, match="no shards.json; write shards there"):
        load_shards(tmp_path / "nothing", "detection")
    (tmp_path / "detection" / "b-00000-of-00001.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="lists shards that are not there"):
        load_shards(tmp_path / "detection", "detection")
    (tmp_path / "detection" / MANIFEST).write_text("{")
    with pytest.raises(ShardError, match="shards.json: not valid JSON"):
        load_shards(tmp_path / "detection", "detection")


def files_of(synthetic: Path, task: str):
    return get_task(task).default_files(str(synthetic), "train")


def test_the_script_names_a_missing_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, WRITE, "--task", "detection", "--image_dir", str(tmp_path), "--annotation_file",
         str(tmp_path / "missing.json"), "--output_dir", str(tmp_path / "out")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "missing.json" in result.stderr, result.stderr


def _streaming_recipe(tmp_path: Path, name: str, **train: object) -> Path:
    """The trainer tests' tiny recipe, its training data streamed from `<tmp_path>/shards` (buffer of 6)."""
    path = _recipe(tmp_path, name, **train)
    recipe = yaml.safe_load(path.read_text())
    recipe["data"].update(shards=str(tmp_path / "shards"), shuffle_buffer=6)
    path.write_text(yaml.safe_dump(recipe))
    return path


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]


@pytest.mark.parametrize("processes", [1, 2])
def test_sigkill_then_resume_of_streamed_training_is_exact(tmp_path: Path, processes: int) -> None:
    steps = 12
    reference = _streaming_recipe(tmp_path, "reference", max_steps=steps, per_device_batch_size=4 // processes)
    # 16 records of each task in 4 shards: 2 processes read 2 shards each
    _run([sys.executable, WRITE, "--config", str(reference), "--output_dir", str(tmp_path / "shards"),
          "--records_per_shard", "4"])  # fmt: skip
    launch = _torchrun if processes == 2 else (lambda *args: [sys.executable, *args])
    _run(launch(TRAIN, "--config", str(reference), "--no_progress"))
    killed = _streaming_recipe(
        tmp_path, "killed", max_steps=steps, save_every=4, keep_last=2, per_device_batch_size=4 // processes
    )
    output = tmp_path / "killed"
    process = subprocess.Popen(
        launch(TRAIN, "--config", str(killed), "--no_progress"),
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_until((output / "checkpoint-4").is_dir, process), "the run finished before it could be killed"
    finally:
        _kill_node(process)
    checkpoint = output / "checkpoint-4"
    assert sorted(p.name for p in checkpoint.glob("stream_state_*.json")) == [
        f"stream_state_{rank}.json" for rank in range(processes)
    ]
    assert not (output / "final").exists()
    _run(launch(TRAIN, "--config", str(killed), "--no_progress", "--resume_from_checkpoint", "latest"))
    assert_same_run(tmp_path / "reference", output, steps)
    if processes == 2:  # resuming with another process count is refused, naming the reason
        result = subprocess.run(
            [sys.executable, TRAIN, "--config", str(killed), "--no_progress", "--resume_from_checkpoint",
             str(output / "checkpoint-8")],
            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode != 0 and "world_size=2" in result.stderr, result.stderr[-2000:]
