"""Helpers shared by the tasks tests (imported by module name: pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
REPO_ROOT = Path(__file__).resolve().parents[2]
METRICS = REPO_ROOT / "tasks" / "metrics"


Mutation = Callable[[dict[str, Any]], None]
WriteVariant = Callable[[str, Mutation], str]


def set_key(path: tuple, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``data[path[0]][path[1]]... = value``."""

    def mutate(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def delete_key(path: tuple) -> Callable[[dict[str, Any]], None]:
    """A mutation deleting ``data[path[0]][path[1]]...``."""

    def mutate(data: dict[str, Any]) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate
