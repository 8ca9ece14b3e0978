"""Benchmarks under their official evaluation protocols, on their files as distributed.

A [`Benchmark`] names a public benchmark (`coco`, `lvis-minival`, `flickr30k`, `refcoco`, `odinw13`, `vqav2`, ...),
the task whose model class evaluates it, its official splits and file names under a dataset root, and a `run`
that loads, predicts, scores as the benchmark's official code does and, for splits scored by an evaluation server,
writes the submission file. Each task's spec lists its benchmarks (`TaskSpec.benchmarks`); `BENCHMARKS` gathers
them, and `scripts/evaluate_model.py --benchmark NAME --root DIR` runs one. `docs/evaluation.md` describes every
protocol and the paper numbers a converted official checkpoint should reproduce.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.spec import PredictOptions


@dataclass
class BenchmarkResult:
    """What a benchmark run produced (on the main process).

    Attributes:
        metrics: the benchmark's numbers (nested per sub-dataset where it has several, e.g. ODinW); empty for a
            split that only a server scores.
        num_samples: the evaluated records (images, questions, expressions).
        files: what was written besides the metrics file (name -> path), e.g. the submission file.
    """

    metrics: dict[str, Any]
    num_samples: int
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class BenchmarkRun:
    """One evaluation of a model on one split of a benchmark; the benchmark's `run` receives it.

    Attributes:
        benchmark: the benchmark.
        model_dir: the checkpoint folder or Hub id (model + processor).
        root: the dataset root the official file names are relative to.
        split: the official split name.
        output_dir: where metrics and submission files go.
        accelerator: an `accelerate.Accelerator` (evaluation is sharded over its processes).
        batch_size: images per process and step.
        max_samples: evaluate only the first N records (None: all; a partial run is not an official number).
        options: inference settings (the benchmark may override the defaults, e.g. LVIS's 300 detections).
    """

    benchmark: Benchmark
    model_dir: str
    root: str
    split: str
    output_dir: str
    accelerator: Any
    batch_size: int = 8
    max_samples: int | None = None
    options: PredictOptions = field(default_factory=PredictOptions)
    _loaded: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_main_process(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def for_server(self) -> bool:
        """True for a split whose ground truth is not public: only the submission file is written."""
        return self.split in self.benchmark.server_splits

    def file(self, key: str) -> str:
        """The official path of `key` (e.g. `annotation_file`) for this split; raises naming the benchmark, split
        and expected path when it does not exist."""
        return official_path(self.benchmark, self.root, self.split, key)

    def model(self, model_class: type | None = None) -> Any:
        """The checkpoint as the task's model class (or `model_class`), in eval mode on the accelerator's device."""
        from tasks.registry import get_task

        cls = model_class or get_task(self.benchmark.task).model_class()
        if cls.__name__ not in self._loaded:
            self._loaded[cls.__name__] = cls.from_pretrained(self.model_dir).to(self.accelerator.device).eval()
        return self._loaded[cls.__name__]

    def processor(self) -> Any:
        """The checkpoint's `Glipv2Processor`."""
        if "processor" not in self._loaded:
            from glipv2 import Glipv2Processor

            self._loaded["processor"] = Glipv2Processor.from_pretrained(self.model_dir)
        return self._loaded["processor"]

    def metric(self, name: str | None = None) -> Any:
        """The `evaluate` module `name` (a folder under `tasks/metrics` or a path; default: the task's metric)."""
        import evaluate

        from tasks.registry import get_task
        from tasks.spec import METRICS_DIR

        if name is None:
            return get_task(self.benchmark.task).load_metric()
        return evaluate.load(name if os.path.isabs(name) else os.path.join(METRICS_DIR, name))

    def write_json(self, name: str, data: Any) -> str:
        """Writes `data` as `<output_dir>/<name>` (main process only); returns the path."""
        path = os.path.join(self.output_dir, name)
        if self.is_main_process:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
        return path


@dataclass(frozen=True)
class Benchmark:
    """A public benchmark under its official protocol.

    Attributes:
        name: the name `--benchmark` takes (`coco`, `lvis-minival`, `refcoco+`, ...).
        task: the task (`tasks.registry`) whose model class evaluates it.
        splits: the official split names; the first is the default.
        files: per split, the official file names relative to the dataset root (`annotation_file`, `image_dir`,
            `questions_file`, ...), exactly as the dataset distributes them.
        run: `(BenchmarkRun) -> BenchmarkResult`, called on every process; returns None off the main process.
        protocol: one paragraph: what is measured and how, following which official code.
        server_splits: splits without public ground truth, scored by an evaluation server from the submission file.
    """

    name: str
    task: str
    splits: tuple[str, ...]
    files: dict[str, dict[str, str]]
    run: Callable[[BenchmarkRun], BenchmarkResult | None]
    protocol: str
    server_splits: tuple[str, ...] = ()


def official_path(benchmark: Benchmark, root: str, split: str, key: str) -> str:
    """`root` joined with the official name of `key` in `split`; a missing file or folder raises naming what the
    benchmark expects there."""
    if split not in benchmark.files:
        raise ValueError(f"benchmark {benchmark.name!r} has no split {split!r}; its splits: {list(benchmark.splits)}")
    names = benchmark.files[split]
    if key not in names:
        raise KeyError(f"benchmark {benchmark.name!r} split {split!r} has no {key!r} file; it has {sorted(names)}")
    path = os.path.join(root, names[key])
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"benchmark {benchmark.name!r}, split {split!r}: expected the official {key.replace('_', ' ')} "
            f"{names[key]!r} under the dataset root {root!r} ({path} does not exist)."
        )
    return path


def all_benchmarks() -> dict[str, Benchmark]:
    """Every registered task's benchmarks by name."""
    from tasks.registry import TASKS

    found: dict[str, Benchmark] = {}
    for spec in TASKS.values():
        for benchmark in spec.benchmarks:
            if benchmark.name in found:
                raise ValueError(f"two tasks define benchmark {benchmark.name!r}")
            found[benchmark.name] = benchmark
    return found


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name`; a clear error lists the known ones."""
    benchmarks = all_benchmarks()
    if name not in benchmarks:
        raise KeyError(f"unknown benchmark {name!r}; known benchmarks: {sorted(benchmarks)}")
    return benchmarks[name]


def run_benchmark(run: BenchmarkRun) -> BenchmarkResult | None:
    """Runs `run.benchmark` and writes `<output_dir>/<name>_<split>_metrics.json` (benchmark, split, model,
    protocol, number of samples, metrics, files written) on the main process; returns its result there."""
    if run.split not in run.benchmark.splits:
        raise ValueError(
            f"benchmark {run.benchmark.name!r} has no split {run.split!r}; its splits: {list(run.benchmark.splits)}"
        )
    result = run.benchmark.run(run)
    if result is None:
        return None
    summary = {
        "benchmark": run.benchmark.name,
        "split": run.split,
        "model": run.model_dir,
        "protocol": run.benchmark.protocol,
        "num_samples": result.num_samples,
        "partial": run.max_samples is not None,
        "metrics": result.metrics,
        "files": result.files,
    }
    name = f"{run.benchmark.name}_{run.split}_metrics.json"
    result.files["metrics"] = run.write_json(name, summary)
    return result


__all__ = [
    "Benchmark",
    "BenchmarkResult",
    "BenchmarkRun",
    "all_benchmarks",
    "get_benchmark",
    "official_path",
    "run_benchmark",
]
