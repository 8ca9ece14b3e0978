"""Multi-node on loopback (CPU, gloo): two "nodes" started separately, as two machines would be, through torchrun and
through `accelerate launch --config_file configs/accelerate/multi_node.yaml`, train the weights of one process with
the same global batch; a SIGKILLed node stops the other with a clear error, and relaunching both nodes with
`--resume_from_checkpoint latest` ends on the weights of the uninterrupted run."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tasks.test_trainer import (
    REPO,
    TRAIN,
    _env,
    _recipe,
    _run,
    assert_same_run,
    assert_same_training,
    wait_until,
)

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
MULTI_NODE = str(REPO / "configs" / "accelerate" / "multi_node.yaml")
STEPS, SAVE_EVERY = 12, 4
RUN_TIMEOUT = 300  # seconds for a whole 2-node run; a step takes well under one
SURVIVOR_TIMEOUT = 30  # the recipe's train.distributed_timeout: the bound even if the peer's sockets stayed open


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _node_command(launcher: str, rank: int, port: int, config: Path, *extra: str) -> list[str]:
    script = [TRAIN, "--config", str(config), "--no_progress", *extra]
    if launcher == "torchrun":
        rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
        nodes = ["--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1"]
        return [sys.executable, "-m", "torch.distributed.run", *nodes, *rendezvous, *script]
    machine = ["--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
    # no --cpu: it makes `accelerate launch` start one plain process per machine, each training alone; the trainer
    # picks the CPU itself when no GPU is visible (see multi_node.yaml)
    sizes = ["--num_machines", "2", "--num_processes", "2", "--mixed_precision", "no"]
    return [ACCELERATE, "launch", "--config_file", MULTI_NODE, *machine, *sizes, *script]


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its workers in their own session, so a process group misses them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
    found, pending = [], [pid]
    while pending:
        below = children.get(pending.pop(), [])
        found.extend(below)
        pending.extend(below)
    return found


def _kill_node(process: subprocess.Popen) -> None:
    """SIGKILLs a node's launcher and everything it started, as when the machine is lost."""
    for pid in [process.pid, *_descendants(process.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def _nodes(launcher: str, config: Path, logs: Path, *extra: str) -> Iterator[list[subprocess.Popen]]:
    """Starts node 0 and node 1 as separate launches on a fresh port; whatever is left running is killed on exit."""
    port = _free_port()
    env = {**_env(), "CUDA_VISIBLE_DEVICES": ""}  # CPU and gloo, even on a machine with GPUs
    processes = []
    try:
        for rank in (0, 1):
            with open(logs / f"{config.stem}-{launcher}-node{rank}.log", "a") as log:
                command = _node_command(launcher, rank, port, config, *extra)
                processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                _kill_node(process)


def _wait(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    return [process.wait(timeout=max(deadline - time.monotonic(), 0.1)) for process in processes]


def _log(logs: Path, config: Path, launcher: str, rank: int) -> str:
    return (logs / f"{config.stem}-{launcher}-node{rank}.log").read_text()


def _run_nodes(launcher: str, config: Path, logs: Path, *extra: str) -> None:
    with _nodes(launcher, config, logs, *extra) as processes:
        codes = _wait(processes, RUN_TIMEOUT)
    assert codes == [0, 0], "\n".join(_log(logs, config, launcher, rank)[-3000:] for rank in (0, 1))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder (and one synthetic data set, written by the one-process run first) for every run here."""
    folder = tmp_path_factory.mktemp("multi_node")
    config = _recipe(folder, "one", max_steps=STEPS, per_device_batch_size=4)
    _run([sys.executable, TRAIN, "--config", str(config), "--no_progress"], timeout=RUN_TIMEOUT)
    return folder


@pytest.fixture(scope="module")
def torchrun_nodes(workdir: Path) -> Path:
    """An uninterrupted 2-node torchrun run that saves checkpoints as the killed run does."""
    config = _recipe(workdir, "torchrun", max_steps=STEPS, per_device_batch_size=2, save_every=SAVE_EVERY)
    _run_nodes("torchrun", config, workdir)
    return workdir / "torchrun"


def test_two_torchrun_nodes_equal_one_process(workdir: Path, torchrun_nodes: Path) -> None:
    assert_same_training(workdir / "one", torchrun_nodes)


def test_two_accelerate_nodes_equal_one_process(workdir: Path) -> None:
    config = _recipe(workdir, "accelerate", max_steps=STEPS, per_device_batch_size=2, verify_replicas=True)
    _run_nodes("accelerate", config, workdir)
    assert_same_training(workdir / "one", workdir / "accelerate")


def test_a_killed_node_is_reported_and_the_run_resumes(workdir: Path, torchrun_nodes: Path) -> None:
    config = _recipe(
        workdir,
        "killed",
        max_steps=STEPS,
        per_device_batch_size=2,
        save_every=SAVE_EVERY,
        distributed_timeout=SURVIVOR_TIMEOUT,
    )
    output = workdir / "killed"
    with _nodes("torchrun", config, workdir) as (survivor, lost):
        running = wait_until((output / "checkpoint-4").is_dir, lost, RUN_TIMEOUT)
        assert running and not (output / "final").exists(), "node 1 ended before it could be killed"
        _kill_node(lost)
        killed_at = time.monotonic()
        code = survivor.wait(timeout=SURVIVOR_TIMEOUT + 60)  # never forever: a hang fails here
        waited = time.monotonic() - killed_at
    log = _log(workdir, config, "torchrun", 0)
    assert code != 0, log[-3000:]
    assert "PeerLostError" in log and "lost the others after step" in log, log[-3000:]
    assert "relaunch every node with --resume_from_checkpoint latest" in log
    assert "Connection reset by peer" in log or "Connection closed by peer" in log or "Timed out" in log  # the cause
    assert not (output / "final").exists()
    print(f"survivor exited with {code} {waited:.1f} s after node 1 was killed")

    _run_nodes("torchrun", config, workdir, "--resume_from_checkpoint", "latest")
    assert not list(output.glob("*.tmp"))
    # the same 2-node run without the kill, bit for bit (each sum of two halves is exact whatever the order)
    assert_same_run(torchrun_nodes, output, STEPS)
    assert_same_training(workdir / "one", output)


def test_a_hung_node_stops_the_others_after_the_timeout(workdir: Path) -> None:
    """A node that stops answering without closing its connections (SIGSTOP: a frozen machine, a network partition)
    is noticed by the others' workers after `train.distributed_timeout` seconds and reported as `PeerLostError`,
    never waited on forever. (torchrun's own agent on the surviving node may then wait on the frozen node's
    rendezvous store for its socket timeouts; the test ends both nodes once the worker has reported.)"""
    config = _recipe(
        workdir, "hung", max_steps=STEPS, per_device_batch_size=2, save_every=SAVE_EVERY, distributed_timeout=10
    )
    output = workdir / "hung"
    with _nodes("torchrun", config, workdir) as (survivor, hung):
        running = wait_until((output / "checkpoint-4").is_dir, hung, RUN_TIMEOUT)
        assert running and not (output / "final").exists(), "node 1 ended before it could be stopped"
        frozen = [hung.pid, *_descendants(hung.pid)]
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            while "PeerLostError" not in _log(workdir, config, "torchrun", 0) and time.monotonic() < stopped_at + 90:
                time.sleep(0.1)
            waited = time.monotonic() - stopped_at
        finally:
            for pid in frozen:  # _nodes SIGKILLs what is left of both nodes
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
    log = _log(workdir, config, "torchrun", 0)
    assert "PeerLostError" in log and "train.distributed_timeout=10s" in log, log[-3000:]
    assert "Timed out" in log and "relaunch every node with --resume_from_checkpoint latest" in log
    assert 10 - 1 <= waited <= 10 + 30, waited  # after the timeout (a slow peer is not a lost one), not much later
    assert not (output / "final").exists()
    print(f"the surviving worker reported the hung node {waited:.1f} s after it was stopped")
