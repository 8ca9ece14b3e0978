"""Interrupted and faulty training: SIGKILL during a checkpoint write and at random moments, NaN/inf steps, a full
disk while saving. The newest complete checkpoint always loads and resuming from it is exact."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tasks.trainer import (
    STATE_FILE,
    CheckpointError,
    MultitaskTrainer,
    NonFiniteLossError,
    TaskConfig,
    TaskSource,
    TrainConfig,
    checkpoints_in,
)
from tests.tasks.test_trainer import REPO, TRAIN, _env, _kill_when, _recipe, _run, _start, assert_same_run

DRIVER = str(REPO / "tests" / "fault_driver.py")


# ------------------------------------------------------------------------------------------- a toy trainer
class _Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)


class _InfiniteGradient(torch.autograd.Function):
    """Finite in the forward pass (0), infinite gradient in the backward pass."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return x.sum() * 0.0

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return torch.full((1, 2), float("inf"))


class _ScriptedLoss:
    """A task loss whose value on chosen calls (1-based) is NaN, inf, or finite with an infinite gradient; records the
    weight the model had at every call."""

    def __init__(self, faults: dict[int, str]) -> None:
        self.faults, self.calls, self.weights = faults, 0, []

    def __call__(self, model: torch.nn.Module, task: str, batch: dict) -> tuple[torch.Tensor, dict]:  # noqa: ARG002
        self.calls += 1
        module = getattr(model, "module", model)
        self.weights.append(module.linear.weight.detach().clone())
        loss = (module.linear(batch["x"]) - 1.0).pow(2).mean()
        fault = self.faults.get(self.calls)
        if fault == "nan":
            loss = loss * float("nan")
        elif fault == "inf":
            loss = loss + float("inf")
        elif fault == "inf-grad":
            loss = loss + _InfiniteGradient.apply(module.linear.weight)
        return loss, {}


def _toy_trainer(
    tmp_path: Path, loss: Callable, model: torch.nn.Module | None = None, **config: object
) -> MultitaskTrainer:
    """A trainer of `model` (default a 2 -> 1 linear layer) on 16 two-feature records, one source per task of
    `config["tasks"]` (default one task, "toy")."""
    dataset = [{"x": [float(i % 5) / 5.0, 1.0]} for i in range(16)]
    source = TaskSource(dataset=dataset, collator=lambda records: {"x": torch.tensor([r["x"] for r in records])})
    settings = {
        "output_dir": str(tmp_path / "toy"),
        "tasks": [TaskConfig("toy")],
        "max_steps": 5,
        "per_device_batch_size": 4,
        "learning_rate": 0.1,
        "warmup_steps": 0,
        "schedule": "constant",
        "report_to": None,
        **config,
    }
    torch.manual_seed(0)
    sources = {task.name: source for task in settings["tasks"]}
    return MultitaskTrainer(model or _Toy(), sources, TrainConfig(**settings), task_loss=loss)


@pytest.mark.parametrize("fault", ["nan", "inf", "inf-grad"])
def test_nonfinite_steps_are_skipped_and_counted(tmp_path: Path, fault: str) -> None:
    loss = _ScriptedLoss({2: fault, 4: fault})
    trainer = _toy_trainer(tmp_path, loss)
    history = trainer.train(progress=False)
    assert [record["step"] for record in history] == [1, 2, 3, 4, 5]
    assert loss.calls == 7 and trainer.nonfinite_total == 2 and trainer.nonfinite_in_row == 0
    # a skipped step leaves the weights as they were (no update, gradients cleared)
    assert torch.equal(loss.weights[2], loss.weights[1]) and torch.equal(loss.weights[4], loss.weights[3])
    assert not torch.equal(loss.weights[1], loss.weights[0])
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.scheduler.last_epoch == 5  # the schedule advanced once per real step only


def test_consecutive_nonfinite_steps_stop_the_run(tmp_path: Path) -> None:
    loss = _ScriptedLoss({call: "nan" for call in range(3, 100)})
    trainer = _toy_trainer(tmp_path, loss, max_consecutive_nonfinite=4)
    with pytest.raises(NonFiniteLossError, match=r"4 consecutive steps had a NaN/inf loss \(last at step 2\)"):
        trainer.train(progress=False)
    assert trainer.step == 2 and trainer.nonfinite_total == 4


def test_failed_save_raises_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    trainer = _toy_trainer(tmp_path, _ScriptedLoss({}), max_steps=2, save_every=2)
    trainer.train(progress=False)
    output = tmp_path / "toy"
    weights_at_2 = trainer.model.linear.weight.detach().clone()
    saved = sorted(os.listdir(output / "checkpoint-2"))

    def disk_full(directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        (Path(directory) / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    trainer.accelerator.save_state = disk_full
    trainer.config.max_steps = 4
    with pytest.raises(CheckpointError) as error:
        trainer.train(progress=False)
    message = str(error.value)
    assert "checkpoint-4" in message and "No space left on device" in message
    assert f"{output / 'checkpoint-2'}, is intact" in message
    assert sorted(os.listdir(output)) == ["checkpoint-2"]  # no partial folder left behind
    assert sorted(os.listdir(output / "checkpoint-2")) == saved

    resumed = _toy_trainer(tmp_path, _ScriptedLoss({}), max_steps=2)
    resumed.load_checkpoint("latest")
    assert resumed.step == 2
    assert torch.equal(resumed.model.linear.weight, weights_at_2)


# --------------------------------------------------------------------------------- SIGKILL on the real script
def test_sigkill_during_checkpoint_write_and_at_random_moments(tmp_path: Path) -> None:
    steps = 24
    reference = _recipe(tmp_path, "reference", max_steps=steps)
    _run([sys.executable, TRAIN, "--config", str(reference), "--no_progress"])
    faulty = _recipe(tmp_path, "faulty", max_steps=steps, save_every=4, keep_last=2)
    output = tmp_path / "faulty"

    # 1. killed while checkpoint-8 is being written: the partial folder is never taken for a checkpoint
    process = subprocess.run(
        [sys.executable, DRIVER, "--config", str(faulty), "--no_progress"],
        cwd=REPO,
        env={**_env(), "GLIPV2_KILL_DURING_SAVE_AT": "8"},
        capture_output=True,
        timeout=600,
    )
    assert process.returncode == -signal.SIGKILL
    assert (output / "checkpoint-8.tmp" / "model.safetensors").is_file()
    assert not (output / "checkpoint-8.tmp" / STATE_FILE).exists()
    assert [Path(p).name for p in checkpoints_in(str(output))] == ["checkpoint-4"]

    # 2. resume, and kill again at random moments (seeded) after a checkpoint exists; resume each time
    rng = random.Random(0)
    kills = 0
    for _ in range(2):
        started = {p.name for p in output.glob("checkpoint-*")}
        process = _start(
            [sys.executable, TRAIN, "--config", str(faulty), "--no_progress", "--resume_from_checkpoint", "latest"]
        )
        fresh = lambda before=started: bool({p.name for p in output.glob("checkpoint-*")} - before)  # noqa: E731
        kills += _kill_when(process, fresh, rng.uniform(0.0, 1.0))
        assert checkpoints_in(str(output)), "the newest complete checkpoint must always exist"
    assert kills >= 1
    _run([sys.executable, TRAIN, "--config", str(faulty), "--no_progress", "--resume_from_checkpoint", "latest"])

    assert not list(output.glob("*.tmp"))
    assert_same_run(tmp_path / "reference", output, steps)


def test_skip_invalid_training_records_are_counted_in_the_run_report(tmp_path: Path) -> None:
    import yaml

    from tasks.common import Glipv2DataError, read_json, write_json
    from tasks.synthetic import generate_synthetic_multitask

    data = tmp_path / "data"
    generate_synthetic_multitask(data, seed=0, num_train=16, num_val=4, image_size=64)
    path = data / "annotations" / "grounding_train.json"
    grounding = read_json(path)
    grounding["annotations"][0]["bbox"] = [float("nan"), 1.0, 5.0, 5.0]
    grounding["annotations"][1]["image_id"] = 999999
    write_json(path, grounding)
    config = _recipe(tmp_path, "run", max_steps=2)
    recipe = yaml.safe_load(config.read_text())
    with pytest.raises(
        Glipv2DataError, match=r"grounding_train\.json: annotation id=10 \(image id=1\): field 'bbox': non-finite"
    ):
        from tasks.multitask import load_task_data
        from tasks.recipe import recipe_from_dict

        load_task_data(recipe_from_dict(recipe), "train")
    recipe["data"]["skip_invalid"] = True
    config.write_text(yaml.safe_dump(recipe))
    _run([sys.executable, TRAIN, "--config", str(config), "--no_progress"])
    summary = (tmp_path / "run" / "train_summary.md").read_text()
    assert "Invalid grounding records skipped (data.skip_invalid): 2 (bbox: 1, image_id: 1)" in summary
    assert "Steps skipped for a NaN/inf loss or gradient: 0" in summary
    assert "Invalid detection records" not in summary
