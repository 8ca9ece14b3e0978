"""The evaluation loop of every task: a task's predictions, sharded over the processes of an `Accelerator`, gathered
without duplicates or drops, scored on the main process. `scripts/evaluate_model.py`, periodic evaluation during
training, fine-tuning and the demo all run it; the task's `predict` and `score` come from its spec."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import datasets
import torch
from accelerate import Accelerator

from tasks.spec import Prediction, PredictOptions, TaskData, TaskSpec


class _IndexedDataset(torch.utils.data.Dataset):
    """``(index, record)`` pairs, so gathered predictions can be checked for duplicates and drops."""

    def __init__(self, dataset: datasets.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, dict[str, Any]]:
        return index, self.dataset[index]


def _collate_records(batch: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    return batch


def gather_predictions(
    accelerator: Accelerator,
    predict: Callable[[list[dict[str, Any]]], list[Prediction]],
    dataset: datasets.Dataset,
    batch_size: int,
) -> list[Prediction] | None:
    """Run ``predict`` on this process's shard of ``dataset`` and gather every prediction on the main process.

    ``accelerator.gather_for_metrics`` drops the samples the sharded loader repeats to even out the last batch;
    the sample indices are then checked (each exactly once) and the predictions returned in dataset order.
    Returns None on the other processes.
    """
    loader = torch.utils.data.DataLoader(
        _IndexedDataset(dataset), batch_size=batch_size, shuffle=False, collate_fn=_collate_records
    )
    loader = accelerator.prepare_data_loader(loader, device_placement=False)
    gathered: list[tuple[int, Prediction]] = []
    for batch in loader:
        indices = [index for index, _ in batch]
        with torch.no_grad():
            predictions = predict([record for _, record in batch])
        gathered.extend(accelerator.gather_for_metrics(list(zip(indices, predictions)), use_gather_object=True))
    if not accelerator.is_main_process:
        return None
    indices = sorted(index for index, _ in gathered)
    if indices != list(range(len(dataset))):
        raise RuntimeError(
            f"gathered {len(indices)} predictions for {len(dataset)} samples ({len(set(indices))} distinct): "
            "samples were duplicated or dropped across processes"
        )
    return [prediction for _, prediction in sorted(gathered, key=lambda item: item[0])]


PredictFn = Callable[[Any, Any, list[dict[str, Any]], TaskData, PredictOptions], list[Prediction]]


def predict_dataset(
    predict: PredictFn,
    accelerator: Accelerator,
    model: Any,
    processor: Any,
    data: TaskData,
    batch_size: int = 8,
    options: PredictOptions | None = None,
) -> list[Prediction] | None:
    """``predict`` (a task's, or a benchmark's own) over every record of ``data``: the predictions in dataset
    order on the main process, None elsewhere.

    Call it on every process (predictions are gathered collectively). ``model`` (unwrapped, already on
    ``accelerator.device``) runs in eval mode and gets its previous train/eval mode back afterwards; the
    detection prompts' text features are cached for this run only.
    """
    from glipv2.pipelines_glipv2 import Glipv2TextCache

    options = dataclasses.replace(options or PredictOptions(), text_cache=Glipv2TextCache())
    was_training = model.training
    model.eval()
    try:
        return gather_predictions(
            accelerator, lambda records: predict(model, processor, records, data, options), data.dataset, batch_size
        )
    finally:
        model.train(was_training)


def run_evaluation(
    spec: TaskSpec,
    accelerator: Accelerator,
    model: Any,
    processor: Any,
    data: TaskData,
    batch_size: int = 8,
    options: PredictOptions | None = None,
) -> tuple[dict[str, float], list[Prediction]] | None:
    """Evaluate ``model`` on ``data`` with the task's ``predict`` and ``score``: ``(metrics, predictions)`` on
    the main process, None elsewhere (see [`predict_dataset`])."""
    metric = spec.load_metric() if accelerator.is_main_process else None
    predictions = predict_dataset(spec.predict, accelerator, model, processor, data, batch_size, options)
    if predictions is None:
        return None
    return spec.score(metric, predictions, data), predictions


__all__ = ["gather_predictions", "predict_dataset", "run_evaluation"]
