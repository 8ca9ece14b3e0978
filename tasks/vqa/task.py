"""The VQA task: VQAv2 questions + annotations, trained with soft-score targets over the training answers, scored
by the official VQA accuracy, served by the visual-question-answering pipeline."""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from tasks.collate import load_rgb
from tasks.spec import DataFiles, HubCard, Prediction, PredictOptions, ShowcaseEntry, TaskData, TaskSpec
from tasks.synthetic import split_paths
from tasks.vqa.benchmarks import BENCHMARKS
from tasks.vqa.collator import VqaCollator
from tasks.vqa.vqav2 import build_answer_vocab, load_vqa


def load(files: DataFiles, max_samples: int | None = None, **options: Any) -> TaskData:
    """VQAv2 questions + annotations -> one record per question, and the answer vocabulary of those records.

    Without an annotation file (None or "": a test split) the records have no answers. Loader options: those of
    `load_vqa` (`skip_invalid`, `verify_images`, `report`, `official_eval`, ...)."""
    if files.questions_file is None:
        raise ValueError(f"VQA needs a questions file besides {files.annotation_file} (DataFiles.questions_file).")
    if files.image_name_format is not None:
        options["image_name_format"] = files.image_name_format
    dataset = load_vqa(files.questions_file, files.annotation_file or None, files.image_dir, **options)
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(range(max_samples))
    return TaskData(dataset=dataset, answers=build_answer_vocab(dataset))


def default_files(data_dir: str, split: str) -> DataFiles:
    paths = split_paths(data_dir, split)
    return DataFiles(paths.image_dir, paths.vqa_annotations, paths.vqa_questions, paths.vqa_image_name_format)


def make_collator(processor: Any, data: TaskData, **options: Any) -> VqaCollator:
    """Soft-score targets over the training data's answer vocabulary (the model's `id2label`, see `model_config`)."""
    return VqaCollator(processor, data.answers, **options)


def model_config(data: TaskData) -> dict[str, Any]:
    """The answer vocabulary of the training data becomes the model's `id2label` (the classifier's outputs)."""
    return {"id2label": dict(enumerate(data.answers))}


def _checkpoint_classifier(checkpoint_dir: str) -> tuple[list[str], dict[str, torch.Tensor]] | None:
    """The answers and `vqa_head.classifier` weights saved in a checkpoint folder, or None."""
    from safetensors import safe_open

    config_path = os.path.join(checkpoint_dir, "config.json")
    weights = [name for name in sorted(os.listdir(checkpoint_dir)) if name.endswith(".safetensors")]
    if not os.path.isfile(config_path) or not weights:
        return None
    with open(config_path, encoding="utf-8") as handle:
        id2label = json.load(handle).get("id2label") or {}
    answers = [id2label[key] for key in sorted(id2label, key=int)]
    tensors = {}
    for name in weights:
        with safe_open(os.path.join(checkpoint_dir, name), framework="pt") as handle:
            for key in ("vqa_head.classifier.weight", "vqa_head.classifier.bias"):
                if key in handle.keys():
                    tensors[key.rsplit(".", 1)[-1]] = handle.get_tensor(key)
    return (answers, tensors) if len(tensors) == 2 else None


@torch.no_grad()
def adapt_answers(model: Any, checkpoint_dir: str) -> str | None:
    """After loading `checkpoint_dir` with a new answer vocabulary (`config.id2label`): the classifier rows of
    answers the checkpoint knows get its weights, the other rows a fresh initialisation (as `_init_weights`).
    Returns a one-line report, or None when the vocabulary is unchanged or the model has no VQA head."""
    head = getattr(model, "vqa_head", None)
    saved = _checkpoint_classifier(checkpoint_dir) if head is not None else None
    if saved is None:
        return None
    old_answers, old = saved
    new_answers = [model.config.id2label[index] for index in range(len(model.config.id2label))]
    if new_answers == old_answers:
        return None
    old_index = {answer: index for index, answer in enumerate(old_answers)}
    classifier = head.classifier
    kept = 0
    for row, answer in enumerate(new_answers):
        if answer in old_index:
            classifier.weight[row] = old["weight"][old_index[answer]].to(classifier.weight)
            classifier.bias[row] = old["bias"][old_index[answer]].to(classifier.bias)
            kept += 1
        else:
            classifier.weight[row].normal_(std=model.config.initializer_range)
            classifier.bias[row] = 0.0
    return (
        f"vqa: {len(new_answers)} answers: {kept} keep their weights from {checkpoint_dir}, "
        f"{len(new_answers) - kept} are new (initialised); {len(old_answers) - kept} of the checkpoint's are dropped"
    )


def predict(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """The highest-scoring answer of ``model.config.id2label`` per question; its references are the annotators'
    raw answers (the official scorer normalises them), with the question's answer and question types."""
    images = [load_rgb(record["image"]) for record in records]
    inputs = processor(images=images, text=[record["question"] for record in records], return_tensors="pt")
    inputs = inputs.to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    logits = model(**inputs).logits
    id2label = model.config.id2label
    return [
        {
            "question_id": int(record["question_id"]),
            "answer": id2label[int(index)],
            "references": list(record["raw_answers"]),
            "answer_type": record.get("answer_type", ""),
            "question_type": record.get("question_type", ""),
        }
        for record, index in zip(records, logits.argmax(-1).tolist())
    ]


def score(metric: Any, predictions: list[Prediction], data: TaskData) -> dict[str, float]:
    """Official VQAv2 accuracy (`vqaEval.py`) against the raw annotator answers: `accuracy` and `accuracy_<answer
    type>`, fractions (the benchmark `vqav2` adds the official per-question-type report)."""
    answer_types = [prediction["answer_type"] for prediction in predictions]
    return metric.compute(
        predictions=[prediction["answer"] for prediction in predictions],
        references=[prediction["references"] for prediction in predictions],
        answer_types=answer_types if all(answer_types) else None,
    )


def showcase(model_dir: str, data: TaskData, photos: list[tuple[str, Any]], count: int = 3) -> list[ShowcaseEntry]:
    """The visual-question-answering pipeline on the first question of the first `count` images."""
    from transformers import pipeline

    answerer = pipeline("visual-question-answering", model=model_dir)
    entries, seen = [], set()
    for record in data.dataset:
        if record["image_id"] in seen:
            continue
        seen.add(record["image_id"])
        image = load_rgb(record["image"])
        answers = answerer(image, record["question"], top_k=3)
        text = f"Q: {record['question']} A: " + ", ".join(f"{a['answer']} ({a['score']:.2f})" for a in answers)
        entries.append(ShowcaseEntry(f"held-out {len(seen) - 1}: visual-question-answering", image, [], text))
        if len(seen) == count:
            break
    return entries


_USAGE = (
    "from PIL import Image\nfrom transformers import pipeline\n\n"
    'vqa = pipeline("visual-question-answering", model="{repo_id}", trust_remote_code=True)\n'
    'vqa(Image.open("image.jpg"), "What colour is the cat?", top_k=3)\n'
)

TASK = TaskSpec(
    name="vqa",
    model_class_name="Glipv2ForQuestionAnswering",
    head="vqa_head",
    label_argument="vqa_labels",
    metric="vqa_accuracy",
    load=load,
    default_files=default_files,
    make_collator=make_collator,
    predict=predict,
    score=score,
    card=HubCard(
        title="visual question answering",
        result_type="visual-question-answering",
        result_name="Visual Question Answering",
        usage={"Glipv2ForQuestionAnswering": _USAGE},
        tags=("visual-question-answering",),
    ),
    pipelines=("visual-question-answering",),
    showcase=showcase,
    model_config=model_config,
    adapt_model=adapt_answers,
    benchmarks=BENCHMARKS,
)

__all__ = ["TASK", "adapt_answers"]
