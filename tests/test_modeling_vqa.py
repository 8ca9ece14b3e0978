"""VQA: a tiny model overfits answers, and the visual-question-answering pipeline serves it (also as remote code)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
import torch

from glipv2 import (
    Glipv2ForQuestionAnswering,
    Glipv2Processor,
    vqa_targets,
)
from tests.modeling_helpers import (
    ANSWERS,
    REMOTE_VQA_SCRIPT,
    VQA_DATA,
    answer_config,
    scene,
    text_without_dropout,
    train_steps,
)


def test_vqa_overfit_accuracy_and_pipeline(processor: Glipv2Processor, tmp_path: pathlib.Path) -> None:
    from transformers import pipeline

    model = Glipv2ForQuestionAnswering(answer_config(fusion_attention_dropout=0.0, text_config=text_without_dropout()))
    images = [scene(color, shape) for color, shape, _, _ in VQA_DATA]
    batch = processor(images=images, text=[q for _, _, q, _ in VQA_DATA])
    answers = torch.tensor([ANSWERS.index(a) for *_, a in VQA_DATA])
    labels = vqa_targets([[a] for a in answers.tolist()], [[1.0]] * 4, len(ANSWERS))
    train_steps(model, lambda: model(**batch, labels=labels).loss, steps=20, lr=3e-3)
    with torch.no_grad():
        logits = model(**batch).logits
    assert (logits.argmax(-1) == answers).float().mean().item() == 1.0
    as_tuple = model(**batch, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[1].shape == (4, len(ANSWERS))

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    vqa = pipeline("visual-question-answering", model=str(tmp_path))
    for color, shape, question, answer in VQA_DATA:
        result = vqa(scene(color, shape), question, top_k=3)
        assert len(result) == 3 and result[0]["answer"] == answer
        assert result[0]["score"] >= result[1]["score"]
    # the pipeline's own folder publishes it as custom code: it loads where glipv2 cannot be imported
    vqa.save_pretrained(tmp_path / "pipe")
    (tmp_path / "remote.py").write_text(REMOTE_VQA_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path / "pipe"), VQA_DATA[1][2]],
        cwd=tmp_path,
        env={"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # (the last word: transformers may print a trust prompt for the processor's inferred video processor first)
    assert result.stdout.split()[-1] == "blue"
    with pytest.raises(ValueError, match="question is empty"):
        vqa(images[0], "   ")
    with pytest.raises(ValueError, match="question is 302 tokens long"):
        vqa(images[0], "red " * 300)
