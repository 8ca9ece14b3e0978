"""The built-in demo (the README's main job), offline on CPU:

1. generate the synthetic multitask data (coloured shapes; some colour-shape pairs never appear in training),
2. jointly train the recipe's tasks (`configs/demo.yaml`: the `demo` preset, text encoder from all-MiniLM-L6-v2),
3. evaluate every task on the held-out `val` split and detection on `val_unseen` (pairs never seen in training),
4. save a Hub-ready folder (weights, processor, code, model card with the metrics),
5. pseudo-label the held-out captions with the trained model as teacher (GLIP self-training) and measure the share
   of true boxes the pseudo-labels recover,
6. run every task's pipelines on held-out images and real photographs from scikit-image (each task's spec says
   which), and zero-shot classification on the photographs,
7. write `report.html` with the annotated pictures and the metrics against the demo's targets.

Everything about a task comes from its spec (`tasks/<task>/task.py`); this module only knows the demo's targets.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import time
from typing import Any

from tasks.recipe import Recipe

# The demo's goals on the held-out splits: (split, task, metric) -> minimum.
TARGETS = {
    ("val", "detection", "AP50"): 0.9,
    ("val", "detection", "AP"): 0.75,
    ("val", "grounding", "recall@1"): 0.9,
    ("val", "vqa", "accuracy"): 0.85,
    ("val", "captioning", "CIDEr"): 1.5,
    ("val_unseen", "detection", "AP50"): 0.5,
    ("val", "self_training", "box_recall"): 0.8,
    ("val", "instance_segmentation", "AP50"): 0.9,
    ("val", "instance_segmentation", "AP"): 0.7,
    ("val", "referring_segmentation", "mIoU"): 0.8,
    ("val_unseen", "instance_segmentation", "AP50"): 0.5,
}
# Held-out splits of the synthetic data: every trained task on `val`, detection (and instance segmentation, when a
# recipe trains it) also on pairs never seen.
UNSEEN_SPLIT_TASKS = ("detection", "instance_segmentation")
QUICK_OVERRIDES = [
    "data.generate={seed: 0, num_train: 24, num_val: 6, image_size: 128}",
    "train.max_steps=4",
    "train.per_device_batch_size=2",
    "train.save_every=0",
    "model.preset=tiny-random",
    "model.text_encoder=null",
    "model.tokenizer=minilm",
]


def demo_recipe(config: str, output_dir: str, overrides: list[str], quick: bool = False) -> Recipe:
    """The recipe with its data and training output under `output_dir` (`quick`: a tiny smoke run)."""
    from tasks.recipe import load_recipe

    placed = [f"data.dir={os.path.join(output_dir, 'data')}", f"train.output_dir={os.path.join(output_dir, 'train')}"]
    return load_recipe(config, placed + (QUICK_OVERRIDES if quick else []) + list(overrides))


def train(recipe: Recipe) -> tuple[str, float]:
    """Runs the joint training; returns the final folder and the wall time."""
    from tasks.multitask import build_training, finish_training

    started = time.time()
    run = build_training(recipe)
    print(finish_training(run, run.trainer.train()))
    return os.path.join(run.output_dir, "final"), time.time() - started


def evaluate_all(model_dir: str, recipe: Recipe, max_samples: int | None) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics per split and task, each task evaluated with its own class loaded from the joint checkpoint."""
    from accelerate import Accelerator

    from glipv2 import Glipv2Processor
    from tasks.multitask import ensure_data
    from tasks.registry import get_task

    accelerator = Accelerator(cpu=True)
    processor = Glipv2Processor.from_pretrained(model_dir)
    data_dir = ensure_data(recipe.data)
    splits = {
        "val": recipe.task_names,
        "val_unseen": [name for name in recipe.task_names if name in UNSEEN_SPLIT_TASKS],
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    for split, names in splits.items():
        for name in names:
            spec = get_task(name)
            model = spec.model_class().from_pretrained(model_dir).eval()
            data = spec.load(spec.default_files(data_dir, split), max_samples)
            metrics, _ = spec.evaluate(accelerator, model, processor, data, batch_size=16)
            results.setdefault(split, {})[name] = {key: float(value) for key, value in metrics.items()}
            print(f"{split:>10} {name:>10}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
    return results


def save_hub_folder(model_dir: str, output_dir: str, metrics: dict[str, Any]) -> str:
    """Copies the checkpoint to `<output_dir>/model` with its model card (README.md) and metrics."""
    from tasks.publish import write_model_card

    target = os.path.join(output_dir, "model")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(model_dir, target)
    with open(os.path.join(target, "eval_results.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
    write_model_card(target, metrics.get("val", {}))
    return target


def self_training(model_dir: str, data_dir: str, output_dir: str, max_samples: int | None) -> dict[str, float]:
    """Pseudo-labels the `val` captions with the trained model and scores the boxes against the true ones."""
    from tasks.pseudo_label import label_pairs
    from tasks.synthetic import split_paths

    paths = split_paths(data_dir, "val")
    labels = label_pairs(
        model_dir,
        os.path.join(output_dir, "pseudo_labels_val.json"),
        captions=paths.captions,
        image_dir=paths.image_dir,
        vocabulary=paths.instances,
        reference=paths.grounding,
        max_samples=max_samples,
    )
    recovery = labels["info"]["recovery_at_iou_0.5"]
    print(f"       val self-training: recovered {recovery['recovered']} of {recovery['reference_boxes']} true boxes")
    return {"box_recall": float(recovery["recall"]), "box_precision": float(recovery["precision"])}


def real_photographs() -> list[tuple[str, Any]]:
    """scikit-image's astronaut, cat and coffee photographs (shipped with the package, offline)."""
    from PIL import Image
    from skimage import data

    return [(name, Image.fromarray(getattr(data, name)())) for name in ("astronaut", "chelsea", "coffee")]


def showcase(model_dir: str, recipe: Recipe) -> list[Any]:
    """Every trained task's pipelines (its spec's `showcase`) on `val_unseen` and the photographs, then zero-shot
    image classification (a library class, not a trained task) on the photographs."""
    from transformers import pipeline

    from tasks.registry import get_task
    from tasks.spec import ShowcaseEntry

    photos = real_photographs()
    entries = []
    for name in recipe.task_names:
        spec = get_task(name)
        if spec.showcase is not None:
            entries += spec.showcase(model_dir, spec.load(spec.default_files(recipe.data.dir, "val_unseen")), photos)
    classify = pipeline("zero-shot-image-classification", model=model_dir)
    for name, photo in photos:
        ranked = classify(photo, candidate_labels=["a photo of a person", "a photo of a cat", "a photo of a cup"])
        text = "zero-shot-image-classification: " + ", ".join(f"{r['label']} ({r['score']:.2f})" for r in ranked)
        entries.append(ShowcaseEntry(f"photo {name}: zero-shot-image-classification", photo, [], text))
    return entries


def metrics_table(metrics: dict[str, dict[str, dict[str, float]]]) -> list[tuple[str, str, str, float, str]]:
    """Rows `(split, task, metric, value, verdict against TARGETS)`."""
    rows = []
    for split, tasks in metrics.items():
        for task, values in tasks.items():
            for name, value in values.items():
                target = TARGETS.get((split, task, name))
                verdict = "" if target is None else ("met" if value >= target else f"below target {target}")
                rows.append((split, task, name, value, verdict))
    return rows


def write_report(output_dir: str, metrics: dict, entries: list[Any], timing: dict[str, float]) -> str:
    """`report.html`: the metrics table and every showcase picture."""
    from tasks.visualize import draw_detections, png_base64

    rows = "".join(
        f"<tr><td>{s}</td><td>{t}</td><td>{html.escape(n)}</td><td>{v:.4f}</td><td>{html.escape(verdict)}</td></tr>"
        for s, t, n, v, verdict in metrics_table(metrics)
    )
    pictures = []
    for entry in entries:
        text = entry.text or ", ".join(f"{d['label']} {d['score']:.2f}" for d in entry.detections[:8])
        png = png_base64(draw_detections(entry.image, entry.detections))
        pictures.append(
            f"<figure><img src='data:image/png;base64,{png}'><figcaption><b>{html.escape(entry.title)}</b><br>"
            f"{html.escape(text)}</figcaption></figure>"
        )
    times = ", ".join(f"{k}: {v:.0f} s" for k, v in timing.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>glipv2 demo report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;
padding:4px 8px}} figure{{display:inline-block;margin:8px;max-width:420px;vertical-align:top}}
img{{max-width:400px}}</style></head><body><h1>glipv2 demo</h1>
<p>Joint training of the <code>demo</code> preset on synthetic detection, grounding, VQA and captioning data;
evaluation on held-out images (<code>val</code>: seen colour-shape pairs, <code>val_unseen</code>: pairs never seen
in training). Times: {times}.</p>
<h2>Metrics</h2><table><tr><th>split</th><th>task</th><th>metric</th><th>value</th><th>target</th></tr>{rows}
</table><h2>Pipelines</h2>{"".join(pictures)}</body></html>"""
    path = os.path.join(output_dir, "report.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path


def run_demo(config: str, output_dir: str, overrides: list[str] = (), quick: bool = False) -> dict[str, Any]:
    """The whole demo (module docstring); returns the metrics."""
    os.makedirs(output_dir, exist_ok=True)
    recipe = demo_recipe(config, output_dir, list(overrides), quick)
    max_samples = 4 if quick else None
    timing: dict[str, float] = {}
    started = time.time()
    final, timing["training"] = train(recipe)
    mark = time.time()
    metrics = evaluate_all(final, recipe, max_samples)
    timing["evaluation"] = time.time() - mark
    model_dir = save_hub_folder(final, output_dir, metrics)
    mark = time.time()
    metrics["val"]["self_training"] = self_training(model_dir, recipe.data.dir, output_dir, max_samples)
    timing["self-training"] = time.time() - mark
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
    mark = time.time()
    entries = showcase(model_dir, recipe)
    timing["pipelines"] = time.time() - mark
    timing["total"] = time.time() - started
    report = write_report(output_dir, metrics, entries, timing)
    print(f"\nReport: {report}\nHub-ready model: {model_dir}")
    for split, task, name, value, verdict in metrics_table(metrics):
        if verdict:
            print(f"  {split:>10} {task:>10} {name:>6} = {value:.3f}  {verdict}")
    return metrics


__all__ = ["TARGETS", "demo_recipe", "evaluate_all", "metrics_table", "run_demo", "write_report"]
