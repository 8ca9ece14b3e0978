"""The layout rules: `glipv2/` has no import cycle and imports nothing of `tasks/` or `scripts/`; scripts import no
other script and touch no `sys.path`; the generic training modules name no task; the table of task classes agrees
with the classes; every task spec fits the all-heads model."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import glipv2
from glipv2.auto_map import PIPELINES, TASK_CLASSES
from glipv2.heads import HEAD_NAMES
from tasks.registry import TASKS
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]
# The demo is excluded: its goals are stated per task (`tasks/demo.py` TARGETS), though it reads everything else
# about a task from the specs.
GENERIC_TASK_MODULES = ("multitask", "evaluation", "peft_utils", "publish", "recipe", "trainer", "spec", "protocol")


def _imports(path: Path, package: str) -> set[str]:
    """Every module `path` imports, anywhere in the file (deferred imports in functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: a sibling of the (flat) package
                found.add(f"{package}.{node.module}" if node.module else package)
            elif node.module:
                found.add(node.module)
    return found


def _library_graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in (REPO / "glipv2").glob("*.py") if path.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        imported = _imports(path, "glipv2")
        graph[name] = {module.split(".", 1)[1] for module in imported if module.startswith("glipv2.")}
        assert not any(module.split(".")[0] in ("tasks", "scripts") for module in imported), (name, imported)
    return graph


def test_glipv2_has_no_import_cycle() -> None:
    graph = _library_graph()
    visiting, done = set(), set()

    def visit(node: str, path: list[str]) -> None:
        if node in done:
            return
        assert node not in visiting, f"import cycle: {' -> '.join(path + [node])}"
        visiting.add(node)
        for neighbour in graph.get(node, ()):
            visit(neighbour, path + [node])
        visiting.discard(node)
        done.add(node)

    for module in graph:
        visit(module, [])
    assert graph["modeling_glipv2_captioning"] <= {"configuration_glipv2", "heads", "loss", "modeling_glipv2"}


def test_scripts_are_thin() -> None:
    for path in (REPO / "scripts").glob("*.py"):
        source = path.read_text()
        assert "sys.path" not in source, path.name
        assert not any(module.startswith("scripts") for module in _imports(path, "scripts")), path.name


def _string_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node) is not None
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }


@pytest.mark.parametrize("module", GENERIC_TASK_MODULES)
def test_generic_modules_name_no_task(module: str) -> None:
    """Knowledge of a task lives in its package: the generic paths read the spec, never branch on a name."""
    constants = _string_constants(REPO / "tasks" / f"{module}.py")
    assert not constants & set(TASKS), sorted(constants & set(TASKS))


def test_the_task_class_table_agrees_with_the_classes() -> None:
    for entry in TASK_CLASSES:
        cls = getattr(glipv2, entry.name)
        assert cls.__module__ == f"glipv2.{entry.module}"
        assert set(entry.heads) <= set(HEAD_NAMES)
        model = cls(tiny_config(id2label={0: "a", 1: "b"}, use_mask_head="mask_head" in entry.heads))
        assert model.head_names() == [head for head in HEAD_NAMES if head in entry.heads], entry.name
        assert cls._keys_to_ignore_on_load_unexpected == [
            rf"^{head}\." for head in HEAD_NAMES if head not in entry.heads
        ]
    for pipe in PIPELINES:
        assert getattr(glipv2, pipe.name).__module__ == f"glipv2.{pipe.module}"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_spec_fits_the_library(name: str) -> None:
    spec = TASKS[name]
    assert spec.head in HEAD_NAMES and Path(spec.metric_path).is_dir()
    task_class = spec.model_class()
    config = tiny_config(id2label={0: "a"}, use_mask_head=spec.head == "mask_head")
    assert spec.head in task_class(config).head_names()
    assert "labels" in inspect.signature(task_class.forward).parameters
    assert spec.label_argument in inspect.signature(glipv2.Glipv2ForPreTraining.forward).parameters
    assert set(spec.card.usage) <= {entry.name for entry in TASK_CLASSES}
