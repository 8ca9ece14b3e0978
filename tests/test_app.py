"""The web demo (`tasks/app.py`, `scripts/app.py`) and its Space (`scripts/push_to_hub.py --space`).

The handlers are checked on values against the library's pipelines run separately; then the page is served on
127.0.0.1 and driven in Debian's headless chromium through selenium (skipped only where chromium or chromedriver is
absent): an image is uploaded, labels typed, the run clicked, and the annotated picture the page shows is compared
pixel for pixel with the handler's; the VQA tab's answer likewise. Screenshots go to the test's folder.
Everything runs offline on a tiny model built from its config.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from transformers import pipeline

from glipv2 import Glipv2ForGrounding, Glipv2ForPreTraining
from tasks.app import APP_TASKS, Glipv2WebDemo, build_app, launch, unavailable_tasks
from tasks.visualize import MIN_SIDE, PALETTE, draw_detections
from tests.conftest import bert_processor, tiny_config
from tests.test_auto_map import _scene

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ANSWERS = ["red", "blue", "two"]
LABELS = "red square, blue circle"
QUESTION = "what colour is the square?"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An all-heads checkpoint with a mask head and answers, and a grounding-only one (no VQA, caption, contrastive
    or mask head), each saved with its processor as `save_pretrained` writes them."""
    root = tmp_path_factory.mktemp("app_models")
    processor = bert_processor(64)
    torch.manual_seed(0)
    config = tiny_config(
        id2label=dict(enumerate(ANSWERS)), label2id={a: i for i, a in enumerate(ANSWERS)}, use_mask_head=True
    )
    Glipv2ForPreTraining(config).save_pretrained(root / "all")
    Glipv2ForGrounding(tiny_config()).save_pretrained(root / "grounding")
    for name in ("all", "grounding"):
        processor.save_pretrained(root / name)
    return {"all": root / "all", "grounding": root / "grounding"}


@pytest.fixture(scope="module")
def demo(folders: dict[str, Path]) -> Glipv2WebDemo:
    return Glipv2WebDemo(str(folders["all"]))


# ------------------------------------------------------------------------------------------ availability
def test_unavailable_tasks_name_what_the_checkpoint_lacks(folders: dict[str, Path]) -> None:
    full = json.loads((folders["all"] / "config.json").read_text())
    assert unavailable_tasks(full) == {}
    reasons = unavailable_tasks(json.loads((folders["grounding"] / "config.json").read_text()))
    assert set(reasons) == {
        "visual-question-answering",
        "image-captioning",
        "zero-shot-image-classification",
        "instance-segmentation",
        "referring-segmentation",
    }
    assert reasons["instance-segmentation"] == "the checkpoint has no mask head (config.use_mask_head is false)."
    assert "a VQA head" in reasons["visual-question-answering"]
    assert "AutoModelForZeroShotImageClassification" in reasons["zero-shot-image-classification"]
    older = {key: value for key, value in full.items() if key != "custom_pipelines"}
    assert "older glipv2" in unavailable_tasks(older)["open-vocabulary-detection"]


def test_an_unavailable_task_shows_its_reason_instead_of_inputs(folders: dict[str, Path]) -> None:
    grounding = Glipv2WebDemo(str(folders["grounding"]))
    app = build_app(grounding)
    components = app.config["components"]
    ids = {c["props"].get("elem_id") for c in components}
    assert {"detect-image", "ground-image", "vqa-unavailable", "segment-unavailable"} <= ids
    assert not {"vqa-image", "segment-image", "refer-image", "caption-image", "classify-image"} & ids
    texts = {c["props"].get("elem_id"): c["props"].get("value") for c in components}
    assert texts["segment-unavailable"] == (
        "**Unavailable:** the checkpoint has no mask head (config.use_mask_head is false)."
    )
    with pytest.raises(ValueError, match="referring-segmentation is unavailable: the checkpoint has no mask head"):
        grounding.refer(_scene(), "the red square")


# ------------------------------------------------------------------------------------------ drawing
def test_labels_stay_readable_over_other_boxes() -> None:
    """No box outline crosses a tag (every tag is drawn after every box), tags do not cover each other, light tags
    get black text and a label too long for the image is shortened."""
    from tasks.visualize import place_tag, text_colour

    image = Image.new("RGB", (MIN_SIDE, MIN_SIDE), (0, 0, 0))
    first = {"label": "person", "score": 0.9, "box": {"xmin": 50, "ymin": 60, "xmax": 300, "ymax": 300}}
    crossing = {"label": "hat", "score": 0.5, "box": {"xmin": 40, "ymin": 45, "xmax": 200, "ymax": 120}}
    drawn = np.asarray(draw_detections(image, [first, crossing]))
    tag = drawn[45:59, 52:120].reshape(-1, 3)  # the first tag, above its box, where the second box's top edge runs
    colours = {tuple(pixel) for pixel in tag}
    assert PALETTE[0] in colours and PALETTE[1] not in colours
    assert text_colour(PALETTE[0]) == (255, 255, 255) and text_colour(PALETTE[4]) == (0, 0, 0)  # blue, orange
    placed = [(0.0, 0.0, 100.0, 20.0)]
    assert place_tag((0, 30, 50, 80), (100, 20), (384, 384), placed) == (0, 30, 100, 50)  # below the first tag
    assert (
        place_tag((0, 370, 50, 384), (100, 20), (384, 384), [(0.0, 364.0, 100.0, 384.0)])[1] == 330
    )  # up at the bottom
    long = {"label": "word " * 100, "score": 0.5, "box": {"xmin": 0, "ymin": 100, "xmax": 50, "ymax": 150}}
    drawn = np.asarray(draw_detections(image, [long]))
    assert (drawn[:, -3:] == 0).all()  # the shortened tag ends before the image's right edge


# ------------------------------------------------------------------------------------------ handlers
def test_detection_draws_the_pipeline_boxes_and_tabulates_its_scores(demo: Glipv2WebDemo, folders: dict) -> None:
    image = _scene()
    expected = pipeline("open-vocabulary-detection", model=str(folders["all"]))(
        image, candidate_labels=["red square", "blue circle"], threshold=0.0, max_detections=5
    )
    drawn, rows = demo.detect(image, " red square,, blue circle ", 0.0, 5)
    assert len(expected) == 5
    assert rows == [
        [d["label"], d["score"], *(round(d["box"][k], 1) for k in ("xmin", "ymin", "xmax", "ymax"))] for d in expected
    ]
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(draw_detections(image, expected)))
    # one detection: its box's left edge is drawn in the first palette colour where the pipeline put it
    drawn, (single,) = demo.detect(image, LABELS, 0.0, 1)
    drawn = np.asarray(drawn)
    factor = MIN_SIDE / max(image.size)
    assert drawn.shape[:2] == (round(image.height * factor), round(image.width * factor))
    xmin, ymin, ymax = single[2] * factor, single[3] * factor, single[5] * factor
    x = min(int(np.ceil(xmin)), drawn.shape[1] - 1)
    assert tuple(drawn[int((ymin + ymax) / 2), x]) == PALETTE[0]


def test_grounding_vqa_captioning_and_classification_return_the_pipeline_values(
    demo: Glipv2WebDemo, folders: dict
) -> None:
    image, model = _scene(), str(folders["all"])
    caption = "a red square and a blue circle"
    grounded = pipeline("phrase-grounding", model=model)(
        image, caption, phrases=["a red square", "a blue circle"], threshold=0.0
    )
    drawn, rows = demo.ground(image, caption, "a red square, a blue circle", 0.0)
    assert [row[:2] for row in rows] == [[g["phrase"], g["boxes"][0]["score"]] for g in grounded]
    found = [{"label": g["phrase"], **g["boxes"][0]} for g in grounded]
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(draw_detections(image, found)))

    answers = pipeline("visual-question-answering", model=model)(image, QUESTION, top_k=3)
    assert demo.answer(image, QUESTION, 3) == (answers[0]["answer"], {a["answer"]: a["score"] for a in answers})
    assert set(demo.answer(image, QUESTION, 3)[1]) == set(ANSWERS)

    text = pipeline("image-captioning", model=model)(image, max_new_tokens=4)[0]["generated_text"]
    assert demo.caption(image, "", 4) == text and text

    scores = demo.classify(image, "a cat, a dog")
    ranked = pipeline("zero-shot-image-classification", model=model)(image, candidate_labels=["a cat", "a dog"])
    assert scores == {r["label"]: r["score"] for r in ranked}
    assert sum(scores.values()) == pytest.approx(1.0)


def test_segmentation_handlers_draw_the_pipeline_masks(demo: Glipv2WebDemo, folders: dict) -> None:
    image, model = _scene(), str(folders["all"])
    instances = pipeline("instance-segmentation", model=model)(
        image, candidate_labels=["red square"], threshold=0.0, top_k=2
    )
    drawn, rows = demo.segment(image, "red square", 0.0, 2)
    assert [row[:2] for row in rows] == [[i["label"], i["score"]] for i in instances]
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(draw_detections(image, instances)))
    plain = np.asarray(draw_detections(image, []))
    inside = np.asarray(instances[0]["mask"].resize(plain.shape[1::-1], Image.Resampling.NEAREST)) > 0
    assert inside.any() and (np.asarray(drawn)[inside] != plain[inside]).any(axis=1).mean() > 0.9  # tinted

    referred = pipeline("referring-segmentation", model=model)(image, "the red square")
    drawn, rows = demo.refer(image, " the red square ")
    assert rows == [["the red square", referred["score"], *(round(referred["box"][k], 1) for k in referred["box"])]]
    entry = {"label": "the red square", "score": referred["score"], "box": referred["box"], "mask": referred["mask"]}
    np.testing.assert_array_equal(np.asarray(drawn), np.asarray(draw_detections(image, [entry])))


def test_bad_inputs_are_explained(demo: Glipv2WebDemo) -> None:
    with pytest.raises(ValueError, match="Upload an image first"):
        demo.detect(None, LABELS)
    with pytest.raises(ValueError, match="at least one class name"):
        demo.segment(_scene(), " , ")
    with pytest.raises(ValueError, match="question is empty"):
        demo.answer(_scene(), "  ")


# ------------------------------------------------------------------------------------------ the page in a browser
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def outbound(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host this process resolves or connects to (the app must reach nothing but loopback)."""
    seen: list[str] = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def record_connect(self: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple):
            seen.append(str(address[0]))
        return connect(self, address)

    def record_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(host))
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", record_connect)
    monkeypatch.setattr(socket, "getaddrinfo", record_getaddrinfo)
    return seen


@pytest.fixture
def served(demo: Glipv2WebDemo, outbound: list[str]) -> Iterator[str]:
    """The page of the all-heads model served on a free loopback port (in this process's threads)."""
    app = build_app(demo)
    port = _free_port()
    launch(app, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        app.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"the browser test needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _fill(driver: Any, selector: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.CSS_SELECTOR, selector)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE, text, Keys.TAB)  # Tab: Gradio takes a number input's value on blur


def _shown_image(driver: Any, selector: str, base: str) -> np.ndarray:
    from selenium.webdriver.common.by import By

    source = driver.find_element(By.CSS_SELECTOR, selector).get_attribute("src")
    with urllib.request.urlopen(source if source.startswith("http") else base + source, timeout=10) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))


def test_the_page_in_a_headless_browser(
    served: str, browser: Any, demo: Glipv2WebDemo, outbound: list[str], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image_path = tmp_path / "scene.png"
    _scene().save(image_path)
    expected_image, expected_rows = demo.detect(_scene(), LABELS, 0.0, 20)
    wait = WebDriverWait(browser, 60)

    browser.get(served)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#detect-image input[type=file]"))
    tabs = [tab.text for tab in browser.find_elements(By.CSS_SELECTOR, "[role=tab]")]
    assert tabs == [task.title for task in APP_TASKS]
    browser.find_element(By.CSS_SELECTOR, "#detect-image input[type=file]").send_keys(str(image_path))
    _fill(browser, "#detect-labels textarea", LABELS)
    _fill(browser, "#detect-threshold input[type=number]", "0")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#detect-image img"))  # the upload has arrived
    browser.find_element(By.CSS_SELECTOR, "#detect-run").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#detect-output img"))
    wait.until(lambda d: expected_rows[0][0] in d.find_element(By.CSS_SELECTOR, "#detect-table").text)
    np.testing.assert_array_equal(_shown_image(browser, "#detect-output img", served), np.asarray(expected_image))
    table = browser.find_element(By.CSS_SELECTOR, "#detect-table").text
    assert str(expected_rows[0][1]) in table and "blue circle" in table
    screenshot = tmp_path / "app_detection.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot of the detection tab: {screenshot}")

    answer, _ = demo.answer(_scene(), QUESTION)
    next(tab for tab in browser.find_elements(By.CSS_SELECTOR, "[role=tab]") if tab.text == "VQA").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#vqa-image input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#vqa-image input[type=file]").send_keys(str(image_path))
    _fill(browser, "#vqa-text textarea", QUESTION)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#vqa-image img"))
    browser.find_element(By.CSS_SELECTOR, "#vqa-run").click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#vqa-answer textarea").get_attribute("value") == answer)
    screenshot = tmp_path / "app_vqa.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot of the VQA tab: {screenshot}")
    assert set(outbound) <= LOOPBACK, f"the app reached beyond loopback: {sorted(set(outbound) - LOOPBACK)}"


# ------------------------------------------------------------------------------------------ the Space
def test_push_to_hub_space_writes_a_space_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import gradio

    from scripts.push_to_hub import main
    from tasks.publish import SPACE_COLOURS, space_requirements

    folder = tmp_path / "space"
    repo = "alice/glipv2-tiny"
    assert main(["--repo_id", repo, "--space", "--space_dir", str(folder), "--dry-run"]) == 0
    assert "would upload the Space alice/glipv2-tiny-demo (6 files" in capsys.readouterr().out
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "app.py",
        "requirements.txt",
        "tasks/__init__.py",
        "tasks/app.py",
        "tasks/visualize.py",
    ]
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert {key: front[key] for key in ("sdk", "sdk_version", "app_file", "models", "title")} == {
        "sdk": "gradio",
        "sdk_version": gradio.__version__,
        "app_file": "app.py",
        "models": [repo],
        "title": "glipv2-tiny",
    }
    assert front["colorFrom"] in SPACE_COLOURS and front["colorTo"] in SPACE_COLOURS and front["emoji"]
    assert len(front["short_description"]) <= 60
    requirements = (folder / "requirements.txt").read_text().split()
    assert requirements == space_requirements() and any(r.startswith("transformers") for r in requirements)
    assert not any("extra" in r for r in requirements)
    for name in ("app.py", "visualize.py"):
        assert (folder / "tasks" / name).read_bytes() == (REPO / "tasks" / name).read_bytes()
    source = (folder / "app.py").read_text()
    compile(source, "app.py", "exec")
    assert f'MODEL = "{repo}"' in source and '"--trust-remote-code"' in source


def test_the_space_app_runs_without_glipv2_or_the_repository(tmp_path: Path, folders: dict[str, Path]) -> None:
    """The Space folder's own `tasks` package (not the repository's) with glipv2 not importable: the model runs its
    own code, and detection gives the values of the local handler."""
    import subprocess

    from tasks.publish import write_space

    folder = tmp_path / "space"
    write_space(folder, "alice/glipv2-tiny")
    _scene().save(tmp_path / "scene.png")
    script = (
        "import sys, json\n"
        "sys.modules['glipv2'] = None\n"
        "import os, tasks.app\n"
        "from PIL import Image\n"
        f"assert os.path.abspath(tasks.app.__file__).startswith({str(folder)!r}), tasks.app.__file__\n"
        f"demo = tasks.app.Glipv2WebDemo({str(folders['all'])!r}, trust_remote_code=True)\n"
        f"image, rows = demo.detect(Image.open({str(tmp_path / 'scene.png')!r}), {LABELS!r}, 0.0, 5)\n"
        "assert type(demo.pipeline('open-vocabulary-detection')).__module__.startswith('transformers_modules')\n"
        f"image.save({str(tmp_path / 'remote.png')!r})\n"
        "print(json.dumps(rows))\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    started = time.time()
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    drawn, rows = Glipv2WebDemo(str(folders["all"])).detect(_scene(), LABELS, 0.0, 5)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == rows
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "remote.png")), np.asarray(drawn))
    print(f"the Space's app in a process without glipv2: {time.time() - started:.1f} s")
