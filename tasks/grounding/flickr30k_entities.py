"""The original Flickr30k Entities annotations as distributed (github.com/BryanPlummer/flickr30k_entities):
`Annotations/<image id>.xml`, `Sentences/<image id>.txt` and the split lists `train.txt` / `val.txt` /
`test.txt`, read as the official evaluator (`Flickr30kEntitiesRecallEvaluator` of MDETR's
`datasets/flickr_eval.py`, copied by GLIP) reads them; errors name the file, the record and the field."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field

from tasks.common import Glipv2DataError

Box = list[int]


@dataclass
class EntityPhrase:
    """One phrase (mention) of a sentence: its text, the index of its first word, its entity id and types."""

    phrase: str
    first_word_index: int
    phrase_id: str
    phrase_type: list[str]


@dataclass
class EntitySentence:
    """One sentence of `Sentences/<image id>.txt` (the text without the brackets, and its phrases in order)."""

    sentence: str
    phrases: list[EntityPhrase] = field(default_factory=list)


def read_split(path: str | os.PathLike) -> list[str]:
    """The image ids of a split list (`val.txt`: one id per line), as strings, in file order."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    except OSError as error:
        raise Glipv2DataError(path, "<file>", "<file>", f"cannot read the split list: {error}") from error


def read_sentences(path: str | os.PathLike) -> list[EntitySentence]:
    """`Sentences/<image id>.txt`: one sentence per non-empty line, each phrase written `[/EN#<id>/<type>... words]`.

    As the official `get_sentence_data`: words are split on whitespace; a phrase opens at a word starting with `[`
    (`/EN#<id>/<types>`, no word of its own) and closes at the word ending with `]`; the sentence is its words joined
    by one space. A tag without `/EN#<id>` or a phrase that never closes raises.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except OSError as error:
        raise Glipv2DataError(path, "<file>", "<file>", f"cannot read the sentences file: {error}") from error
    sentences = []
    for line in lines:
        if not line:
            continue
        record = f"sentence {len(sentences)}"
        words: list[str] = []
        phrases: list[EntityPhrase] = []
        current: list[str] | None = None
        for token in line.split():
            if current is not None:
                closing = token.endswith("]")
                token = token[:-1] if closing else token
                current.append(token)
                words.append(token)
                if closing:
                    phrases[-1].phrase = " ".join(current)
                    current = None
            elif token.startswith("["):
                parts = token.split("/")
                if len(parts) < 2 or not parts[1].startswith("EN#") or not parts[1][3:]:
                    raise Glipv2DataError(path, record, "phrase", f"expected a '[/EN#<id>/<type>' tag, got {token!r}")
                phrases.append(EntityPhrase("", len(words), parts[1][3:], parts[2:]))
                current = []
            else:
                words.append(token)
        if current is not None:
            raise Glipv2DataError(path, record, "phrase", f"phrase {len(phrases) - 1} is never closed with ']'")
        sentences.append(EntitySentence(" ".join(words), phrases))
    return sentences


def _box_value(path: str | os.PathLike, record: str, box: ElementTree.Element, key: str) -> int:
    text = box.findtext(key)
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Glipv2DataError(path, record, f"bndbox/{key}", f"expected an integer, got {text!r}") from None


def read_boxes(path: str | os.PathLike) -> dict[str, list[Box]]:
    """`Annotations/<image id>.xml`: per entity id, its boxes `[xmin, ymin, xmax, ymax]` (pixels, as written).

    As the official `get_annotations`: an `object` with a `bndbox` gives its box to each of its `name`s (a box
    shared by several entities belongs to each); objects without one (`nobndbox`, `scene`) give none, so their
    entities are not evaluated.
    """
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise Glipv2DataError(path, "<file>", "<file>", f"cannot parse the XML: {error}") from error
    boxes: dict[str, list[Box]] = {}
    for index, element in enumerate(root.findall("object")):
        names = [name.text.strip() if name.text else "" for name in element.findall("name")]
        record = f"object {index} (name {', '.join(names) or '<none>'})"
        if not names or not all(names):
            raise Glipv2DataError(path, record, "name", "an object needs the entity id(s) it belongs to")
        box = element.find("bndbox")
        if box is None:
            continue
        xyxy = [_box_value(path, record, box, key) for key in ("xmin", "ymin", "xmax", "ymax")]
        if xyxy[2] < xyxy[0] or xyxy[3] < xyxy[1]:
            raise Glipv2DataError(path, record, "bndbox", f"xmax/ymax lie before xmin/ymin in {xyxy}")
        for name in names:
            boxes.setdefault(name, []).append(xyxy)
    return boxes


def merge_boxes(boxes: list[list[float]]) -> list[list[float]]:
    """The smallest box enclosing all of `boxes` (xyxy), as a one-box list (the official `_merge_boxes`)."""
    if len(boxes) <= 1:
        return [list(box) for box in boxes]
    return [
        [
            min(box[0] for box in boxes),
            min(box[1] for box in boxes),
            max(box[2] for box in boxes),
            max(box[3] for box in boxes),
        ]
    ]


@dataclass
class EvaluatedPhrase:
    """A phrase the official evaluator scores: one with at least one box."""

    phrase: str
    phrase_id: str
    phrase_type: list[str]
    boxes: list[Box]


def load_evaluated_sentences(
    annotations_dir: str | os.PathLike, sentences_dir: str | os.PathLike, image_ids: list[str]
) -> dict[tuple[str, int], list[EvaluatedPhrase]]:
    """Per `(image id, sentence index)`, the sentence's phrases whose entity has a box, in sentence order; a
    sentence without such a phrase is left out (the official evaluator skips it)."""
    evaluated: dict[tuple[str, int], list[EvaluatedPhrase]] = {}
    for image_id in image_ids:
        boxes = read_boxes(os.path.join(annotations_dir, f"{image_id}.xml"))
        for index, sentence in enumerate(read_sentences(os.path.join(sentences_dir, f"{image_id}.txt"))):
            phrases = [
                EvaluatedPhrase(phrase.phrase, phrase.phrase_id, phrase.phrase_type, boxes[phrase.phrase_id])
                for phrase in sentence.phrases
                if phrase.phrase_id in boxes
            ]
            if phrases:
                evaluated[(image_id, index)] = phrases
    return evaluated


__all__ = [
    "EntityPhrase",
    "EntitySentence",
    "EvaluatedPhrase",
    "load_evaluated_sentences",
    "merge_boxes",
    "read_boxes",
    "read_sentences",
    "read_split",
]
