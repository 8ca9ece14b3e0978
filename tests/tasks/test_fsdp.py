"""FSDP through `accelerate launch --config_file configs/accelerate/fsdp.yaml`, on CPU over gloo: Accelerate's FSDP2
plugin is in effect (the model's parameters are sharded DTensors and checkpoints are sharded), 2 processes train
the weights of 1 process with the same global batch, a sharded checkpoint resumes bit for bit, and the final model
is consolidated into a folder `from_pretrained` loads."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.tasks.test_trainer import REPO, TRAIN, _env, _recipe, _run, assert_same_run, assert_same_training

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
FSDP = str(REPO / "configs" / "accelerate" / "fsdp.yaml")
STEPS = 8


def _fsdp(config: Path, *extra: str) -> subprocess.CompletedProcess:
    sizes = ["--num_processes", "2", "--mixed_precision", "no"]  # bf16 autocast on CPU is slow; fp32 compares exactly
    return _run([ACCELERATE, "launch", "--config_file", FSDP, *sizes, TRAIN, "--config", str(config), *extra])


def test_fsdp2_on_cpu_equals_one_process_and_resumes_exactly(tmp_path: Path) -> None:
    one = _recipe(tmp_path, "one", max_steps=STEPS, per_device_batch_size=4)
    two = _recipe(tmp_path, "two", max_steps=STEPS, per_device_batch_size=2, save_every=4, keep_last=2)
    _run([sys.executable, TRAIN, "--config", str(one), "--no_progress"])
    result = _fsdp(two, "--no_progress")
    assert "FSDP2 on CPU: Accelerate's FSDP plugin from the launch config, over gloo, 2 processes." in result.stderr
    # sharded checkpoints (torch.distributed.checkpoint, one file per process), not a full state dict
    checkpoint = tmp_path / "two" / "checkpoint-4"
    assert sorted(p.name for p in (checkpoint / "pytorch_model_fsdp_0").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    assert (checkpoint / "optimizer_0").is_dir() and not (checkpoint / "model.safetensors").exists()

    assert_same_training(tmp_path / "one", tmp_path / "two")
    # the consolidated model: a plain folder, the weights of 1 process to the DDP test's tolerances
    from glipv2 import Glipv2ForGrounding

    model = Glipv2ForGrounding.from_pretrained(tmp_path / "two" / "final")
    assert type(model) is Glipv2ForGrounding and model.config.architectures == ["Glipv2ForGrounding"]
    assert not list((tmp_path / "two" / "final").glob("_fsdp*.py"))  # torch's module files are not the model's code
    weights_two = load_file(tmp_path / "two" / "final" / "model.safetensors")
    assert all(torch.equal(weights_two[k], v) for k, v in model.state_dict().items() if k in weights_two)

    # resume from the sharded checkpoint at step 4 in a fresh folder: steps 5-8 as the uninterrupted run, bit for bit
    resumed = _recipe(tmp_path, "resumed", max_steps=STEPS, per_device_batch_size=2, save_every=4)
    (tmp_path / "resumed").mkdir()
    shutil.copytree(checkpoint, tmp_path / "resumed" / "checkpoint-4")
    _fsdp(resumed, "--no_progress", "--resume_from_checkpoint", "latest")
    assert_same_run(tmp_path / "two", tmp_path / "resumed", STEPS)


def test_fsdp_refuses_what_it_cannot_save_yet(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, "ema", max_steps=2, per_device_batch_size=2, ema_decay=0.9)
    sizes = ["--num_processes", "2", "--mixed_precision", "no"]
    result = subprocess.run(
        [ACCELERATE, "launch", "--config_file", FSDP, *sizes, TRAIN, "--config", str(recipe)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode != 0
    assert (
        "FSDP does not support train.ema_decay" in result.stderr
        and "configs/accelerate/multi_gpu.yaml" in result.stderr
    )
