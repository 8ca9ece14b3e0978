"""The task registry: task name -> [`TaskSpec`]. Adding a task is a new package with its spec plus one line here
(or `register_task(spec)` from your own code); see "Adding a task" in `tasks/README.md`."""

from __future__ import annotations

from tasks.captioning.task import TASK as CAPTIONING
from tasks.detection.task import TASK as DETECTION
from tasks.grounding.task import TASK as GROUNDING
from tasks.instance_segmentation.task import TASK as INSTANCE_SEGMENTATION
from tasks.referring_segmentation.task import TASK as REFERRING_SEGMENTATION
from tasks.spec import TaskSpec
from tasks.vqa.task import TASK as VQA

TASKS: dict[str, TaskSpec] = {
    spec.name: spec for spec in (DETECTION, GROUNDING, VQA, CAPTIONING, INSTANCE_SEGMENTATION, REFERRING_SEGMENTATION)
}


def get_task(name: str) -> TaskSpec:
    """The spec of `name`; a clear error lists the known tasks."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]


def register_task(spec: TaskSpec, replace: bool = False) -> None:
    """Adds a task defined outside this repository's packages (every generic path then serves it)."""
    import glipv2
    from glipv2.heads import HEAD_NAMES

    if spec.name in TASKS and not replace:
        raise ValueError(f"task {spec.name!r} is already registered; pass replace=True to redefine it.")
    if spec.head not in HEAD_NAMES:
        raise ValueError(f"task {spec.name!r}: head {spec.head!r} is not one of {HEAD_NAMES}.")
    if not hasattr(glipv2, spec.model_class_name):
        raise ValueError(f"task {spec.name!r}: glipv2 has no model class {spec.model_class_name!r}.")
    TASKS[spec.name] = spec


def unregister_task(name: str) -> TaskSpec:
    """Removes a task added with [`register_task`]; returns its spec."""
    return TASKS.pop(name)


__all__ = ["TASKS", "get_task", "register_task", "unregister_task"]
