"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr; SPICE where its Stanford CoreNLP jars are present) via
pycocoevalcap, as an ``evaluate`` metric."""

from __future__ import annotations

import contextlib
import io
import os

import datasets
import evaluate
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

_DESCRIPTION = """COCO caption evaluation (pycocoevalcap): captions are tokenised with the Stanford PTB tokenizer
(Java), then scored with BLEU-1..4, METEOR (Java), ROUGE-L and CIDEr (CIDEr-D with idf from the references, as in
the COCO caption server), exactly as pycocoevalcap's COCOEvalCap does."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one generated caption per image.
    references: per image, the list of reference captions.
    metrics: which of "bleu", "meteor", "rouge", "cider", "spice" to compute (default: all but SPICE; METEOR and
        SPICE start a Java process; SPICE needs the Stanford CoreNLP 3.6.0 jars, see `spice_unavailable`).
Returns:
    {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE"} (the requested ones), corpus level.
"""
ALL_METRICS = ("bleu", "meteor", "rouge", "cider", "spice")
DEFAULT_METRICS = ("bleu", "meteor", "rouge", "cider")


def spice_unavailable() -> str | None:
    """Why SPICE cannot run here, or None when it can. pycocoevalcap's SPICE downloads
    `stanford-corenlp-3.6.0.jar` and its models jar from nlp.stanford.edu on first use; no package index ships
    them, so offline they must already be in pycocoevalcap's `spice/lib` folder."""
    from pycocoevalcap.spice import get_stanford_models

    folder = os.path.join(get_stanford_models.SPICEDIR, get_stanford_models.SPICELIB)
    missing = [
        name
        for name in (f"{get_stanford_models.JAR}.jar", f"{get_stanford_models.JAR}-models.jar")
        if not os.path.exists(os.path.join(folder, name))
    ]
    if missing:
        return (
            f"SPICE needs {', '.join(missing)} in {folder} (Stanford CoreNLP 3.6.0, "
            f"http://nlp.stanford.edu/software/{get_stanford_models.CORENLP}.zip), which pycocoevalcap downloads on "
            "first use: not available offline"
        )
    return None


def tokenize(predictions: list[str], references: list[list[str]]) -> tuple[dict, dict]:
    """PTB-tokenise into pycocoevalcap's ``{image index: [caption, ...]}`` dicts (``res``, ``gts``)."""
    gts = {index: [{"caption": caption} for caption in refs] for index, refs in enumerate(references)}
    res = {index: [{"caption": prediction}] for index, prediction in enumerate(predictions)}
    tokenizer = PTBTokenizer()
    with contextlib.redirect_stdout(io.StringIO()):
        return tokenizer.tokenize(res), tokenizer.tokenize(gts)


class CaptionMetrics(evaluate.Metric):
    """BLEU-4, METEOR, ROUGE-L and CIDEr as computed by pycocoevalcap."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Chen et al., Microsoft COCO Captions: Data Collection and Evaluation Server, 2015.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
            ),
            reference_urls=["https://github.com/salaniz/pycocoevalcap"],
        )

    def _compute(
        self, predictions: list[str], references: list[list[str]], metrics: tuple[str, ...] = DEFAULT_METRICS
    ) -> dict[str, float]:
        unknown = set(metrics) - set(ALL_METRICS)
        if unknown:
            raise ValueError(f"unknown caption metrics {sorted(unknown)}; choose from {ALL_METRICS}")
        if "spice" in metrics and spice_unavailable():
            raise RuntimeError(spice_unavailable())
        res, gts = tokenize(predictions, references)
        result: dict[str, float] = {}
        with contextlib.redirect_stdout(io.StringIO()):
            if "bleu" in metrics:
                scores, _ = Bleu(4).compute_score(gts, res)
                result.update({f"BLEU-{n + 1}": float(score) for n, score in enumerate(scores)})
            if "meteor" in metrics:
                result["METEOR"] = float(Meteor().compute_score(gts, res)[0])
            if "rouge" in metrics:
                result["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
            if "cider" in metrics:
                result["CIDEr"] = float(Cider().compute_score(gts, res)[0])
            if "spice" in metrics:
                from pycocoevalcap.spice.spice import Spice

                result["SPICE"] = float(Spice().compute_score(gts, res)[0])
        return result
