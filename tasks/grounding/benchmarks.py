"""Phrase-grounding benchmarks under their official protocols: Flickr30k Entities (MDETR's `FlickrEvaluator`, the
evaluator GLIP runs) and RefCOCO / RefCOCO+ / RefCOCOg (MDETR's `RefExpEvaluator`), on MDETR's annotation files
as distributed (`mdetr_annotations.tar.gz`) and, for Flickr30k, the original Flickr30k Entities annotations."""

from __future__ import annotations

import logging
import os
from typing import Any

from tasks.common import Glipv2DataError
from tasks.evaluation import predict_dataset
from tasks.protocol import Benchmark, BenchmarkResult, BenchmarkRun
from tasks.spec import DataFiles, Prediction, PredictOptions, TaskData

logger = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)  # the official evaluators' k (MDETR's FlickrEvaluator adds -1, the upper bound)
FLICKR_SPLITS = ("val", "test")
# The original annotations (github.com/BryanPlummer/flickr30k_entities: annotations.zip unpacked beside the split
# lists), which the official evaluator reads; without them the ground truth comes from the MDETR file.
ENTITY_FILES = ("entities_annotations_dir", "entities_sentences_dir", "entities_split_file")


def _flickr_files(split: str) -> dict[str, str]:
    return {
        "annotation_file": f"mdetr_annotations/final_flickr_separateGT_{split}.json",
        "image_dir": "flickr30k-images",
        "entities_annotations_dir": "flickr30k_entities/Annotations",
        "entities_sentences_dir": "flickr30k_entities/Sentences",
        "entities_split_file": f"flickr30k_entities/{split}.txt",
    }


# ------------------------------------------------------------------------------------------------- Flickr30k
def predict_mentions(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """Per sentence, per mention of `tokens_positive_eval` (in order), its boxes as GLIP's Flickr30k evaluation
    ranks them: the sentence is the prompt, the mention's tokens its positive map, a box's score the mean token
    probability times centerness above `options.threshold`, NMS 0.6 per mention, the best `options.max_detections`
    of the sentence; each mention's boxes by decreasing score. The official evaluator's input format
    (`image_id` = the Flickr30k image, `sentence_id`, `boxes` per mention) plus `scores` and the mention texts."""
    from tasks.grounding.task import ground_phrases

    mentions = [record["tokens_positive_eval"] for record in records]
    ranked = ground_phrases(
        model,
        processor,
        records,
        mentions,
        threshold=options.threshold,
        max_detections=options.max_detections,
        top_k=None,
    )
    return [
        {
            "image_id": int(record["original_img_id"]),
            "sentence_id": int(record["sentence_id"]),
            "boxes": [phrase["boxes"] for phrase in grounded],
            "scores": [phrase["scores"] for phrase in grounded],
            "phrases": [mention_text(record["caption"], mention) for mention in record["tokens_positive_eval"]],
        }
        for record, grounded in zip(records, ranked)
    ]


def mention_text(caption: str, mention: list[list[int]]) -> str:
    return " ".join(caption[begin:end] for begin, end in mention)


def _entity_paths(run: BenchmarkRun) -> tuple[str, str, str] | None:
    """The Flickr30k Entities files when any of them is under the root (then all must be), else None."""
    names = run.benchmark.files[run.split]
    if not any(os.path.exists(os.path.join(run.root, names[key])) for key in ENTITY_FILES):
        return None
    annotations, sentences, split_file = (run.file(key) for key in ENTITY_FILES)
    return annotations, sentences, split_file


def official_mentions(
    predictions: list[Prediction],
    entities: tuple[str, str, str],
    annotation_file: str,
    complete: bool,
) -> tuple[list[list[list[float]]], list[list[list[float]]], list[list[str]]]:
    """Each evaluated mention's predicted boxes, ground-truth boxes and phrase types, the ground truth read from
    the Flickr30k Entities files as the official `Flickr30kEntitiesRecallEvaluator.evaluate` pairs them with the
    predictions: by (image, sentence), phrase by phrase in sentence order. As there, a sentence the files do not
    evaluate is skipped, a second prediction of a sentence ignored, a sentence with another number of phrases
    raises, and (when `complete`) so does a sentence left without prediction. Stricter than there, an image outside
    the split list raises (the official code skips it) and the mention texts must be the phrases."""
    from tasks.grounding.flickr30k_entities import load_evaluated_sentences, read_split

    annotations_dir, sentences_dir, split_file = entities
    split_ids = read_split(split_file)
    known = set(split_ids)
    for prediction in predictions:
        if str(prediction["image_id"]) not in known:
            raise Glipv2DataError(
                annotation_file,
                f"original_img_id={prediction['image_id']} sentence_id={prediction['sentence_id']}",
                "original_img_id",
                f"image {prediction['image_id']} is not in the split list {split_file}",
            )
    image_ids = split_ids if complete else sorted({str(prediction["image_id"]) for prediction in predictions})
    evaluated = load_evaluated_sentences(annotations_dir, sentences_dir, image_ids)
    boxes, references, types, seen = [], [], [], set()
    for prediction in predictions:
        key = (str(prediction["image_id"]), int(prediction["sentence_id"]))
        record = f"original_img_id={key[0]} sentence_id={key[1]}"
        if key in seen:
            logger.warning(
                "%s: a second prediction for %s is ignored, as the official evaluator does", annotation_file, record
            )
            continue
        if key not in evaluated:
            if any(prediction["boxes"]):
                logger.warning(
                    "%s: the Flickr30k Entities files evaluate no phrase of %s; skipped", annotation_file, record
                )
            continue
        seen.add(key)
        phrases = evaluated[key]
        if len(prediction["boxes"]) != len(phrases):
            raise Glipv2DataError(
                annotation_file,
                record,
                "tokens_positive_eval",
                f"{len(prediction['boxes'])} mentions where {os.path.join(sentences_dir, key[0] + '.txt')} "
                f"evaluates {len(phrases)} phrases ({[phrase.phrase for phrase in phrases]})",
            )
        for index, (text, phrase) in enumerate(zip(prediction["phrases"], phrases)):
            if text != phrase.phrase:
                raise Glipv2DataError(
                    annotation_file,
                    record,
                    "tokens_positive_eval",
                    f"mention {index} is {text!r} where the Flickr30k Entities sentence has {phrase.phrase!r}",
                )
        boxes.extend(prediction["boxes"])
        references.extend([[float(value) for value in box] for box in phrase.boxes] for phrase in phrases)
        types.extend(phrase.phrase_type for phrase in phrases)
    missing = sorted(set(evaluated) - seen)
    if complete and missing:
        shown = ", ".join(f"image {image} sentence {sentence}" for image, sentence in missing[:5])
        raise Glipv2DataError(
            annotation_file,
            f"original_img_id={missing[0][0]} sentence_id={missing[0][1]}",
            "sentence_id",
            f"{len(missing)} sentences that the Flickr30k Entities files evaluate have no entry ({shown})",
        )
    return boxes, references, types


def json_mentions(
    predictions: list[Prediction], dataset: Any
) -> tuple[list[list[list[float]]], list[list[list[float]]]]:
    """Each mention's predicted and ground-truth boxes from the MDETR file alone: a mention's boxes are those whose
    `tokens_positive` overlap it (mentions without one are not evaluated, as the official evaluator drops phrases
    without boxes)."""
    from tasks.collate import xywh_to_xyxy
    from tasks.grounding.mdetr import mention_boxes

    boxes, references = [], []
    records = dataset.select_columns(["objects", "tokens_positive_eval"])
    for prediction, record in zip(predictions, records):
        for predicted, mention in zip(prediction["boxes"], record["tokens_positive_eval"]):
            ground_truth = mention_boxes(mention, record["objects"])
            if ground_truth:
                boxes.append(predicted)
                references.append(xywh_to_xyxy(ground_truth))
    return boxes, references


def _check_flickr_records(data: TaskData, annotation_file: str) -> None:
    for record in data.dataset.select_columns(["image_id", "sentence_id", "original_img_id"]):
        for key in ("sentence_id", "original_img_id"):
            if record[key] < 0:
                raise Glipv2DataError(
                    annotation_file,
                    f"image id={record['image_id']}",
                    key,
                    "missing key: MDETR's Flickr30k entries name their Flickr30k image and sentence",
                )


def flickr_recalls(
    metric: Any,
    boxes: list[list[list[float]]],
    references: list[list[list[float]]],
    phrase_types: list[list[str]] | None = None,
) -> dict[str, Any]:
    """Recall@1/5/10 and the upper bound over all mentions (and per phrase type), any-box (no prefix) and
    merged-box (`merged_box/`)."""
    metrics: dict[str, Any] = {}
    for protocol, prefix in (("any_box", ""), ("merged_box", "merged_box/")):
        values = metric.compute(
            predictions=boxes,
            references=references,
            ks=RECALL_KS,
            protocol=protocol,
            upper_bound=True,
            phrase_types=phrase_types,
        )
        metrics.update({f"{prefix}{name}": value for name, value in values.items()})
    metrics["num_mentions"] = len(boxes)
    return metrics


def run_flickr30k(run: BenchmarkRun) -> BenchmarkResult | None:
    """Recall@k of every mention of every sentence (any-box and merged-box, per phrase type with the Flickr30k
    Entities files), and the official evaluator's input as the predictions file."""
    from tasks.grounding.task import load

    annotation_file = run.file("annotation_file")
    entities = _entity_paths(run)
    data = load(DataFiles(image_dir=run.file("image_dir"), annotation_file=annotation_file), run.max_samples)
    _check_flickr_records(data, annotation_file)
    predictions = predict_dataset(
        predict_mentions, run.accelerator, run.model(), run.processor(), data, run.batch_size, run.options
    )
    if predictions is None:
        return None
    files = {"predictions": run.write_json(f"flickr30k_{run.split}_glipv2_predictions.json", predictions)}
    if entities is not None:
        complete = run.max_samples is None
        boxes, references, types = official_mentions(predictions, entities, annotation_file, complete)
        metrics = flickr_recalls(run.metric(), boxes, references, types)
        metrics["ground_truth"] = "flickr30k_entities"
    else:
        logger.warning(
            "flickr30k %s: no Flickr30k Entities files under %s; the ground truth is read from %s (no phrase types)",
            run.split,
            run.root,
            annotation_file,
        )
        boxes, references = json_mentions(predictions, data.dataset)
        metrics = flickr_recalls(run.metric(), boxes, references)
        metrics["ground_truth"] = "mdetr_annotations"
    return BenchmarkResult(metrics, len(predictions), files)


FLICKR30K = Benchmark(
    name="flickr30k",
    task="grounding",
    splits=FLICKR_SPLITS,
    files={split: _flickr_files(split) for split in FLICKR_SPLITS},
    run=run_flickr30k,
    protocol=(
        "Flickr30k Entities phrase grounding as MDETR's FlickrEvaluator (datasets/flickr_eval.py, copied by GLIP): "
        "one entry per mention (MDETR's tokens_positive_eval: 'a boy' and 'he' are scored apart), Recall@1/5/10 "
        "and the upper bound (any predicted box) at IoU >= 0.5, any-box (a hit on any ground-truth box of the "
        "mention's entity) and merged-box (merged_box/: on the box enclosing them). Ground truth from the "
        "original Annotations/*.xml and Sentences/*.txt with their phrase types when flickr30k_entities/ is under "
        "the root, else from the MDETR file (ground_truth says which). Boxes ranked as GLIP's evaluation: the "
        "sentence is the prompt, a box scores the mean probability of the mention's tokens x centerness, GLIP's "
        "test settings (score floor 0.05, NMS 0.6 per mention, the best 100 boxes of the sentence; --threshold, "
        "--max-detections)."
    ),
)


# ------------------------------------------------------------------------------------------- RefCOCO/+/g
REFEXP_SPLITS = {
    "refcoco": ("val", "testA", "testB"),
    "refcoco+": ("val", "testA", "testB"),
    "refcocog": ("val", "test"),
}


def predict_expressions(
    model: Any, processor: Any, records: list[dict[str, Any]], data: TaskData, options: PredictOptions
) -> list[Prediction]:
    """Per referring expression, its boxes ranked by the score of the expression's annotated phrase (MDETR's
    `tokens_positive`, the root noun phrase: the mean probability of its tokens x centerness, as GLIP scores a
    phrase), every candidate box considered, NMS 0.6, the best `max(RECALL_KS)` kept; `{"image_id", "boxes",
    "scores"}` (the input of MDETR's `RefExpEvaluator`)."""
    from tasks.grounding.task import ground_phrases

    phrases = [[record["objects"]["tokens_positive"][0]] for record in records]
    ranked = ground_phrases(model, processor, records, phrases, top_k=max(RECALL_KS))
    return [
        {"image_id": int(record["image_id"]), "boxes": grounded[0]["boxes"], "scores": grounded[0]["scores"]}
        for record, grounded in zip(records, ranked)
    ]


def _check_refexp_records(data: TaskData, annotation_file: str) -> list[list[float]]:
    """Each expression's ground-truth xyxy box; MDETR's files hold exactly one per expression."""
    from tasks.collate import xywh_to_xyxy

    boxes = []
    for record in data.dataset.select_columns(["image_id", "objects"]):
        found = len(record["objects"]["bbox"])
        if found != 1:
            raise Glipv2DataError(
                annotation_file,
                f"image id={record['image_id']}",
                "annotations",
                f"a referring expression refers to exactly one box; this one has {found}",
            )
        boxes.append(xywh_to_xyxy(record["objects"]["bbox"])[0])
    return boxes


def run_refexp(run: BenchmarkRun) -> BenchmarkResult | None:
    """Accuracy@1/5/10 of the expressions of one RefCOCO/+/g split (IoU >= 0.5, and GIoU >= 0.5 as MDETR's code)."""
    from tasks.grounding.task import load

    annotation_file = run.file("annotation_file")
    data = load(DataFiles(image_dir=run.file("image_dir"), annotation_file=annotation_file), run.max_samples)
    ground_truth = _check_refexp_records(data, annotation_file)
    predictions = predict_dataset(
        predict_expressions, run.accelerator, run.model(), run.processor(), data, run.batch_size, run.options
    )
    if predictions is None:
        return None
    name = f"{run.benchmark.name}_{run.split}_glipv2_predictions.json"
    files = {"predictions": run.write_json(name, predictions)}
    return BenchmarkResult(refexp_accuracy(run.metric(), predictions, ground_truth), len(predictions), files)


def refexp_accuracy(metric: Any, predictions: list[Prediction], ground_truth: list[list[float]]) -> dict[str, float]:
    """`accuracy@k`: the fraction of expressions whose k best boxes include one at IoU >= 0.5 with the referred
    box; `giou_accuracy@k`: the same at GIoU >= 0.5, what MDETR's RefExpEvaluator computes."""
    metrics: dict[str, float] = {}
    for iou_type, prefix in (("iou", ""), ("giou", "giou_")):
        values = metric.compute(
            predictions=[prediction["boxes"] for prediction in predictions],
            references=[[box] for box in ground_truth],
            ks=RECALL_KS,
            iou_type=iou_type,
        )
        metrics.update({f"{prefix}accuracy@{k}": values[f"recall@{k}"] for k in RECALL_KS})
    return metrics


def _refexp_benchmark(name: str) -> Benchmark:
    splits = REFEXP_SPLITS[name]
    return Benchmark(
        name=name,
        task="grounding",
        splits=splits,
        files={
            split: {"annotation_file": f"mdetr_annotations/finetune_{name}_{split}.json", "image_dir": "train2014"}
            for split in splits
        },
        run=run_refexp,
        protocol=(
            f"{name} referring expression comprehension as MDETR's RefExpEvaluator (datasets/refexp.py) on MDETR's "
            f"finetune_{name}_<split>.json: per expression, accuracy@1/5/10 = its k best boxes include one at "
            "IoU >= 0.5 with the referred box (giou_accuracy@k: GIoU >= 0.5, what MDETR's code computes). The "
            "expression is the prompt and a box scores the mean probability of the annotated root phrase's tokens "
            "(tokens_positive) x centerness, every candidate considered (no score floor: MDETR ranks all its "
            "queries; --threshold and --max-detections do not apply), NMS 0.6."
        ),
    )


REFCOCO, REFCOCO_PLUS, REFCOCOG = (_refexp_benchmark(name) for name in REFEXP_SPLITS)

BENCHMARKS = (FLICKR30K, REFCOCO, REFCOCO_PLUS, REFCOCOG)

__all__ = [
    "BENCHMARKS",
    "FLICKR30K",
    "REFCOCO",
    "REFCOCOG",
    "REFCOCO_PLUS",
    "flickr_recalls",
    "json_mentions",
    "official_mentions",
    "predict_expressions",
    "predict_mentions",
    "refexp_accuracy",
    "run_flickr30k",
    "run_refexp",
]
