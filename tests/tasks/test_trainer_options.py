"""Trainer options a recipe sets: `train.frozen_parameters` (patterns of parameter names left out of training) and
tasks with sampling weight 0 (evaluated and published, never drawn)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.trainer import MultitaskTrainer, TaskConfig, TrainConfig, freeze_parameters
from tests.tasks.test_reliability_training import _toy_trainer


class _TwoLayers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torch.nn.Linear(2, 2)
        self.head = torch.nn.Linear(2, 1)


def _loss(model: torch.nn.Module, task: str, batch: dict) -> tuple[torch.Tensor, dict]:  # noqa: ARG001
    module = getattr(model, "module", model)
    return (module.head(module.encoder(batch["x"])) - 1.0).pow(2).mean(), {}


def _trainer(tmp_path: Path, tasks: list[TaskConfig], **config: object) -> MultitaskTrainer:
    return _toy_trainer(tmp_path, _loss, model=_TwoLayers(), tasks=tasks, max_steps=6, **config)


def test_frozen_parameters_stay_as_they_were_and_the_rest_trains(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, [TaskConfig("toy")], frozen_parameters=["encoder.*"])
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    trainer.train(progress=False)
    after = dict(model.named_parameters())
    for name in ("encoder.weight", "encoder.bias"):
        assert not after[name].requires_grad
        assert torch.equal(after[name], before[name]), name
    for name in ("head.weight", "head.bias"):
        assert not torch.equal(after[name], before[name]), name
    # frozen tensors are not in the optimizer at all (no AdamW state, no weight decay on them)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(after["head.weight"]), id(after["head.bias"])}


def test_a_pattern_that_matches_nothing_is_named() -> None:
    with pytest.raises(ValueError, match=r"train\.frozen_parameters: 'text_model\.\*' matches no parameter"):
        freeze_parameters(_TwoLayers(), ["encoder.weight", "text_model.*"])
    assert freeze_parameters(_TwoLayers(), ["encoder.[wb]*"]) == ["encoder.bias", "encoder.weight"]


def test_a_task_of_weight_zero_is_never_drawn(tmp_path: Path) -> None:
    tasks = [TaskConfig("trained", sampling_weight=1.0), TaskConfig("scored_only", sampling_weight=0.0)]
    history = _trainer(tmp_path, tasks).train(progress=False)
    assert len(history) == 6
    assert all("trained/loss" in record and "scored_only/loss" not in record for record in history)


@pytest.mark.parametrize("weights", [(0.0, 0.0), (1.0, -0.5)])
def test_sampling_weights_must_leave_something_to_draw(weights: tuple[float, float]) -> None:
    tasks = [TaskConfig("a", sampling_weight=weights[0]), TaskConfig("b", sampling_weight=weights[1])]
    with pytest.raises(ValueError, match="sampling weights .* must be >= 0 with at least one > 0"):
        TrainConfig(tasks=tasks)
