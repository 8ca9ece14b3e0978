"""The captioning task: COCO captions JSON (and the Karpathy split), trained with next-token prediction under the
seq2seq mask, scored by BLEU-4, METEOR, ROUGE-L and CIDEr, served by the image-captioning pipeline."""

from __future__ import annotations

from typing import Any

from tasks.captioning.benchmarks import BENCHMARKS
from tasks.captioning.coco_captions import load_coco_captions
from tasks.captioning.collator import CaptionCollator
from tasks.collate import load_rgb
from tasks.spec import DataFiles, HubCard, Prediction, PredictOptions, ShowcaseEntry, TaskData, TaskSpec
from tasks.synthetic import split_paths


def load(files: DataFiles, max_samples: int | None = None, **options: Any) -> TaskData:
    """COCO captions JSON -> one record per image with all its reference captions."""
    dataset = load_coco_captions(files.annotation_file, files.image_dir, **options)
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.select(range(max_samples))
    return TaskData(dataset=dataset)


def default_files(data_dir: str, split: str) -> DataFiles:
    paths = split_paths(data_dir, split)
    return DataFiles(paths.image_dir, paths.captions)


def make_collator(processor: Any, data: TaskData, **options: Any) -> CaptionCollator:
    """One caption per image (random in training), `[CLS] caption [SEP]` with next-token labels."""
    return CaptionCollator(processor, **options)


def predict(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """A generated caption per image (``model.generate`` from pixels alone)."""
    images = [load_rgb(record["image"]) for record in records]
    pixels = processor(images=images, return_tensors="pt").to(model.device)
    generated = model.generate(
        pixel_values=pixels["pixel_values"].to(model.dtype),
        pixel_mask=pixels["pixel_mask"],
        max_new_tokens=options.max_caption_tokens,
    )
    captions = processor.tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [
        {"image_id": int(record["image_id"]), "caption": caption.strip(), "references": list(record["captions"])}
        for record, caption in zip(records, captions)
    ]


def score(metric: Any, predictions: list[Prediction], data: TaskData) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap)."""
    return metric.compute(
        predictions=[prediction["caption"] for prediction in predictions],
        references=[prediction["references"] for prediction in predictions],
    )


def showcase(model_dir: str, data: TaskData, photos: list[tuple[str, Any]], count: int = 3) -> list[ShowcaseEntry]:
    """The image-captioning pipeline (no prompt) on the first `count` images and on real photographs."""
    from transformers import pipeline

    captioner = pipeline("image-captioning", model=model_dir)
    records = data.dataset.select(range(min(count, len(data.dataset))))
    images = [(f"held-out {index}", load_rgb(record["image"])) for index, record in enumerate(records)]
    entries = []
    for name, image in images + [(f"photo {name}", photo) for name, photo in photos]:
        caption = captioner(image, max_new_tokens=24)[0]["generated_text"]
        entries.append(ShowcaseEntry(f"{name}: image-captioning", image, [], f"caption: {caption}"))
    return entries


_USAGE = (
    "from PIL import Image\nfrom transformers import pipeline\n\n"
    'captioner = pipeline("image-captioning", model="{repo_id}", trust_remote_code=True)\n'
    'captioner(Image.open("image.jpg"))  # [{"generated_text": ...}]; prompt="a photo of" starts the caption\n'
)

TASK = TaskSpec(
    name="captioning",
    model_class_name="Glipv2ForConditionalGeneration",
    head="caption_head",
    label_argument="caption_labels",
    metric="caption_metrics",
    load=load,
    default_files=default_files,
    make_collator=make_collator,
    predict=predict,
    score=score,
    card=HubCard(
        title="image captioning",
        result_type="image-to-text",
        result_name="Image Captioning",
        usage={"Glipv2ForConditionalGeneration": _USAGE},
        tags=("image-captioning",),
    ),
    pipelines=("image-captioning", "image-text-to-text"),
    showcase=showcase,
    benchmarks=BENCHMARKS,
)

__all__ = ["TASK"]
