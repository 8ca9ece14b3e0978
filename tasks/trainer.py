"""Joint multitask training with Accelerate: task mixture, exact resume, atomic checkpoints, EMA, NaN guard.

One loop serves `scripts/train.py`, `scripts/finetune_peft.py` and the demo. Determinism is by construction:
- each task draws its samples from [`TaskStream`], a seeded permutation per epoch whose position (epoch, offset) is
  saved in the checkpoint; a global batch is cut into equal per-process shards, so N processes see the same global
  batch as one process;
- a task streamed from shards (`tasks.shards`) is read by each process from its own shards; its stream position
  and shuffle buffer are saved per process (`stream_state_<rank>.json`) and restored exactly;
- the task of each micro-step comes from a seeded `random.Random` whose state is checkpointed;
- collators' augmentation generators are re-seeded from (seed, task, epoch, offset) before every batch;
- model, optimizer and torch RNG states go through `accelerator.save_state`; the learning-rate scheduler is
  stepped by this loop once per optimizer step (not by Accelerate, which would step it once per process).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs, set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
SCHEDULES = ("cosine", "linear", "constant", "multistep")
STREAM_STATE = "stream_state_{rank}.json"  # a process's positions in its streamed tasks (tasks.shards)


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive steps with a NaN/inf loss."""


class PeerLostError(RuntimeError):
    """A collective failed or timed out in a multi-process run: another process (or its node) died or hangs."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions, ...); earlier checkpoints are left intact."""


def _fsync_tree(path: str) -> None:
    """Flushes every file under `path` and the folders themselves to disk (a rename is only atomic on disk after
    the data it names is durable)."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(root)


def _fsync_dir(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_partial_checkpoints(output_dir: str) -> list[str]:
    """Deletes `checkpoint-<step>.tmp` folders left by a run killed while saving; returns their paths."""
    if not os.path.isdir(output_dir):
        return []
    removed = []
    for name in os.listdir(output_dir):
        if name.startswith(CHECKPOINT_PREFIX) and name.endswith(".tmp"):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
            removed.append(os.path.join(output_dir, name))
    return sorted(removed)


@dataclass
class TaskConfig:
    """One task of the mixture: how often it is sampled and how much its loss weighs."""

    name: str
    sampling_weight: float = 1.0
    loss_weight: float = 1.0


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of a run (loss coefficients live here, never in the model config)."""

    output_dir: str = "outputs/run"
    tasks: list[TaskConfig] = field(default_factory=list)
    seed: int = 0
    max_steps: int = 1000
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    text_learning_rate: float = 1e-5  # GLIP trains the language backbone with a 10x lower rate
    weight_decay: float = 0.05
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine | linear | constant | multistep
    # multistep: the rate is multiplied by decay_factor at each of these fractions of max_steps (GLIP: 0.67, 0.89)
    decay_milestones: list[float] = field(default_factory=lambda: [0.67, 0.89])
    decay_factor: float = 0.1
    max_grad_norm: float | None = 1.0
    # AdamW's fused kernel (CPU and CUDA): one pass over all tensors. A demo training step on 2 CPU cores takes 0.64 s
    # instead of 0.72 s (the default loop spends 120 ms on 30 M parameters, the fused kernel 20 ms). Off by default,
    # as in torch (it rounds differently from the loop); the demo and the GLIP-T recipe turn it on.
    fused_optimizer: bool = False
    # parameters left out of training, as shell-style patterns on their names (`fnmatch`), e.g.
    # "model.text_model.embeddings.word_embeddings.*": GLIP's LANGUAGE_BACKBONE.FREEZE is "model.text_model.*"
    frozen_parameters: list[str] = field(default_factory=list)
    mixed_precision: str = "no"  # no | bf16 | fp16
    gradient_checkpointing: bool = False
    ema_decay: float | None = None
    save_every: int = 0
    keep_last: int = 2
    eval_every: int = 0
    log_every: int = 10
    max_consecutive_nonfinite: int = 5
    loss_weights: dict[str, float] = field(default_factory=dict)  # per named loss part, e.g. {"loss_box": 2.0}
    report_to: str | None = "tensorboard"
    verify_replicas: bool = False  # after every step, check that all processes hold identical parameters
    # seconds a collective waits for the other processes before failing: a node that hangs or vanishes without
    # closing its connections (power loss, network partition) stops the run after this long instead of never
    distributed_timeout: float = 1800.0

    def __post_init__(self) -> None:
        choices = {"mixed_precision": ("no", "bf16", "fp16"), "schedule": SCHEDULES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"train.{name}: {getattr(self, name)!r} is not one of {allowed}")
        weights = {task.name: task.sampling_weight for task in self.tasks}
        if any(weight < 0 for weight in weights.values()) or (weights and not any(weights.values())):
            raise ValueError(
                f"tasks: sampling weights {weights} must be >= 0 with at least one > 0 (0: the task is evaluated and "
                "published but never sampled)"
            )
        if any(not 0.0 < fraction < 1.0 for fraction in self.decay_milestones):
            raise ValueError(
                f"train.decay_milestones: {self.decay_milestones} must be fractions of max_steps in (0, 1)"
            )


class TaskStream:
    """Seeded, resumable stream of sample indices: epoch e is `randperm(n)` under seed (seed, task index, e)."""

    def __init__(self, size: int, seed: int, task_index: int) -> None:
        if size <= 0:
            raise ValueError(f"Task {task_index} has an empty dataset: nothing to train on.")
        self.size, self.seed, self.task_index = size, seed, task_index
        self.epoch, self.offset = 0, 0
        self._order: list[int] | None = None

    def _permutation(self) -> list[int]:
        if self._order is None:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.task_index * 10_007 + self.epoch)
            self._order = torch.randperm(self.size, generator=generator).tolist()
        return self._order

    def take(self, count: int) -> list[int]:
        """The next `count` indices, continuing into the next epoch when this one runs out."""
        out: list[int] = []
        while len(out) < count:
            order = self._permutation()
            chunk = order[self.offset : self.offset + count - len(out)]
            out.extend(chunk)
            self.offset += len(chunk)
            if self.offset >= self.size:
                self.epoch, self.offset, self._order = self.epoch + 1, 0, None
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.offset, self._order = state["epoch"], state["offset"], None


def lr_lambda(
    schedule: str,
    warmup_steps: int,
    max_steps: int,
    milestones: Sequence[float] = (0.67, 0.89),
    decay_factor: float = 0.1,
) -> Callable[[int], float]:
    """Linear warm-up, then cosine / linear decay to 0, constant, or multistep (the official GLIP schedule: times
    `decay_factor` at each milestone, a fraction of `max_steps`)."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "multistep":
            return decay_factor ** sum(step >= round(fraction * max_steps) for fraction in milestones)
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        if schedule == "constant":
            return 1.0
        raise ValueError(f"Unknown schedule {schedule!r}: use one of {SCHEDULES}.")

    return factor


def freeze_parameters(model: torch.nn.Module, patterns: Sequence[str]) -> list[str]:
    """Sets `requires_grad=False` on the parameters whose names match one of `patterns` (`fnmatch`); returns their
    names. A pattern that matches no parameter is an error naming it (a typo would otherwise train everything)."""
    parameters = dict(model.named_parameters())
    frozen: set[str] = set()
    for pattern in patterns:
        matched = fnmatch.filter(parameters, pattern)
        if not matched:
            raise ValueError(
                f"train.frozen_parameters: {pattern!r} matches no parameter of {type(model).__name__} "
                f"(names look like {next(iter(parameters))!r})"
            )
        frozen.update(matched)
    for name in frozen:
        parameters[name].requires_grad_(False)
    if frozen:
        logger.info("frozen: %d parameter tensors (%s)", len(frozen), ", ".join(patterns))
    return sorted(frozen)


def parameter_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: language backbone at `text_learning_rate`, no weight decay on biases, norms and scales."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_text = ".text_model." in f".{name}"
        no_decay = parameter.ndim <= 1 or name.endswith(".bias")
        groups.setdefault((is_text, no_decay), []).append(parameter)
    return [
        {
            "params": params,
            "lr": config.text_learning_rate if is_text else config.learning_rate,
            "weight_decay": 0.0 if no_decay else config.weight_decay,
        }
        for (is_text, no_decay), params in sorted(groups.items())
    ]


def default_task_loss(model: torch.nn.Module, task: str, batch: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """Forward a task batch; models return `loss` and optionally a `loss_dict` of named parts."""
    outputs = model(**batch)
    return outputs.loss, dict(getattr(outputs, "loss_dict", None) or {})


def _shard(indices: list[int], rank: int, world: int) -> list[int]:
    per_rank = len(indices) // world
    return indices[rank * per_rank : (rank + 1) * per_rank]


def _shared(stream: Any) -> bool:
    """Whether a task's position is the same in every process (map-style data) rather than each process's own."""
    return isinstance(stream, TaskStream)


def checkpoints_in(output_dir: str) -> list[str]:
    """Complete checkpoints (those with a state file), oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit():
            if os.path.isfile(os.path.join(path, STATE_FILE)):
                found.append(path)
    return sorted(found, key=lambda p: int(os.path.basename(p)[len(CHECKPOINT_PREFIX) :]))


@dataclass
class TaskSource:
    """A task's data for training: a map-style dataset (or a `tasks.shards.ShardSource`, streamed by each process)
    and a collator called on a list of its records."""

    dataset: Sequence[Any]
    collator: Callable[[list[Any]], dict[str, Any]]


def _complete_adamw_state(optimizer: torch.optim.Optimizer) -> None:
    """Gives every parameter AdamW's initial state (step 0, zero moments) where it has none yet: what AdamW itself
    creates at a parameter's first gradient, so training is unchanged. A sharded optimizer checkpoint
    (torch.distributed.checkpoint) is loaded into an optimizer whose every parameter has state, and fails on a key the
    checkpoint lacks: a parameter no task has updated yet (an unused head, Swin's unused final norm)."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.requires_grad and parameter not in optimizer.state:
                state = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(parameter)}
                state["exp_avg_sq"] = torch.zeros_like(parameter)
                if group.get("amsgrad"):
                    state["max_exp_avg_sq"] = torch.zeros_like(parameter)
                optimizer.state[parameter] = state


def _fsdp2_on_cpu(accelerator: Accelerator, environ: Any = None) -> bool:
    """Gives CPU processes the FSDP2 an FSDP launch asked for. Accelerate sets up its FSDP plugin only on GPUs (and
    falls back to DDP without a word on CPU), while torch's FSDP2 (`fully_shard`) runs on CPU over gloo; so when an
    FSDP2 config launched several CPU processes, the plugin it describes (`FSDP_*` variables) is installed and
    Accelerate's own FSDP2 code prepares, checkpoints and gathers the model. Returns whether it did."""
    from accelerate.state import PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    environ = os.environ if environ is None else environ
    state = accelerator.state
    if (
        environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true"
        or state.distributed_type != DistributedType.MULTI_CPU
        or environ.get("FSDP_VERSION", "1") != "2"
    ):
        return False
    state.fsdp_plugin = FullyShardedDataParallelPlugin()
    state.distributed_type = DistributedType.FSDP
    # as Accelerate records its own choice: an AcceleratorState made later copies the partial state's
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    if accelerator.is_main_process:
        logger.warning(
            "FSDP2 on CPU: Accelerate's FSDP plugin from the launch config, over gloo, %d processes.",
            accelerator.num_processes,
        )
    return True


def check_launch(distributed_type: DistributedType, num_processes: int, device: Any, environ: Any = None) -> None:
    """Refuses a launch that would not train the way it was asked to: Accelerate falls back without a word when its
    FSDP or DeepSpeed plugin cannot run (on CPU, `accelerate launch --config_file configs/accelerate/fsdp.yaml`
    gives the trainer plain DDP, and a bare `Accelerator()` `DistributedType.NO` in every process: N copies training
    alone on the same output folder)."""
    environ = os.environ if environ is None else environ
    for plugin, expected in (("FSDP", DistributedType.FSDP), ("DEEPSPEED", DistributedType.DEEPSPEED)):
        if environ.get(f"ACCELERATE_USE_{plugin}", "false").lower() == "true" and distributed_type != expected:
            raise RuntimeError(
                f"{plugin} was requested (ACCELERATE_USE_{plugin}=true, e.g. from an accelerate config) but "
                f"Accelerate set up {distributed_type.value} on {device}: "
                + (
                    "FSDP version 1 needs GPUs. On CPU set fsdp_version: 2 (as configs/accelerate/fsdp.yaml does; "
                    "the trainer runs it over gloo), or use"
                    if plugin == "FSDP"
                    else "its DeepSpeed plugin needs GPUs. On CPU use"
                )
                + " configs/accelerate/multi_cpu.yaml (DDP over gloo) or torchrun."
            )
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and num_processes != world_size:
        raise RuntimeError(
            f"{world_size} processes were launched (WORLD_SIZE) but Accelerate set up {distributed_type.value} with "
            f"{num_processes} process(es) on {device}: each would train alone. Check the launch configuration."
        )


class MultitaskTrainer:
    """Runs the training loop; see the module docstring for how determinism and resume work."""

    def __init__(
        self,
        model: torch.nn.Module,
        sources: dict[str, TaskSource],
        config: TrainConfig,
        accelerator: Accelerator | None = None,
        task_loss: Callable[[torch.nn.Module, str, dict], tuple[torch.Tensor, dict]] = default_task_loss,
        evaluate: Callable[[torch.nn.Module, int], dict[str, float]] | None = None,
    ) -> None:
        if not config.tasks:
            raise ValueError("TrainConfig.tasks is empty: name at least one task to train on.")
        missing = [t.name for t in config.tasks if t.name not in sources]
        if missing:
            raise ValueError(f"No data for task(s) {missing}; available: {sorted(sources)}.")
        self.config, self.sources, self.task_loss, self.evaluate = config, sources, task_loss, evaluate
        self.accelerator = accelerator or Accelerator(
            cpu=not torch.cuda.is_available(),  # torchrun on CPU: gloo ranks
            mixed_precision=config.mixed_precision,
            log_with=config.report_to,
            project_dir=config.output_dir,
            # each task uses only its own head (and HF's SwinBackbone keeps an unused final layernorm)
            kwargs_handlers=[
                DistributedDataParallelKwargs(find_unused_parameters=True),
                InitProcessGroupKwargs(timeout=timedelta(seconds=config.distributed_timeout)),
            ],
        )
        if accelerator is None:
            _fsdp2_on_cpu(self.accelerator)
        check_launch(self.accelerator.distributed_type, self.accelerator.num_processes, self.accelerator.device)
        if self.accelerator.distributed_type == DistributedType.FSDP:
            unsupported = {
                "train.ema_decay (the average would hold each process's shard only)": config.ema_decay,
                "a peft section (adapters are saved from the wrapped model)": hasattr(model, "peft_config"),
            }
            for what, used in unsupported.items():
                if used:
                    raise ValueError(
                        f"FSDP does not support {what} yet: remove it or use DDP (configs/accelerate/multi_gpu.yaml)."
                    )
        set_seed(config.seed)
        if config.gradient_checkpointing:
            model.activation_checkpointing_enable()
        freeze_parameters(model, config.frozen_parameters)
        optimizer = torch.optim.AdamW(parameter_groups(model, config), fused=config.fused_optimizer or None)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lr_lambda(
                config.schedule, config.warmup_steps, config.max_steps, config.decay_milestones, config.decay_factor
            ),
        )
        self.ema = None
        if config.ema_decay:
            self.ema = AveragedModel(
                self.accelerator.unwrap_model(self.model), multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay)
            )
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        self.streams: dict[str, Any] = {}
        for i, t in enumerate(config.tasks):
            dataset = sources[t.name].dataset
            if hasattr(dataset, "open_stream"):  # shards streamed by each process (tasks.shards.ShardSource)
                self.streams[t.name] = dataset.open_stream(config.seed, i, rank, world)
            else:
                self.streams[t.name] = TaskStream(len(dataset), config.seed, i)
        self.task_rng = random.Random(config.seed)
        self.step = 0
        self.nonfinite_total = 0
        self.nonfinite_in_row = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------------------------------------ batches
    def _next_batch(self, task: str) -> dict[str, Any]:
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        global_batch = self.config.per_device_batch_size * world
        stream = self.streams[task]
        source = self.sources[task]
        if not _shared(stream):  # this process's own stream: its records carry their augment seed
            return _to_device(source.collator(stream.take(self.config.per_device_batch_size)), self.accelerator.device)
        position = (stream.epoch, stream.offset)
        indices = _shard(stream.take(global_batch), rank, world)
        records = []
        for slot, index in enumerate(indices):
            record = dict(source.dataset[index])
            # Augmentation is seeded per sample from its place in the stream, so it is identical whatever the
            # number of processes and after a resume.
            record["augment_seed"] = (
                f"{self.config.seed}:{task}:{position[0]}:{position[1] + rank * len(indices) + slot}"
            )
            records.append(record)
        batch = source.collator(records)
        return _to_device(batch, self.accelerator.device)

    def _pick_task(self) -> str:
        tasks = self.config.tasks
        return self.task_rng.choices([t.name for t in tasks], weights=[t.sampling_weight for t in tasks])[0]

    # --------------------------------------------------------------------------------------------------- step
    def train_step(self) -> dict[str, float] | None:
        """One optimizer step over `gradient_accumulation_steps` micro-batches; None when it was skipped."""
        accumulation = self.config.gradient_accumulation_steps
        weights = {t.name: t.loss_weight for t in self.config.tasks}
        record: dict[str, float] = {}
        total = 0.0
        finite = True
        for micro in range(accumulation):
            task = self._pick_task()
            batch = self._next_batch(task)
            context = self.accelerator.no_sync(self.model) if micro < accumulation - 1 else _null_context()
            with context, self.accelerator.autocast():
                loss, parts = self.task_loss(self.model, task, batch)
                loss = loss * weights[task] / accumulation
            loss_value = float(self.accelerator.reduce(loss.detach(), reduction="mean"))
            if not math.isfinite(loss_value):
                finite = False
                break
            self.accelerator.backward(loss)
            total += loss_value
            record[f"{task}/loss"] = record.get(f"{task}/loss", 0.0) + loss_value * accumulation / weights[task]
            for name, value in parts.items():
                record[f"{task}/{name}"] = float(value.detach())
        if not finite:
            return self._skip_nonfinite()
        self.nonfinite_in_row = 0
        if self.config.max_grad_norm:
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
            if norm is not None:  # DeepSpeed clips inside its engine (its config's gradient_clipping), reporting none
                if not math.isfinite(float(norm)):  # finite loss, overflowing gradients: skip the update as well
                    return self._skip_nonfinite()
                record["grad_norm"] = float(norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.accelerator.unwrap_model(self.model))
        self.step += 1
        if self.config.verify_replicas:
            self._verify_replicas()
        record.update(loss=total, lr=self.scheduler.get_last_lr()[0], step=self.step)
        return record

    @contextlib.contextmanager
    def _peer_guard(self) -> Iterator[None]:
        """Turns a failed collective of a multi-process run (in a step, an evaluation or a checkpoint's barriers)
        into a :class:`PeerLostError` that says what happened and how to go on (gloo's own message is a socket
        error: "Connection reset by peer")."""
        try:
            yield
        except RuntimeError as error:
            # NCCL and the c10d store raise DistError; gloo raises a bare RuntimeError naming its transport
            collective = isinstance(error, torch.distributed.DistError) or "gloo" in str(error)
            if self.accelerator.num_processes == 1 or not collective:
                raise
            complete = checkpoints_in(self.config.output_dir)
            resume = f"The newest complete checkpoint is {complete[-1]}" if complete else "No checkpoint was written"
            raise PeerLostError(
                f"Process {self.accelerator.process_index} of {self.accelerator.num_processes} lost the others after "
                f"step {self.step}: a collective failed or timed out (train.distributed_timeout="
                f"{self.config.distributed_timeout:g}s), so another process or its node died, hangs or cannot be "
                f"reached. {resume}; relaunch every node with --resume_from_checkpoint latest. Cause: {error}"
            ) from error

    def _verify_replicas(self) -> None:
        """Raises if the processes' parameters differ (bitwise, through a float64 checksum per tensor)."""
        sums = torch.stack([p.detach().double().sum() for p in self.model.parameters()])
        gathered = self.accelerator.gather(sums[None])
        if not torch.equal(gathered, gathered[:1].expand_as(gathered)):
            raise RuntimeError(f"Processes hold different parameters after step {self.step}.")

    def _skip_nonfinite(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_total += 1
        self.nonfinite_in_row += 1
        logger.warning("Non-finite loss at step %d: step skipped (%d in a row).", self.step, self.nonfinite_in_row)
        if self.nonfinite_in_row >= self.config.max_consecutive_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_row} consecutive steps had a NaN/inf loss (last at step {self.step}); stopping. "
                "Lower the learning rate, check the data for NaN boxes, or use bf16 instead of fp16."
            )
        return None

    # ------------------------------------------------------------------------------------------ the model
    def consolidated_model(self) -> torch.nn.Module | None:
        """The trained model as one plain module on the main process (None on the others); every process must call
        it. Under FSDP and DeepSpeed the shards are gathered (`accelerator.get_state_dict`) into a new instance of the
        model's own class, which `save_pretrained` writes as any model; otherwise it is the unwrapped model itself."""
        model = self.accelerator.unwrap_model(self.model)
        if self.accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            return model if self.accelerator.is_main_process else None
        state = self.accelerator.get_state_dict(self.model)  # DeepSpeed ZeRO-3: zero3_save_16bit_model: true
        if not self.accelerator.is_main_process:
            return None
        from torch.distributed.fsdp import FSDPModule

        # fully_shard re-classes the module as FSDP<Class>(FSDPModule, Class): build a plain Class
        plain_class = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
        plain = plain_class(model.config)
        plain.load_state_dict(state)
        return plain.eval()

    # ------------------------------------------------------------------------------------------ checkpoints
    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "task_rng": _encode_random_state(self.task_rng.getstate()),
            "streams": {name: stream.state_dict() for name, stream in self.streams.items() if _shared(stream)},
            "scheduler": self.scheduler.state_dict(),
            "nonfinite_total": self.nonfinite_total,
            "nonfinite_in_row": self.nonfinite_in_row,
            "history": self.history,
            "config": asdict(self.config),
        }

    def save_checkpoint(self) -> str:
        """Writes `checkpoint-<step>` atomically: everything goes to `checkpoint-<step>.tmp`, is flushed to disk, then
        the folder is renamed; only then are checkpoints beyond the last K deleted. A failed write (e.g. a full disk)
        raises :class:`CheckpointError` and leaves every earlier checkpoint as it was."""
        final = os.path.join(self.config.output_dir, f"{CHECKPOINT_PREFIX}{self.step}")
        temporary = final + ".tmp"
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        try:
            if self.accelerator.distributed_type == DistributedType.FSDP:
                _complete_adamw_state(self.optimizer.optimizer)
            self.accelerator.save_state(temporary)
            own = {name: stream.state_dict() for name, stream in self.streams.items() if not _shared(stream)}
            if own:  # streamed data: every process's position is its own
                os.makedirs(temporary, exist_ok=True)
                with open(os.path.join(temporary, STREAM_STATE.format(rank=self.accelerator.process_index)), "w") as f:
                    json.dump(own, f)
            # every process has written its part (its RNG states, FSDP shards, stream positions) before the rename
            self.accelerator.wait_for_everyone()
            if self.accelerator.is_main_process:
                if self.ema is not None:
                    torch.save(self.ema.state_dict(), os.path.join(temporary, "ema.pt"))
                state = json.dumps(self.trainer_state())
                with open(os.path.join(temporary, STATE_FILE), "w") as handle:
                    handle.write(state)
                _fsync_tree(temporary)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(temporary, final)
                _fsync_dir(self.config.output_dir)
        except OSError as error:
            if self.accelerator.is_main_process:
                shutil.rmtree(temporary, ignore_errors=True)
            complete = checkpoints_in(self.config.output_dir)
            intact = (
                f"the newest complete checkpoint, {complete[-1]}, is intact" if complete else "no earlier checkpoint"
            )
            raise CheckpointError(f"Could not write checkpoint {final}: {error}; {intact}.") from error
        if self.accelerator.is_main_process:
            for old in checkpoints_in(self.config.output_dir)[: -self.config.keep_last or None]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final

    def load_checkpoint(self, path: str) -> None:
        """Restores model, optimizer, RNG states, scheduler, data positions and the task sampler."""
        if path == "latest":
            found = checkpoints_in(self.config.output_dir)
            if not found:
                raise FileNotFoundError(f"No complete checkpoint in {self.config.output_dir} to resume from.")
            path = found[-1]
        if not os.path.isfile(os.path.join(path, STATE_FILE)):
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE}).")
        self.accelerator.load_state(path)
        with open(os.path.join(path, STATE_FILE)) as handle:
            state = json.load(handle)
        self.step = state["step"]
        self.task_rng.setstate(_decode_random_state(state["task_rng"]))
        for name, stream_state in state["streams"].items():
            self.streams[name].load_state_dict(stream_state)
        if any(not _shared(stream) for stream in self.streams.values()):
            own_file = os.path.join(path, STREAM_STATE.format(rank=self.accelerator.process_index))
            if not os.path.isfile(own_file):
                raise FileNotFoundError(
                    f"{path} has no {os.path.basename(own_file)}: it was written by fewer processes or without "
                    "streamed data; resume streamed data with the same number of processes."
                )
            with open(own_file) as handle:
                for name, stream_state in json.load(handle).items():
                    self.streams[name].load_state_dict(stream_state)
        self.scheduler.load_state_dict(state["scheduler"])
        self.nonfinite_total, self.nonfinite_in_row = state["nonfinite_total"], state["nonfinite_in_row"]
        self.history = state["history"]
        if self.ema is not None and os.path.isfile(os.path.join(path, "ema.pt")):
            self.ema.load_state_dict(torch.load(os.path.join(path, "ema.pt"), weights_only=True))
        logger.info("Resumed from %s at step %d.", path, self.step)

    # ----------------------------------------------------------------------------------------------- loop
    def train(self, resume_from: str | None = None, progress: bool = True) -> list[dict[str, float]]:
        """Trains to `max_steps`; returns the logged history (one record per step)."""
        accelerator, config = self.accelerator, self.config
        if accelerator.is_main_process:
            for path in remove_partial_checkpoints(config.output_dir):
                logger.warning("Removed %s, a checkpoint whose writing was interrupted.", path)
        accelerator.wait_for_everyone()
        if resume_from:
            self.load_checkpoint(resume_from)
        if config.report_to:
            accelerator.init_trackers("glipv2", config={"max_steps": config.max_steps, "seed": config.seed})
        bar = _progress_bar(config.max_steps, self.step, accelerator.is_main_process and progress)
        with self._peer_guard():
            self._train_loop(bar)
        if bar is not None:
            bar.close()
        if config.report_to:
            accelerator.end_training()
        return self.history

    def _train_loop(self, bar: Any) -> None:
        """Steps (with logging, periodic evaluation and checkpoints) until `max_steps`."""
        config, accelerator = self.config, self.accelerator
        started, samples, first_step = time.time(), 0, self.step
        while self.step < config.max_steps:
            record = self.train_step()
            if record is None:
                continue
            samples += config.per_device_batch_size * accelerator.num_processes * config.gradient_accumulation_steps
            record["samples_per_second"] = samples / max(time.time() - started, 1e-9)
            self.history.append(record)
            if config.report_to and (self.step % config.log_every == 0 or self.step == config.max_steps):
                accelerator.log(record, step=self.step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", samples_s=f"{record['samples_per_second']:.1f}")
            elif accelerator.is_main_process and self.step % config.log_every == 0:
                remaining = (config.max_steps - self.step) * (time.time() - started) / max(self.step - first_step, 1)
                logger.info(
                    "step %d/%d loss %.4f samples/s %.1f ETA %.0fs",
                    self.step,
                    config.max_steps,
                    record["loss"],
                    record["samples_per_second"],
                    remaining,
                )
            if config.eval_every and self.evaluate and self.step % config.eval_every == 0:
                metrics = self.evaluate(accelerator.unwrap_model(self.model), self.step)
                record.update({f"eval/{k}": v for k, v in metrics.items()})  # in the history and the summary
                if config.report_to:
                    accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=self.step)
            if config.save_every and self.step % config.save_every == 0:
                self.save_checkpoint()


def summary_table(history: list[dict[str, float]], window: int = 20) -> str:
    """A markdown table of each logged quantity: first, mean of the last `window` steps."""
    if not history:
        return "(no steps)"
    keys = sorted({k for record in history for k in record if "/" in k or k in ("loss", "grad_norm")})
    lines = [f"| quantity | first | last (mean of {min(window, len(history))}) |", "|---|---|---|"]
    for key in keys:
        values = [record[key] for record in history if key in record]
        tail = values[-window:]
        lines.append(f"| {key} | {values[0]:.4f} | {sum(tail) / len(tail):.4f} |")
    return "\n".join(lines)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_to_device(v, device) for v in batch]
    return batch


class _null_context:  # noqa: N801 - used like contextlib.nullcontext but cheaper to type-check
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)


def _encode_random_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _decode_random_state(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
