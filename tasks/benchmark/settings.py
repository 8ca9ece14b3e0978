"""What a benchmark run measures and how often (built by keyword: `Settings.for_run`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

COCO_CLASSES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign parking_meter "
    "bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee "
    "skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle "
    "wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake "
    "chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave oven "
    "toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush"
)
COCO_LABELS = [name.replace("_", " ") for name in COCO_CLASSES.split()]
LVIS_SIZE = 1203
GROUNDING_DINO_NAME = "grounding-dino-tiny"
GLIP_NAME = "glip-tiny"
DEFAULT_TRAINED_MODEL = "demo_output/model"  # written by the README's demo command


@dataclass
class Settings:
    """What one run measures and how often."""

    device: torch.device
    smoke: bool
    compile: bool
    sizes: tuple[tuple[int, int], ...]
    repeats: dict[tuple[int, int], int]
    warmup: int
    batch_sizes: tuple[int, int]
    throughput_repeats: int
    train_batch: int
    train_size: int
    train_repeats: int
    matmul_size: int
    trained_model: str | None
    max_measurement_s: float = math.inf
    full_training: bool = False
    full_train_batch: int = 4
    full_train_size: tuple[int, int] = (800, 1333)
    tokenizer: str | None = None

    @classmethod
    def for_run(
        cls,
        device: str | torch.device,
        smoke: bool = False,
        compile: bool = False,  # noqa: A002
        repeats: int | None = None,
        trained_model: str | None = None,
        max_measurement_s: float = 150.0,
        full_training: bool | None = None,
        full_train_batch: int = 4,
        tokenizer: str | None = None,
    ) -> Settings:
        """The settings of a full run on `device` (or a `smoke` run: tiny configs, tiny images, one repetition).

        `repeats`: timed runs at 640x640 (default 3 on CPU, where 800x1333 runs once; 30 on CUDA).
        `full_training`: the full-size training step (default: on CUDA only).
        """
        device = torch.device(device)
        cuda = device.type == "cuda"
        full_training = full_training if full_training is not None else cuda
        if smoke:
            sizes = ((128, 128), (128, 160))
            return cls(
                device=device,
                smoke=True,
                compile=compile,
                sizes=sizes,
                repeats=dict.fromkeys(sizes, 1),
                warmup=0,
                batch_sizes=(1, 8),
                throughput_repeats=1,
                train_batch=2,
                train_size=64,
                train_repeats=1,
                matmul_size=256,
                trained_model=None,
                full_training=full_training,
                full_train_batch=2,
                full_train_size=(128, 160),
                tokenizer=tokenizer,
            )
        sizes = ((640, 640), (800, 1333))
        # CPU: the median of 3 shrugs off one slow run (shared machine); 800x1333 runs once to fit the time budget.
        # CUDA: milliseconds per run, so many more.
        return cls(
            device=device,
            smoke=False,
            compile=compile,
            sizes=sizes,
            repeats={sizes[0]: repeats or (30 if cuda else 3), sizes[1]: 10 if cuda else 1},
            warmup=5 if cuda else 1,
            batch_sizes=(1, 8),
            throughput_repeats=10 if cuda else 1,
            train_batch=16,
            train_size=128,
            train_repeats=20 if cuda else 3,
            matmul_size=8192 if cuda else 4096,
            trained_model=trained_model if trained_model and Path(trained_model).exists() else None,
            max_measurement_s=max_measurement_s,
            full_training=full_training,
            full_train_batch=full_train_batch,
            tokenizer=tokenizer,
        )


__all__ = ["COCO_LABELS", "DEFAULT_TRAINED_MODEL", "GLIP_NAME", "GROUNDING_DINO_NAME", "LVIS_SIZE", "Settings"]
