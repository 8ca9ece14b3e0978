"""The README's main job end to end in its smoke mode: train, evaluate, save, every pipeline, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _quick_demo(output: Path, *arguments: str) -> None:
    """`scripts/demo.py --quick` into `output`, offline; fails with the end of its output."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--output-dir", str(output), "--quick", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_demo_quick_writes_report_and_hub_folder(tmp_path: Path) -> None:
    """`configs/demo.yaml` in the smoke mode. The segmentation tasks (sampling weight 0) are never drawn, yet
    evaluated, shown and published; the masks train on detection's and grounding's batches."""
    output = tmp_path / "demo"
    _quick_demo(output)
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics) == {"val", "val_unseen"}
    tasks = {"detection", "grounding", "vqa", "captioning", "instance_segmentation", "referring_segmentation"}
    assert tasks | {"self_training"} == set(metrics["val"])
    assert {"detection", "instance_segmentation"} == set(metrics["val_unseen"])
    assert "AP50" in metrics["val"]["detection"] and "CIDEr" in metrics["val"]["captioning"]
    assert {"AP", "AP50"} <= set(metrics["val"]["instance_segmentation"])
    assert "mIoU" in metrics["val"]["referring_segmentation"]
    assert 0.0 <= metrics["val"]["self_training"]["box_recall"] <= 1.0
    history = json.loads((output / "train" / "train_history.json").read_text())
    drawn = {key.split("/")[0] for record in history for key in record if key.endswith("/loss")}
    assert drawn <= {"detection", "grounding", "vqa", "captioning"}
    assert any("detection/loss_mask" in record or "grounding/loss_mask" in record for record in history)
    from tasks.grounding import load_mdetr_grounding

    pseudo = load_mdetr_grounding(output / "pseudo_labels_val.json", output / "data" / "images" / "val")
    assert len(pseudo) == 4  # --quick labels the first 4 captions
    report = (output / "report.html").read_text()
    for section in (
        "open-vocabulary-detection",
        "object-detection (closed vocabulary)",
        "phrase-grounding",
        "visual-question-answering",
        "image-captioning",
        "photo astronaut",
        "zero-shot-object-detection",
        "zero-shot-image-classification",
        "instance-segmentation",
        "image-segmentation (stock pipeline",
        "referring-segmentation",
    ):
        assert section in report, section
    # each task's showcase: detection 3 held-out x 2 + 3 photos, grounding 3, VQA 3, captioning 3 + 3 photos,
    # instance segmentation 2 held-out x 2, referring segmentation 3; zero-shot classification 3 photos
    assert report.count("data:image/png;base64,") == 24 + 4 + 3
    card = (output / "model" / "README.md").read_text()
    assert card.startswith("---") and "model-index" in card
    assert "Instance Segmentation (mask AP)" in card
