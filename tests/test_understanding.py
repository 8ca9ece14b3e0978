"""Understanding heads: VQA, captioning, zero-shot classification, pre-training losses, checkpoints across classes."""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from glipv2 import (
    Glipv2ForConditionalGeneration,
    Glipv2ForGrounding,
    Glipv2ForPreTraining,
    Glipv2ForQuestionAnswering,
    Glipv2ForZeroShotImageClassification,
    Glipv2Processor,
    build_zero_shot_classifier,
    classify,
    vqa_targets,
)
from glipv2.loss import (
    clip_contrastive_loss,
    mlm_loss,
    region_word_contrastive_loss,
    shifted_lm_loss,
    vqa_soft_score_loss,
)
from glipv2.modeling_glipv2_captioning import causal_text_features, encode_image_memory
from glipv2.modeling_glipv2_zero_shot import IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, resolve_templates
from tests.conftest import bert_processor, tiny_config

ANSWERS = ["red", "blue", "green", "square", "circle"]
COLORS = {"red": (230, 20, 20), "blue": (20, 20, 230), "green": (20, 200, 20)}


def _config(**overrides):  # noqa: ANN202
    overrides.setdefault("id2label", dict(enumerate(ANSWERS)))
    overrides.setdefault("label2id", {a: i for i, a in enumerate(ANSWERS)})
    return tiny_config(**overrides)


def _text_without_dropout() -> dict:
    """The tiny text config without dropout (deterministic overfitting and gradient comparisons)."""
    return {**tiny_config().text_config.to_dict(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _scene(color: str, shape: str = "square") -> Image.Image:
    """64x64 grey image with one coloured square (or disc) in the middle."""
    canvas = np.full((64, 64, 3), 128, dtype=np.uint8)
    yy, xx = np.mgrid[:64, :64]
    inside = (abs(yy - 32) < 18) & (abs(xx - 32) < 18) if shape == "square" else (yy - 32) ** 2 + (xx - 32) ** 2 < 324
    canvas[inside] = COLORS[color]
    return Image.fromarray(canvas)


@pytest.fixture(scope="module")
def processor() -> Glipv2Processor:
    return bert_processor(64)


def _train(model: torch.nn.Module, step, steps: int, lr: float = 1e-2) -> float:  # noqa: ANN001
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = step()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


# ------------------------------------------------------------------------------------------ hand-computed losses
def _bce(x: float, y: float) -> float:
    sig = 1 / (1 + math.exp(-x))
    return -(y * math.log(sig) + (1 - y) * math.log(1 - sig))


def test_vqa_soft_score_loss_hand_computed() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 0.5]])
    labels = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.0, 0.9]])
    expected = sum(_bce(x, y) for x, y in zip(logits.flatten().tolist(), labels.flatten().tolist())) / 6 * 3
    assert vqa_soft_score_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # loader format -> dense targets; an out-of-vocabulary id is an error, a dropped answer an all-zero row
    targets = vqa_targets([[0, 2], []], [[1.0, 0.3], []], 3)
    assert targets.tolist() == [[1.0, 0.0, pytest.approx(0.3)], [0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="outside the vocabulary of 3"):
        vqa_targets([[3]], [[1.0]], 3)
    with pytest.raises(ValueError, match="soft scores"):
        vqa_soft_score_loss(logits, labels[:, :2])


def test_shifted_lm_and_mlm_losses_hand_computed() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[0, 2, -100]])  # position 0 predicts token 2; position 1 predicts padding (ignored)
    expected = -math.log(math.exp(0.0) / (math.exp(2.0) + 2))
    assert shifted_lm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    mlm_labels = torch.tensor([[-100, 2, 1]])  # positions 1 and 2 are masked
    expected_mlm = (-math.log(math.exp(3) / (1 + math.e + math.exp(3))) + math.log(3)) / 2
    assert mlm_loss(logits, mlm_labels).item() == pytest.approx(expected_mlm, rel=1e-6)


def test_clip_loss_hand_computed() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = torch.tensor(10.0)
    # logits_per_image = 10 * [[1, 0.6], [0, 0.8]]
    row = [-math.log(math.exp(10) / (math.exp(10) + math.exp(6))), -math.log(math.exp(8) / (1 + math.exp(8)))]
    col = [-math.log(math.exp(10) / (math.exp(10) + 1)), -math.log(math.exp(8) / (math.exp(6) + math.exp(8)))]
    expected = (sum(row) / 2 + sum(col) / 2) / 2
    assert clip_contrastive_loss(image, text, scale).item() == pytest.approx(expected, rel=1e-6)


def test_region_word_loss_hand_computed_two_images() -> None:
    """Image A: two regions of class 0, word "cat" (0). Image B: one region of class 1, words "cat" (0), "dog" (1)."""
    regions = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    region_labels = torch.tensor([0, 0, 1])
    words = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    word_labels = torch.tensor([0, 0, 1])
    s = 2.0
    sims = (regions @ words.T).tolist()
    positives = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]

    def multi_positive(rows: list[list[float]], pos: list[list[int]]) -> float:
        total = 0.0
        for row, mask in zip(rows, pos):
            log_z = math.log(sum(math.exp(s * v) for v in row))
            total += -sum(s * v - log_z for v, m in zip(row, mask) if m) / sum(mask)
        return total / len(rows)

    transposed = [list(column) for column in zip(*sims)]
    expected = (multi_positive(sims, positives) + multi_positive(transposed, [list(c) for c in zip(*positives)])) / 2
    got = region_word_contrastive_loss(regions, region_labels, words, word_labels, torch.tensor(s))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # rows without any positive are left out; no positive at all gives 0 with a graph
    lonely = region_word_contrastive_loss(regions[:1], torch.tensor([5]), words, word_labels, torch.tensor(s))
    assert lonely.item() == 0.0


def test_region_word_inputs_pick_positive_anchors_and_phrase_tokens() -> None:
    from glipv2.modeling_glipv2_pretraining import region_word_inputs

    matched = torch.tensor([[-1, 0, 0, -1], [1, -1, -1, 0]])
    regions = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)  # feature = 4 * image + anchor
    words = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1) + 100  # feature = 100 + 5 * image + token
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    labels = [
        {
            "boxes": torch.zeros(1, 4),
            "positive_map": torch.tensor([[0, 1, 1, 0, 0.0]]),
            "class_labels": torch.tensor([7]),
        },
        {
            "boxes": torch.zeros(2, 4),
            "positive_map": torch.tensor([[0, 1, 0, 0, 0.0], [0, 0, 1, 1, 1.0]]),  # token 4 is padding
            "class_labels": torch.tensor([3, 7]),
        },
    ]
    r, r_labels, w, w_labels = region_word_inputs(matched, regions, words, mask, labels)
    assert r.flatten().tolist() == [1, 2, 4, 7] and r_labels.tolist() == [7, 7, 7, 3]
    assert w.flatten().tolist() == [101, 102, 106, 107, 108] and w_labels.tolist() == [7, 7, 3, 7, 7]
    # without class labels every box is its own label: positives stay inside the image
    plain = [{k: v for k, v in label.items() if k != "class_labels"} for label in labels]
    _, r_labels, _, w_labels = region_word_inputs(matched, regions, words, mask, plain)
    assert r_labels.tolist() == [-1, -1, -1026, -1025] and w_labels.tolist() == [-1, -1, -1025, -1026, -1026]


DISTRIBUTED_WORKER = textwrap.dedent(
    """
    import os, sys, torch
    import torch.distributed as dist

    def main(rank, world, port, data, out):
        from glipv2.loss import clip_contrastive_loss, region_word_contrastive_loss

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        d = torch.load(data)
        # uneven split of regions: rank 0 holds 3, rank 1 holds 2 (sizes differ between processes)
        r_split = [d["regions"][:3], d["regions"][3:]][rank].clone().requires_grad_()
        r_labels = [d["region_labels"][:3], d["region_labels"][3:]][rank]
        w = d["words"].chunk(world)[rank].clone().requires_grad_()
        w_labels = d["word_labels"].chunk(world)[rank]
        loss = region_word_contrastive_loss(r_split, r_labels, w, w_labels, torch.tensor(3.0))
        loss.backward()
        img = d["images"].chunk(world)[rank].clone().requires_grad_()
        txt = d["texts"].chunk(world)[rank]
        itc = clip_contrastive_loss(img, txt, torch.tensor(5.0))
        itc.backward()
        torch.save({"loss": loss.detach(), "itc": itc.detach(), "grad": r_split.grad, "img_grad": img.grad},
                   f"{out}.{rank}")
        dist.destroy_process_group()

    if __name__ == "__main__":
        import torch.multiprocessing as mp
        mp.spawn(main, args=(2, int(sys.argv[1]), sys.argv[2], sys.argv[3]), nprocs=2)
    """
)


def test_cross_process_contrastive_losses_equal_single_process(tmp_path: pathlib.Path) -> None:
    import socket

    generator = torch.Generator().manual_seed(3)
    data = {
        "regions": F.normalize(torch.randn(5, 4, generator=generator), dim=-1),
        "region_labels": torch.tensor([0, 1, 0, 2, 1]),
        "words": F.normalize(torch.randn(4, 4, generator=generator), dim=-1),
        "word_labels": torch.tensor([1, 0, 2, 3]),
        "images": F.normalize(torch.randn(4, 4, generator=generator), dim=-1),
        "texts": F.normalize(torch.randn(4, 4, generator=generator), dim=-1),
    }
    torch.save(data, tmp_path / "data.pt")
    (tmp_path / "worker.py").write_text(DISTRIBUTED_WORKER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    repo = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, str(tmp_path / "worker.py"), str(port), str(tmp_path / "data.pt"), str(tmp_path / "out")],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=240,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"out.{rank}") for rank in range(2)]
    regions = data["regions"].clone().requires_grad_()
    single = region_word_contrastive_loss(
        regions, data["region_labels"], data["words"], data["word_labels"], torch.tensor(3.0)
    )
    single.backward()
    images = data["images"].clone().requires_grad_()
    single_itc = clip_contrastive_loss(images, data["texts"], torch.tensor(5.0))
    single_itc.backward()
    for rank in ranks:
        assert abs(rank["loss"].item() - single.item()) <= 1e-5
        assert abs(rank["itc"].item() - single_itc.item()) <= 1e-5
    # every process computes the global loss; all_gather's backward sums the processes' gradients, so DDP's
    # average over 2 processes gives exactly the single-process gradient
    torch.testing.assert_close(torch.cat([ranks[0]["grad"], ranks[1]["grad"]]) / 2, regions.grad)
    torch.testing.assert_close(torch.cat([ranks[0]["img_grad"], ranks[1]["img_grad"]]) / 2, images.grad)


# ------------------------------------------------------------------------------------------ captioning
# BERT hidden 8 (tiny-random) is too narrow to learn word order in a few steps; captioning overfits with 32.
CAPTION_TEXT_CONFIG = {
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 256,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


def _caption_batch(processor: Glipv2Processor, captions: list[str], images: list[Image.Image]) -> dict:
    batch = processor(images=images, text=captions)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return {
        "pixel_values": batch["pixel_values"],
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": labels,
    }


def test_causal_mask_has_no_leak(processor: Glipv2Processor) -> None:
    model = Glipv2ForConditionalGeneration(_config()).eval()
    batch = _caption_batch(processor, ["a red square on grey", "a blue disc"], [_scene("red"), _scene("blue")])
    with torch.no_grad():
        base = model(**batch).logits
        for t in range(1, 5):
            changed = batch["input_ids"].clone()
            changed[0, t + 1] = 2000 + t  # change token t+1 of the first caption
            logits = model(**{**batch, "input_ids": changed}).logits
            torch.testing.assert_close(logits[0, : t + 1], base[0, : t + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(logits[0, t + 1], base[0, t + 1])
        # the image is seen: another image changes the first position's prediction
        other = model(**{**batch, "pixel_values": batch["pixel_values"].flip(0)}).logits
        assert not torch.allclose(other[0, 0], base[0, 0])


def test_caption_overfit_greedy_and_beam_reproduce(processor: Glipv2Processor, tmp_path: pathlib.Path) -> None:
    from transformers import pipeline

    torch.manual_seed(0)
    model = Glipv2ForConditionalGeneration(_config(fusion_attention_dropout=0.0, text_config=CAPTION_TEXT_CONFIG))
    captions, images = ["a red square", "a blue circle"], [_scene("red"), _scene("blue", "circle")]
    batch = _caption_batch(processor, captions, images)
    pixel_values = batch.pop("pixel_values")
    with torch.no_grad():  # the image side is text-independent: train the text side on a fixed image memory
        memory = model.image_memory(pixel_values)
    loss = _train(model, lambda: model(**batch, image_memory=memory).loss, steps=45)
    assert loss < 0.1
    greedy = model.generate(pixel_values=pixel_values, max_new_tokens=6)
    beam = model.generate(pixel_values=pixel_values, max_new_tokens=6, num_beams=3)
    decoded = processor.tokenizer.batch_decode(greedy, skip_special_tokens=True)
    assert decoded == captions
    assert processor.tokenizer.batch_decode(beam, skip_special_tokens=True) == captions
    assert greedy[0, 0].item() == processor.tokenizer.cls_token_id
    assert greedy[0, len(processor.tokenizer(captions[0])["input_ids"]) - 1].item() == processor.tokenizer.sep_token_id
    # the stock image-text-to-text pipeline: the prompt's trailing [SEP] is dropped and the caption continues it
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    captioner = pipeline("image-text-to-text", model=str(tmp_path))
    out = captioner(images=_scene("blue", "circle"), text="a", max_new_tokens=5)
    assert out[0]["generated_text"] == "a blue circle"
    with pytest.raises(ValueError, match="more than the text tower's limit of 256"):
        model.generate(image_memory=memory, max_new_tokens=300)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        model.generate(image_memory=memory, max_new_tokens=0)
    padded = processor(text=["a", "a red square"])
    with pytest.raises(ValueError, match="Padded prompts"):
        model.generate(image_memory=memory, input_ids=padded["input_ids"], attention_mask=padded["attention_mask"])


# ------------------------------------------------------------------------------------------ VQA
VQA_DATA = [
    ("red", "square", "what color is the shape?", "red"),
    ("blue", "circle", "what color is the shape?", "blue"),
    ("red", "square", "which shape is it?", "square"),
    ("blue", "circle", "which shape is it?", "circle"),
]


REMOTE_VQA_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["glipv2"] = None
    import numpy as np
    from PIL import Image
    from transformers import pipeline
    vqa = pipeline("visual-question-answering", model=sys.argv[1], trust_remote_code=True)
    assert type(vqa).__module__.startswith("transformers_modules"), type(vqa).__module__
    yy, xx = np.mgrid[:64, :64]
    canvas = np.full((64, 64, 3), 128, dtype=np.uint8)
    canvas[(yy - 32) ** 2 + (xx - 32) ** 2 < 324] = (20, 20, 230)
    print(vqa(Image.fromarray(canvas), sys.argv[2], top_k=1)[0]["answer"])
    """
)


def test_vqa_overfit_accuracy_and_pipeline(processor: Glipv2Processor, tmp_path: pathlib.Path) -> None:
    from transformers import pipeline

    model = Glipv2ForQuestionAnswering(_config(fusion_attention_dropout=0.0, text_config=_text_without_dropout()))
    images = [_scene(color, shape) for color, shape, _, _ in VQA_DATA]
    batch = processor(images=images, text=[q for _, _, q, _ in VQA_DATA])
    answers = torch.tensor([ANSWERS.index(a) for *_, a in VQA_DATA])
    labels = vqa_targets([[a] for a in answers.tolist()], [[1.0]] * 4, len(ANSWERS))
    _train(model, lambda: model(**batch, labels=labels).loss, steps=20, lr=3e-3)
    with torch.no_grad():
        logits = model(**batch).logits
    assert (logits.argmax(-1) == answers).float().mean().item() == 1.0
    as_tuple = model(**batch, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[1].shape == (4, len(ANSWERS))

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    vqa = pipeline("visual-question-answering", model=str(tmp_path))
    for color, shape, question, answer in VQA_DATA:
        result = vqa(_scene(color, shape), question, top_k=3)
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


# ------------------------------------------------------------------------------------------ zero-shot
def test_zero_shot_overfit_stock_pipeline_and_templates(processor: Glipv2Processor, tmp_path: pathlib.Path) -> None:
    from transformers import pipeline

    model = Glipv2ForZeroShotImageClassification(_config(text_config=_text_without_dropout()))
    assert model.contrastive_head.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    colors = ["red", "blue", "green"]
    batch = processor(images=[_scene(c) for c in colors], text=[f"a photo of a {c} square." for c in colors])
    # locked-image tuning (LiT): the random image tower keeps the three images apart, the rest learns to match
    model.model.vision_backbone.requires_grad_(False)
    model.model.fpn.requires_grad_(False)
    _train(model, lambda: model(**batch, return_loss=True).loss, steps=30, lr=3e-3)
    with torch.no_grad():
        out = model(**batch)
    assert out.logits_per_image.argmax(-1).tolist() == [0, 1, 2]
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.T)
    assert out.image_embeds.norm(dim=-1).sub(1).abs().max() < 1e-5

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    classifier = pipeline("zero-shot-image-classification", model=str(tmp_path))
    for color in colors:
        result = classifier(_scene(color), candidate_labels=colors, hypothesis_template="a photo of a {} square.")
        assert result[0]["label"] == color
    ranked = classify(model, processor, [_scene(c) for c in colors], colors, templates=["a photo of a {} square."])
    assert [r[0]["label"] for r in ranked] == colors
    weights = build_zero_shot_classifier(model, processor, colors, templates="simple")
    assert weights.shape == (3, model.config.projection_dim)
    torch.testing.assert_close(weights.norm(dim=-1), torch.ones(3))
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80 and len(SIMPLE_TEMPLATES) == 7
    with pytest.raises(ValueError, match="class_names is empty"):
        classify(model, processor, [_scene("red")], [])
    with pytest.raises(ValueError, match="Unknown template set 'nope'"):
        resolve_templates("nope")
    with pytest.raises(ValueError, match="No candidate texts"):
        model(input_ids=torch.zeros(0, 3, dtype=torch.long), pixel_values=batch["pixel_values"])


# ------------------------------------------------------------------------------------------ pre-training
PROMPT = "red square. blue circle"


def _pretraining_inputs(processor: Glipv2Processor) -> tuple[dict, dict]:
    """Two images, one prompt each, one box each (class 0 / class 1), MLM on token 2, VQA soft scores."""
    batch = dict(processor(images=[_scene("red"), _scene("blue", "circle")], text=[PROMPT, PROMPT]))
    batch.pop("token_type_ids", None)
    positive_map = processor.positive_map(PROMPT, [[(0, 10)], [(12, 23)]])
    box = torch.tensor([[0.5, 0.5, 0.5625, 0.5625]])
    labels = [
        {"boxes": box, "positive_map": positive_map[:1], "class_labels": torch.tensor([0])},
        {"boxes": box, "positive_map": positive_map[1:], "class_labels": torch.tensor([1])},
    ]
    mlm_labels = torch.full_like(batch["input_ids"], -100)
    mlm_labels[:, 2] = batch["input_ids"][:, 2]
    masked_ids = batch["input_ids"].clone()
    masked_ids[:, 2] = processor.tokenizer.mask_token_id
    targets = {
        "labels": labels,
        "mlm_labels": mlm_labels,
        "vqa_labels": vqa_targets([[0], [1]], [[1.0], [0.6]], len(ANSWERS)),
        "return_itc_loss": True,
    }
    return {**batch, "input_ids": masked_ids}, targets


def test_pretraining_losses_by_name_with_caller_weights(processor: Glipv2Processor) -> None:
    model = Glipv2ForPreTraining(_config()).eval()
    inputs, targets = _pretraining_inputs(processor)
    out = model(**inputs, **targets)
    names = {"loss_cls", "loss_box", "loss_centerness", "loss_region_word", "loss_mlm", "loss_itc", "loss_vqa"}
    assert set(out.loss_dict) == names
    assert all(torch.isfinite(v) and v > 0 for v in out.loss_dict.values())
    expected = sum(model.loss_weights[name] * value for name, value in out.loss_dict.items())
    torch.testing.assert_close(out.loss, expected)
    assert model.loss_weights["loss_box"] == 2.0 and model.loss_weights["loss_mlm"] == 1.0
    model.loss_weights["loss_mlm"] = 0.0
    again = model(**inputs, **targets)
    torch.testing.assert_close(again.loss, expected - out.loss_dict["loss_mlm"])
    # MLM loss is the CE of the MLM head's logits at the masked position; VQA and ITC match their functions
    torch.testing.assert_close(out.loss_dict["loss_mlm"], mlm_loss(out.mlm_logits, targets["mlm_labels"]))
    torch.testing.assert_close(out.loss_dict["loss_vqa"], vqa_soft_score_loss(out.vqa_logits, targets["vqa_labels"]))
    scale = model.contrastive_head.scale()
    torch.testing.assert_close(
        out.loss_dict["loss_itc"], clip_contrastive_loss(out.image_embeds, out.text_embeds, scale)
    )
    again.loss.backward()
    for head in ("grounding_head", "vqa_head", "contrastive_head"):
        grads = [p.grad for p in getattr(model, head).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), head
    assert model.mlm_head.dense.weight.grad.abs().sum() == 0  # its weight is 0 now
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)


def test_new_heads_initialisation_and_tying() -> None:
    model = Glipv2ForPreTraining(_config())
    words = model.model.text_model.embeddings.word_embeddings.weight
    assert model.caption_head.decoder.weight is words and model.mlm_head.decoder.weight is words
    assert model.get_output_embeddings() is model.mlm_head.decoder
    assert model.contrastive_head.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    assert model.contrastive_head.scale().item() == pytest.approx(1 / 0.07, rel=1e-4)
    with torch.no_grad():
        model.contrastive_head.logit_scale.fill_(10.0)
    assert model.contrastive_head.scale().item() == pytest.approx(100.0)  # clamped at 100
    assert model.caption_head.bias.abs().sum() == 0 and model.mlm_head.bias.abs().sum() == 0
    projection = model.contrastive_head.visual_projection.weight
    assert projection.std().item() == pytest.approx(projection.shape[1] ** -0.5, rel=0.2)
    assert model.vqa_head.classifier.weight.std().item() == pytest.approx(0.02, rel=0.3)


def _task_outputs(model: torch.nn.Module, inputs: dict) -> list[torch.Tensor]:
    """The task output of each class (what must survive a checkpoint round trip)."""
    with torch.no_grad():
        if isinstance(model, Glipv2ForConditionalGeneration):
            return [model(**inputs).logits]
        if isinstance(model, Glipv2ForZeroShotImageClassification):
            out = model(**inputs)
            return [out.image_embeds, out.text_embeds, out.logits_per_image]
        if isinstance(model, Glipv2ForQuestionAnswering):
            return [model(**inputs).logits]
        out = model(**inputs)
        return [out.logits, out.pred_boxes, out.centerness]


def test_pretraining_checkpoint_loads_into_every_task_class(processor: Glipv2Processor, tmp_path) -> None:  # noqa: ANN001
    from transformers import (
        AutoModelForImageTextToText,
        AutoModelForPreTraining,
        AutoModelForVisualQuestionAnswering,
        AutoModelForZeroShotImageClassification,
        AutoModelForZeroShotObjectDetection,
    )

    pretraining = Glipv2ForPreTraining(_config()).eval()
    inputs, _ = _pretraining_inputs(processor)
    pretraining.save_pretrained(tmp_path)
    with torch.no_grad():
        out = pretraining(**inputs)
        memory = encode_image_memory(pretraining.model, inputs["pixel_values"])
        text = causal_text_features(pretraining.model, memory, inputs["input_ids"], inputs["attention_mask"])
        caption_logits = pretraining.caption_head(text)
    expected = {
        Glipv2ForGrounding: [out.logits, out.pred_boxes, out.centerness],
        Glipv2ForQuestionAnswering: [out.vqa_logits],
        Glipv2ForConditionalGeneration: [caption_logits],
        Glipv2ForZeroShotImageClassification: [out.image_embeds, out.text_embeds],
    }
    for auto in (
        AutoModelForZeroShotObjectDetection,
        AutoModelForVisualQuestionAnswering,
        AutoModelForImageTextToText,
        AutoModelForZeroShotImageClassification,
    ):
        model = auto.from_pretrained(tmp_path).eval()
        assert type(model) in expected, type(model)
        for got, want in zip(_task_outputs(model, inputs), expected[type(model)]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        # and a round trip through the task class itself
        model.save_pretrained(tmp_path / type(model).__name__)
        again = type(model).from_pretrained(tmp_path / type(model).__name__).eval()
        for got, want in zip(_task_outputs(again, inputs), _task_outputs(model, inputs)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        first = model(**inputs, return_dict=False)[0]
        assert isinstance(first, torch.Tensor)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is Glipv2ForPreTraining
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).vqa_logits, out.vqa_logits, rtol=1e-5, atol=1e-6)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["glipv2"] = None  # glipv2 cannot be imported: only the folders' own code may be used
    import torch
    from transformers import (AutoModelForImageTextToText, AutoModelForVisualQuestionAnswering,
                              AutoModelForZeroShotImageClassification, AutoModelForPreTraining)
    root, inputs = sys.argv[1], torch.load(sys.argv[2])
    results = {}
    with torch.no_grad():
        for name, auto in [
            ("vqa", AutoModelForVisualQuestionAnswering),
            ("caption", AutoModelForImageTextToText),
            ("zero_shot", AutoModelForZeroShotImageClassification),
            ("pretraining", AutoModelForPreTraining),
        ]:
            model = auto.from_pretrained(f"{root}/{name}", trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            if name == "caption":
                results[name] = model(**inputs).logits
                pixels = inputs["pixel_values"]
                results["generated"] = model.generate(pixel_values=pixels, max_new_tokens=3, num_beams=2)
            elif name == "zero_shot":
                results[name] = model(**inputs).logits_per_image
            else:
                results[name] = model(**inputs).vqa_logits if name == "pretraining" else model(**inputs).logits
    torch.save(results, sys.argv[3])
    """
)


def test_remote_code_loads_understanding_classes(processor: Glipv2Processor, tmp_path: pathlib.Path) -> None:
    pretraining = Glipv2ForPreTraining(_config()).eval()
    pretraining.save_pretrained(tmp_path / "pretraining")
    models = {
        "vqa": Glipv2ForQuestionAnswering.from_pretrained(tmp_path / "pretraining").eval(),
        "caption": Glipv2ForConditionalGeneration.from_pretrained(tmp_path / "pretraining").eval(),
        "zero_shot": Glipv2ForZeroShotImageClassification.from_pretrained(tmp_path / "pretraining").eval(),
    }
    for name, model in models.items():
        model.save_pretrained(tmp_path / name)
    assert {"modeling_glipv2_vqa.py", "loss.py", "heads.py"} <= {p.name for p in (tmp_path / "vqa").iterdir()}
    inputs, _ = _pretraining_inputs(processor)
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path), str(tmp_path / "inputs.pt"), str(tmp_path / "o")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "o")
    with torch.no_grad():
        torch.testing.assert_close(remote["vqa"], models["vqa"](**inputs).logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(remote["caption"], models["caption"](**inputs).logits, rtol=1e-5, atol=1e-6)
        zero_shot = models["zero_shot"](**inputs).logits_per_image
        torch.testing.assert_close(remote["zero_shot"], zero_shot, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(remote["pretraining"], pretraining(**inputs).vqa_logits, rtol=1e-5, atol=1e-6)
        generated = models["caption"].generate(pixel_values=inputs["pixel_values"], max_new_tokens=3, num_beams=2)
    assert torch.equal(remote["generated"], generated)


def test_gradient_checkpointing_same_gradients_for_captioning_and_vqa(processor: Glipv2Processor) -> None:
    config = _config(text_config=_text_without_dropout(), fusion_attention_dropout=0.0)
    batch = _caption_batch(processor, ["a red square", "a blue disc here"], [_scene("red"), _scene("blue")])
    answers = vqa_targets([[0], [1]], [[1.0], [1.0]], len(ANSWERS))

    def grads(model_class: type, checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = model_class(config).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        if model_class is Glipv2ForConditionalGeneration:
            model(**batch).loss.backward()
        else:
            model(**{k: v for k, v in batch.items() if k != "labels"}, labels=answers).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    for model_class in (Glipv2ForConditionalGeneration, Glipv2ForQuestionAnswering):
        plain, checkpointed = grads(model_class, False), grads(model_class, True)
        assert plain.keys() == checkpointed.keys() and any("fusion.layers.1" in n for n in plain)
        for name in plain:
            torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
