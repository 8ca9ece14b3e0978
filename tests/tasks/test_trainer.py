"""Training: the loop runs as a script, 2 processes equal 1, a SIGKILLed run resumes bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
TRAIN = str(REPO / "scripts" / "train.py")


def _recipe(tmp_path: Path, output: str, **train: object) -> Path:
    recipe = {
        "model": {
            "preset": "tiny-random",
            "overrides": {
                "fusion_attention_dropout": 0.0,
                "text_config": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
            },
            "text_encoder": None,
            "tokenizer": "minilm",
            "image_size": 64,
        },
        "data": {
            "dir": str(tmp_path / "data"),
            "generate": {"seed": 0, "num_train": 16, "num_val": 4, "image_size": 64},
            "train_min_sizes": [48, 64],
            "train_max_size": 80,
            "train_pad_size": 96,
        },
        "tasks": [{"name": "detection"}, {"name": "grounding", "loss_weight": 0.5}],
        "train": {
            "output_dir": str(tmp_path / output),
            "max_steps": 6,
            "per_device_batch_size": 4,
            "learning_rate": 1e-3,
            "warmup_steps": 2,
            "report_to": None,
            "seed": 0,
            **train,
        },
    }
    path = tmp_path / f"{output}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, timeout: float = 300) -> bool:
    """Polls until `ready()`, the process ends or `timeout` seconds pass; True while the process still runs."""
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return process.poll() is None


def _kill_when(process: subprocess.Popen, ready: Callable[[], bool], delay: float = 0.0, timeout: float = 300) -> bool:
    """Waits until `ready()` (or the process ends), then `delay` seconds more, then SIGKILLs; True if it was killed."""
    wait_until(ready, process, timeout)
    time.sleep(delay)
    killed = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return killed


def _history(output: Path) -> list[dict]:
    return json.loads((output / "train_history.json").read_text())


def assert_same_run(reference: Path, output: Path, steps: int) -> None:
    """`output` logged steps 1..`steps` with `reference`'s losses and saved the same final weights, bit for bit."""
    expected, resumed = _history(reference), _history(output)
    assert [r["step"] for r in resumed] == list(range(1, steps + 1))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in expected]  # bit for bit on CPU
    a = load_file(reference / "final" / "model.safetensors")
    b = load_file(output / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def assert_same_training(reference: Path, output: Path) -> None:
    """`output` (2 processes, half the batch each) followed `reference` (1 process, the same global batch): the same
    schedule and losses (rel 1e-5) and the same weights. Summation order differs (an all-reduce of two halves), and
    Adam turns rounding noise in near-zero gradients (attention key biases have an exactly-zero gradient) into updates
    of the learning rate's size: the whole parameter vector is compared relatively and every tensor absolutely."""
    single, double = _history(reference), _history(output)
    assert [r["step"] for r in double] == [r["step"] for r in single]
    assert [r["lr"] for r in single] == [r["lr"] for r in double]
    for a, b in zip(single, double):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    weights_one = load_file(reference / "final" / "model.safetensors")
    weights_two = load_file(output / "final" / "model.safetensors")
    assert weights_one.keys() == weights_two.keys()
    flat_one = torch.cat([weights_one[k].double().flatten() for k in sorted(weights_one)])
    flat_two = torch.cat([weights_two[k].double().flatten() for k in sorted(weights_one)])
    assert (flat_two - flat_one).norm() <= 1e-5 * flat_one.norm()
    for name, a in weights_one.items():
        assert (weights_two[name] - a).abs().max() <= 1e-5, name


def write_grounding_subset(data: Path, count: int, path: Path) -> set[int]:
    """The first `count` images of the synthetic grounding train file and their boxes, as an MDETR file at `path`
    (a stand-in for `scripts/pseudo_label.py` output); returns their image ids."""
    from tasks.common import read_json, write_json

    grounding = read_json(data / "annotations" / "grounding_train.json")
    kept = {image["id"] for image in grounding["images"][:count]}
    grounding["images"] = grounding["images"][:count]
    grounding["annotations"] = [a for a in grounding["annotations"] if a["image_id"] in kept]
    write_json(path, grounding)
    return kept


def test_train_script_runs_and_losses_fall(tmp_path: Path) -> None:
    # 48 steps: about 16 detection steps on 16 images, enough for the loss to fall beyond step-to-step noise
    config = _recipe(tmp_path, "run", max_steps=48, save_every=24, keep_last=1, learning_rate=2e-3)
    # an override typed by its field: `no` stays the string "no" that Accelerate expects
    _run([sys.executable, TRAIN, "--config", str(config), "--no_progress", "--set", "train.mixed_precision=no"])
    history = _history(tmp_path / "run")
    assert [record["step"] for record in history] == list(range(1, 49))
    for task in ("detection", "grounding"):
        losses = [r[f"{task}/loss"] for r in history if f"{task}/loss" in r]
        assert len(losses) >= 6, task
        half = len(losses) // 2
        assert sum(losses[-half:]) < sum(losses[:half]), (task, losses)  # later half below the first half
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
    assert (tmp_path / "run" / "final" / "tokenizer.json").exists()
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-48"]  # keep_last=1
    summary = (tmp_path / "run" / "train_summary.md").read_text()
    assert "| detection/loss_cls |" in summary
    # warm-up then cosine, stepped once per optimizer step
    assert history[0]["lr"] == pytest.approx(2e-3) and history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_two_processes_equal_one(tmp_path: Path) -> None:
    one = _recipe(tmp_path, "one", per_device_batch_size=4, verify_replicas=True)
    two = _recipe(tmp_path, "two", per_device_batch_size=2, verify_replicas=True)
    _run([sys.executable, TRAIN, "--config", str(one), "--no_progress"])
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            TRAIN,
            "--config",
            str(two),
            "--no_progress",
        ]
    )
    assert_same_training(tmp_path / "one", tmp_path / "two")


def test_sigkill_then_resume_is_exact(tmp_path: Path) -> None:
    steps = 30
    reference = _recipe(tmp_path, "reference", max_steps=steps)
    _run([sys.executable, TRAIN, "--config", str(reference), "--no_progress"])
    killed = _recipe(tmp_path, "killed", max_steps=steps, save_every=4, keep_last=2)
    output = tmp_path / "killed"
    process = _start([sys.executable, TRAIN, "--config", str(killed), "--no_progress"])
    assert _kill_when(process, (output / "checkpoint-8").is_dir), "the run finished before it could be killed"
    assert not (output / "final").exists()
    _run([sys.executable, TRAIN, "--config", str(killed), "--no_progress", "--resume_from_checkpoint", "latest"])
    assert_same_run(tmp_path / "reference", output, steps)


def test_task_files_replace_the_training_files(tmp_path: Path) -> None:
    """A grounding task trained on another MDETR file (e.g. `scripts/pseudo_label.py` output); evaluation keeps the
    data folder's split files."""
    from tasks.multitask import load_task_data
    from tasks.recipe import recipe_from_dict
    from tasks.synthetic import generate_synthetic_multitask

    data = tmp_path / "data"
    generate_synthetic_multitask(data, seed=0, num_train=6, num_val=3, image_size=64)
    kept = write_grounding_subset(data, 2, tmp_path / "pseudo.json")
    recipe = {
        "data": {"dir": str(data)},
        "tasks": [{"name": "grounding", "files": {"annotation_file": str(tmp_path / "pseudo.json")}}],
    }
    train = load_task_data(recipe_from_dict(recipe), "train")["grounding"].dataset
    assert sorted(train["image_id"]) == sorted(kept)
    assert len(load_task_data(recipe_from_dict(recipe), "val")["grounding"].dataset) == 3
    recipe["tasks"][0]["files"] = {"annotations": "x.json"}
    with pytest.raises(ValueError, match=r"tasks\[grounding\]\.files: unknown keys \['annotations'\]"):
        load_task_data(recipe_from_dict(recipe), "train")


def test_periodic_evaluation_and_task_files_in_a_run(tmp_path: Path) -> None:
    """`train.eval_every` scores every task on the val split during training (in the history and the summary), as
    `scripts/evaluate_model.py` scores the saved model; a task's `files` (a 4-image grounding file) feed the run."""
    from scripts.evaluate_model import main as evaluate_main
    from tasks.synthetic import generate_synthetic_multitask

    data = tmp_path / "data"
    generate_synthetic_multitask(data, seed=0, num_train=16, num_val=4, image_size=64)
    write_grounding_subset(data, 4, tmp_path / "pseudo.json")
    config = _recipe(tmp_path, "run", max_steps=6, eval_every=3)
    recipe = yaml.safe_load(config.read_text())
    recipe["tasks"][1]["files"] = {"annotation_file": str(tmp_path / "pseudo.json")}
    recipe["data"]["eval_max_samples"] = 2
    config.write_text(yaml.safe_dump(recipe))
    _run([sys.executable, TRAIN, "--config", str(config), "--no_progress"])
    history = _history(tmp_path / "run")
    evaluated = [r["step"] for r in history if "eval/detection/AP50" in r and "eval/grounding/recall@1" in r]
    assert evaluated == [3, 6]
    assert "| eval/grounding/recall@1 |" in (tmp_path / "run" / "train_summary.md").read_text()
    output = tmp_path / "detection.json"
    files = ["--data-dir", str(data), "--split", "val", "--max-samples", "2", "--output", str(output), "--cpu"]
    assert evaluate_main(["--model", str(tmp_path / "run" / "final"), "--task", "detection", *files]) == 0
    saved = json.loads(output.read_text())["metrics"]
    for name, value in saved.items():
        assert history[-1][f"eval/detection/{name}"] == pytest.approx(value, abs=1e-6), name


def test_an_fsdp_launch_that_accelerate_cannot_honour_fails_loudly(tmp_path: Path) -> None:
    """On CPU Accelerate ignores an FSDP config and falls back without a word (plain DDP for the trainer's
    `Accelerator(cpu=True)`). FSDP2 the trainer runs on CPU itself (tests/tasks/test_fsdp.py); FSDP version 1 is
    refused: by Accelerate's plugin (its default `sync_module_states`), else by the trainer, naming the fallback and
    what to use instead."""
    recipe = _recipe(tmp_path, "fsdp", max_steps=2)
    config = yaml.safe_load((REPO / "configs" / "accelerate" / "fsdp.yaml").read_text())
    config["fsdp_config"]["fsdp_version"] = 1
    fsdp1 = tmp_path / "fsdp1.yaml"
    fsdp1.write_text(yaml.safe_dump(config))
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    command = [
        accelerate,
        "launch",
        "--config_file",
        str(fsdp1),
        "--num_processes",
        "2",
        TRAIN,
        "--config",
        str(recipe),
    ]
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "FSDP parameter initialization with `sync_module_states=True` is not supported on cpu" in result.stderr
    assert not (tmp_path / "fsdp" / "final").exists()
    config["fsdp_config"].update(fsdp_sync_module_states=False, fsdp_cpu_ram_efficient_loading=False)
    fsdp1.write_text(yaml.safe_dump(config))
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "FSDP was requested (ACCELERATE_USE_FSDP=true" in result.stderr
    assert "Accelerate set up MULTI_CPU on cpu" in result.stderr
    assert "FSDP version 1 needs GPUs. On CPU set fsdp_version: 2" in result.stderr
    assert not (tmp_path / "fsdp" / "final").exists()


def test_check_launch_rules() -> None:
    from accelerate.utils import DistributedType

    from tasks.trainer import check_launch

    check_launch(DistributedType.MULTI_CPU, 2, "cpu", {"WORLD_SIZE": "2"})  # torchrun / multi_cpu.yaml: fine
    check_launch(DistributedType.FSDP, 8, "cuda:0", {"WORLD_SIZE": "8", "ACCELERATE_USE_FSDP": "true"})
    with pytest.raises(RuntimeError, match="DEEPSPEED was requested"):
        check_launch(DistributedType.MULTI_GPU, 2, "cuda:0", {"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true"})
    with pytest.raises(RuntimeError, match="2 processes were launched .* each would train alone"):
        check_launch(DistributedType.NO, 1, "cpu", {"WORLD_SIZE": "2"})
