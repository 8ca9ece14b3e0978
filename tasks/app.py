"""The web demo: every task of one GLIPv2 checkpoint on one Gradio page (`scripts/app.py`, and the app of a Hub Space
written by `scripts/push_to_hub.py --space`).

The page has a tab per task: open-vocabulary detection, phrase grounding, visual question answering, captioning,
zero-shot image classification, instance segmentation and referring segmentation. Each tab runs the task's
transformers pipeline (`transformers.pipeline(<task>, model=...)`, the tasks `import glipv2` registers, or the
checkpoint's own code with `trust_remote_code`), so the app is one more user of the library; pictures are drawn by
`tasks.visualize.draw_detections`, the helper behind the demo's report. A task the checkpoint cannot serve (its head
is missing: no `custom_pipelines` entry in its config, or no mask head) shows why instead of its inputs.

Handlers ([`Glipv2WebDemo`] methods) are plain functions of images and strings: they raise `ValueError` for a bad
input, which the page shows as an error message. Pipelines are built on first use and kept.

This module imports nothing of the repository but `tasks.visualize`: a Space holds copies of both files (see
`tasks.publish.write_space`) and runs where neither glipv2 nor this repository is installed.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tasks.visualize import draw_detections

# Gradio reports usage and checks for updates over the network unless told not to: the app runs offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

try:  # registers glipv2's classes and pipeline tasks; without it a checkpoint runs its own code (trust_remote_code)
    import glipv2  # noqa: F401
except ImportError:
    pass

DEFAULT_MODEL = os.path.join("demo_output", "model")
TABLE_HEADERS = ["label", "score", "xmin", "ymin", "xmax", "ymax"]
# System fonts only: the default theme's Google font would make every page load reach the internet.
FONTS = ("ui-sans-serif", "system-ui", "sans-serif")
MONO_FONTS = ("ui-monospace", "monospace")


@dataclass(frozen=True)
class AppTask:
    """One tab of the page.

    Attributes:
        key: the tab's id, prefix of its components' `elem_id`s.
        title: the tab's label.
        pipeline: the transformers pipeline task it runs.
        handler: the [`Glipv2WebDemo`] method that runs it.
        needs: what the checkpoint must hold for it (in the "unavailable" message).
        description: one line at the top of the tab.
    """

    key: str
    title: str
    pipeline: str
    handler: str
    needs: str
    description: str


APP_TASKS: tuple[AppTask, ...] = (
    AppTask(
        "detect",
        "Detection",
        "open-vocabulary-detection",
        "detect",
        "a grounding head",
        "Open-vocabulary detection: boxes of any class names.",
    ),
    AppTask(
        "ground",
        "Grounding",
        "phrase-grounding",
        "ground",
        "a grounding head",
        "Phrase grounding: the box of each phrase of a caption.",
    ),
    AppTask(
        "vqa",
        "VQA",
        "visual-question-answering",
        "answer",
        "a VQA head",
        "Visual question answering: an answer from the model's answer vocabulary.",
    ),
    AppTask(
        "caption", "Captioning", "image-captioning", "caption", "a caption head", "Captioning: what the image shows."
    ),
    AppTask(
        "classify",
        "Classification",
        "zero-shot-image-classification",
        "classify",
        "a contrastive head",
        "Zero-shot image classification: how well each label describes the image.",
    ),
    AppTask(
        "segment",
        "Segmentation",
        "instance-segmentation",
        "segment",
        "a grounding head and a mask head",
        "Instance segmentation: a mask for each instance of any class names.",
    ),
    AppTask(
        "refer",
        "Referring segmentation",
        "referring-segmentation",
        "refer",
        "a grounding head and a mask head",
        "Referring segmentation: the mask of what an expression describes.",
    ),
)
# transformers' own pipeline tasks: served when the config's auto_map has the pipeline's model class.
STOCK_TASK_CLASSES = {"zero-shot-image-classification": "AutoModelForZeroShotImageClassification"}
MASK_TASKS = ("instance-segmentation", "referring-segmentation")


def unavailable_tasks(config: dict[str, Any]) -> dict[str, str]:
    """`{pipeline task: why the checkpoint cannot serve it}` for the tasks of [`APP_TASKS`] that the checkpoint
    whose `config.json` is `config` cannot serve.

    `save_pretrained` writes into `config.json` an `auto_map` entry for every task class whose heads the checkpoint
    holds and `custom_pipelines` for glipv2's pipelines those classes serve: the app reads them (and
    `use_mask_head` for a clearer message) from the file itself, as a loaded `Glipv2Config` drops
    `custom_pipelines` where glipv2 is installed.
    """
    custom = config.get("custom_pipelines")
    auto_map = config.get("auto_map") or {}
    reasons = {}
    for task in APP_TASKS:
        if task.pipeline in STOCK_TASK_CLASSES:
            if STOCK_TASK_CLASSES[task.pipeline] not in auto_map:
                reasons[task.pipeline] = (
                    f"the checkpoint has no {task.needs.removeprefix('a ')} "
                    f"(config.json's auto_map has no {STOCK_TASK_CLASSES[task.pipeline]})."
                )
        elif task.pipeline in MASK_TASKS and not config.get("use_mask_head", False):
            reasons[task.pipeline] = "the checkpoint has no mask head (config.use_mask_head is false)."
        elif custom is None:
            reasons[task.pipeline] = (
                "config.json lists no custom_pipelines (saved by an older glipv2: re-save it with save_pretrained)."
            )
        elif task.pipeline not in custom:
            reasons[task.pipeline] = (
                f"the checkpoint does not serve the {task.pipeline} pipeline (it needs {task.needs}; "
                "config.json's custom_pipelines does not list it)."
            )
    return reasons


def _labels(text: str | None, what: str) -> list[str]:
    """Comma-separated names -> a list without blanks (ValueError when empty)."""
    labels = [label.strip() for label in (text or "").split(",") if label.strip()]
    if not labels:
        raise ValueError(f"Give at least one {what}, separated by commas.")
    return labels


def _image(image: Image.Image | None) -> Image.Image:
    if image is None:
        raise ValueError("Upload an image first.")
    return image.convert("RGB")


def _box_row(label: str, score: float, box: dict[str, float] | None) -> list[Any]:
    coordinates = [round(float(box[key]), 1) for key in TABLE_HEADERS[2:]] if box else [None] * 4
    return [label, round(float(score), 4), *coordinates]


class Glipv2WebDemo:
    """The handlers of the page for one checkpoint.

    Args:
        model: a folder written by `save_pretrained` (with its processor) or a Hub repository id.
        trust_remote_code: run the checkpoint's own code (needed where glipv2 is not installed).
        device: passed to `transformers.pipeline` (e.g. "cpu", "cuda:0"); None lets transformers choose.
    """

    def __init__(self, model: str, trust_remote_code: bool = False, device: str | None = None) -> None:
        from transformers import PretrainedConfig

        self.model = model
        self.trust_remote_code = trust_remote_code
        self.device = device
        self.config, _ = PretrainedConfig.get_config_dict(model)  # config.json as saved (a folder or the Hub)
        self.unavailable = unavailable_tasks(self.config)
        self._pipelines: dict[str, Any] = {}
        self._lock = threading.Lock()

    def pipeline(self, task: str) -> Any:
        """The transformers pipeline of `task` for the checkpoint, built on first use (ValueError if unavailable)."""
        if task in self.unavailable:
            raise ValueError(f"{task} is unavailable: {self.unavailable[task]}")
        with self._lock:
            if task not in self._pipelines:
                from transformers import pipeline

                self._pipelines[task] = pipeline(
                    task, model=self.model, trust_remote_code=self.trust_remote_code, device=self.device
                )
            return self._pipelines[task]

    def detect(
        self, image: Image.Image | None, labels: str, threshold: float = 0.3, max_detections: int = 20
    ) -> tuple[Image.Image, list[list[Any]]]:
        """Open-vocabulary detection of comma-separated `labels`: the image with the boxes drawn, and the rows
        `[label, score, xmin, ymin, xmax, ymax]` (pixels of the uploaded image), best first."""
        image = _image(image)
        found = self.pipeline("open-vocabulary-detection")(
            image,
            candidate_labels=_labels(labels, "class name"),
            threshold=float(threshold),
            max_detections=int(max_detections),
        )
        return draw_detections(image, found), [_box_row(d["label"], d["score"], d["box"]) for d in found]

    def ground(
        self, image: Image.Image | None, caption: str, phrases: str = "", threshold: float = 0.3
    ) -> tuple[Image.Image, list[list[Any]]]:
        """Phrase grounding: the best box of each phrase of `caption` scoring at least `threshold`. `phrases` are
        comma-separated parts of the caption; empty, spaCy finds the noun phrases (when installed)."""
        image = _image(image)
        wanted = [phrase.strip() for phrase in (phrases or "").split(",") if phrase.strip()] or None
        grounded = self.pipeline("phrase-grounding")(image, caption, phrases=wanted, threshold=float(threshold))
        found = [{"label": entry["phrase"], **entry["boxes"][0]} for entry in grounded if entry["boxes"]]
        return draw_detections(image, found), [_box_row(d["label"], d["score"], d["box"]) for d in found]

    def answer(self, image: Image.Image | None, question: str, top_k: int = 5) -> tuple[str, dict[str, float]]:
        """Visual question answering: the best answer and `{answer: score}` of the `top_k` best."""
        answers = self.pipeline("visual-question-answering")(_image(image), question, top_k=int(top_k))
        return answers[0]["answer"], {entry["answer"]: entry["score"] for entry in answers}

    def caption(self, image: Image.Image | None, prompt: str = "", max_new_tokens: int = 20) -> str:
        """Captioning: the generated caption (started with `prompt`'s words when given)."""
        options = {"prompt": prompt} if prompt and prompt.strip() else {}
        result = self.pipeline("image-captioning")(_image(image), max_new_tokens=int(max_new_tokens), **options)
        return result[0]["generated_text"]

    def classify(self, image: Image.Image | None, labels: str) -> dict[str, float]:
        """Zero-shot image classification over comma-separated `labels`: `{label: probability}`."""
        ranked = self.pipeline("zero-shot-image-classification")(
            _image(image), candidate_labels=_labels(labels, "label")
        )
        return {entry["label"]: entry["score"] for entry in ranked}

    def segment(
        self, image: Image.Image | None, labels: str, threshold: float = 0.3, max_instances: int = 20
    ) -> tuple[Image.Image, list[list[Any]]]:
        """Instance segmentation of comma-separated `labels`: the image with each instance's mask and box drawn,
        and the rows `[label, score, xmin, ymin, xmax, ymax]`."""
        image = _image(image)
        found = self.pipeline("instance-segmentation")(
            image, candidate_labels=_labels(labels, "class name"), threshold=float(threshold), top_k=int(max_instances)
        )
        return draw_detections(image, found), [_box_row(d["label"], d["score"], d["box"]) for d in found]

    def refer(self, image: Image.Image | None, expression: str) -> tuple[Image.Image, list[list[Any]]]:
        """Referring segmentation: the image with the expression's mask and box drawn, and its row."""
        image = _image(image)
        result = self.pipeline("referring-segmentation")(image, expression)
        if result["box"] is None:  # nothing found: the picture unchanged, no row
            return draw_detections(image, []), []
        found = [{"label": expression.strip(), "score": result["score"], "box": result["box"], "mask": result["mask"]}]
        return draw_detections(image, found), [_box_row(found[0]["label"], result["score"], result["box"])]


def _shown(handler: Callable[..., Any]) -> Callable[..., Any]:
    """`handler` with its `ValueError`s shown on the page (a Gradio error message) instead of a generic error."""
    import gradio as gr

    def run(*args: Any) -> Any:
        try:
            return handler(*args)
        except ValueError as error:
            raise gr.Error(str(error)) from error

    return run


def _inputs(key: str) -> list[Any]:
    """The text inputs and sliders of a tab (after its image)."""
    import gradio as gr

    def threshold() -> Any:
        return gr.Slider(0.0, 1.0, value=0.3, step=0.01, label="threshold", elem_id=f"{key}-threshold")

    if key in ("detect", "segment"):
        labels = gr.Textbox(label="labels (comma-separated)", elem_id=f"{key}-labels")
        return [labels, threshold(), gr.Slider(1, 100, value=20, step=1, label="at most", elem_id=f"{key}-max")]
    if key == "ground":
        phrases = "phrases of the caption (comma-separated; empty: its noun phrases, found by spaCy)"
        return [
            gr.Textbox(label="caption", elem_id="ground-caption"),
            gr.Textbox(label=phrases, elem_id="ground-phrases"),
            threshold(),
        ]
    labels = {
        "vqa": "question",
        "caption": "prompt (optional: the caption's first words)",
        "classify": "labels (comma-separated)",
        "refer": "referring expression",
    }
    return [gr.Textbox(label=labels[key], elem_id=f"{key}-text")]


def _outputs(key: str) -> list[Any]:
    """The result components of a tab."""
    import gradio as gr

    if key in ("detect", "ground", "segment", "refer"):
        return [
            gr.Image(type="pil", format="png", label="result", elem_id=f"{key}-output"),
            gr.Dataframe(headers=TABLE_HEADERS, label="found", elem_id=f"{key}-table", interactive=False),
        ]
    if key == "vqa":
        return [gr.Textbox(label="answer", elem_id="vqa-answer"), gr.Label(label="answers", elem_id="vqa-scores")]
    if key == "caption":
        return [gr.Textbox(label="caption", elem_id="caption-output")]
    return [gr.Label(label="scores", elem_id="classify-scores")]


def _tab_body(demo: Glipv2WebDemo, task: AppTask) -> None:
    """The inputs, button and outputs of one available task, wired to its handler."""
    import gradio as gr

    with gr.Row():
        with gr.Column():
            inputs = [gr.Image(type="pil", label="image", elem_id=f"{task.key}-image"), *_inputs(task.key)]
            button = gr.Button("Run", variant="primary", elem_id=f"{task.key}-run")
        with gr.Column():
            outputs = _outputs(task.key)
    button.click(_shown(getattr(demo, task.handler)), inputs=inputs, outputs=outputs, api_name=task.key)


def build_app(demo: Glipv2WebDemo) -> Any:
    """The Gradio page (`gr.Blocks`): a tab per task of [`APP_TASKS`], an unavailable one saying why."""
    import gradio as gr

    served = [task.title for task in APP_TASKS if task.pipeline not in demo.unavailable]
    missing = [task.title for task in APP_TASKS if task.pipeline in demo.unavailable]
    with gr.Blocks(title=f"GLIPv2: {demo.model}", analytics_enabled=False) as app:
        gr.Markdown(
            f"# GLIPv2 web demo\nModel: `{demo.model}`. Tasks it serves: {', '.join(served) or 'none'}."
            + (f" Unavailable (see their tabs): {', '.join(missing)}." if missing else ""),
            elem_id="header",
        )
        with gr.Tabs():
            for task in APP_TASKS:
                with gr.Tab(task.title, elem_id=f"{task.key}-tab"):
                    gr.Markdown(task.description)
                    if task.pipeline in demo.unavailable:
                        gr.Markdown(
                            f"**Unavailable:** {demo.unavailable[task.pipeline]}", elem_id=f"{task.key}-unavailable"
                        )
                    else:
                        _tab_body(demo, task)
    return app


def theme() -> Any:
    """Gradio's default theme with system fonts (nothing fetched from the internet by the page)."""
    import gradio as gr

    return gr.themes.Default(font=list(FONTS), font_mono=list(MONO_FONTS))


def launch(app: Any, host: str, port: int, share: bool = False, block: bool = True) -> Any:
    """Serves the page on `host:port` (`share`: also a public gradio.live link); `block=False` returns at once."""
    return app.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        ssr_mode=False,  # no Node server: the page is served by the Python process alone
        theme=theme(),
        quiet=not block,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of `scripts/app.py`."""
    parser = argparse.ArgumentParser(description="GLIPv2 web demo: every task of one checkpoint on one page.")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="saved folder or Hub repository id")
    # Hub Spaces set GRADIO_SERVER_NAME / GRADIO_SERVER_PORT for the app.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also serve a public gradio.live link")
    parser.add_argument("--device", default=None, help='pipeline device, e.g. "cpu" or "cuda:0"')
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="run the checkpoint's own code (glipv2 not installed)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Loads the checkpoint's configuration and serves the page until interrupted."""
    args = parse_args(argv)
    demo = Glipv2WebDemo(args.model, trust_remote_code=args.trust_remote_code, device=args.device)
    for task, reason in demo.unavailable.items():
        print(f"{task}: unavailable, {reason}")
    launch(build_app(demo), args.host, args.port, share=args.share)
    return 0


__all__ = [
    "APP_TASKS",
    "AppTask",
    "Glipv2WebDemo",
    "build_app",
    "launch",
    "main",
    "parse_args",
    "theme",
    "unavailable_tasks",
]
