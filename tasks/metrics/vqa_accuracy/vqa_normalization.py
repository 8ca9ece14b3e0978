"""The official VQA answer normalisation and accuracy (VQA PythonEvaluationTools, ``vqaEval.py``).

Followed: GT-Vision-Lab/VQA, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` at commit
``a013f0043c1e2cdc995922dfe257f7149aa9af06`` ("Fixed processing answers bug", 2021-03-11, the repository's latest):
https://github.com/GT-Vision-Lab/VQA/blob/a013f0043c1e2cdc995922dfe257f7149aa9af06/PythonEvaluationTools/vqaEvaluation/vqaEval.py

The tables below are the official ones: punctuation handling (``processPunctuation``) and number words, articles
and contractions (``processDigitArticle``). :func:`official_vqa_accuracy` scores one question exactly as
``VQAEval.evaluate`` does and :func:`official_vqa_report` aggregates as ``VQAEval.setAccuracy``. The VQAv2 loader
uses :func:`normalize_answer` for its training targets (soft scores over normalised answers); evaluation passes the
annotators' raw answers, whose normalisation is the official scorer's business.

The official code is Python 2.7; this port runs the same regular expressions as Python 3 ``str`` patterns (so
``\\d`` also matches non-ASCII decimal digits), as the usual Python 3 ports of ``vqaEval.py`` do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
# Copied verbatim from the official regexes, including the lookbehind typo "(?!<=\d)" that makes the first group
# a negative lookahead: a period is removed unless a digit follows it.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official `periodStrip.sub("", outText, re.UNICODE)` passes the flag as sub's third positional argument,
# the count: at most int(re.UNICODE) == 32 periods are removed (the leftmost ones).
PERIOD_STRIP_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """Official ``processPunctuation``: each mark is deleted when it touches a space in the input, or when the input
    has a digit-comma-digit anywhere (``commaStrip`` is only searched, never substituted), and is otherwise replaced
    by a space; then at most 32 periods not followed by a digit are deleted (see ``PERIOD_STRIP_COUNT``)."""
    out = text
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or COMMA_STRIP.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """Official ``processDigitArticle``: lower-case, number words to digits, drop articles, fix contractions."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words)


def clean_whitespace(text: str) -> str:
    """Official first step for every answer: newlines and tabs to spaces, then strip."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """The full official normalisation: whitespace, punctuation, then digits/articles/contractions (the VQAv2
    loader's training answers; the official scorer applies it only to questions whose annotators disagree)."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def leave_one_out_accuracy(answer: str, annotator_answers: Sequence[str]) -> float:
    """Mean over the annotators of ``min(1, #matches among the others / 3)``, leaving out exactly one entry each
    time (10 choose 9 for VQAv2's ten answers); inputs compared as given.

    The official loop removes the entries equal to the left-out answer *record* (``item != gtAnsDatum``, a dict
    with ``answer_id``): exactly one entry for the distributed files, whose ``answer_id`` are distinct.
    """
    accuracies = []
    for held_out in range(len(annotator_answers)):
        others = [other for index, other in enumerate(annotator_answers) if index != held_out]
        accuracies.append(min(1, float(sum(1 for other in others if other == answer)) / 3))
    return float(sum(accuracies)) / len(accuracies) if accuracies else 0.0


def official_vqa_accuracy(prediction: str, annotator_answers: Sequence[str]) -> float:
    """VQA accuracy (a fraction in [0, 1]) of one prediction against the annotators' RAW answers, exactly as the
    official ``VQAEval.evaluate``:

    1. newlines and tabs become spaces and both ends are stripped, in the prediction and every answer;
    2. only when those answers are not all identical (``len(set(answers)) > 1``) do the answers AND the prediction
       get ``processPunctuation`` then ``processDigitArticle``; ten identical answers are compared unnormalised
       (a prediction "Yes" against ten "yes" scores 0);
    3. leave-one-out over the answers (:func:`leave_one_out_accuracy`): ``min(1, matches / 3)``, averaged.

    Raises ValueError for an empty answer list (the official code divides by zero there).
    """
    answers = [clean_whitespace(answer) for answer in annotator_answers]
    if not answers:
        raise ValueError("a question has no ground-truth answers: the VQA accuracy needs the annotators' answers")
    resolved = clean_whitespace(prediction)
    if len(set(answers)) > 1:
        answers = [process_digit_article(process_punctuation(answer)) for answer in answers]
        resolved = process_digit_article(process_punctuation(resolved))
    return leave_one_out_accuracy(resolved, answers)


def official_vqa_report(
    scores: Sequence[float], answer_types: Sequence[str], question_types: Sequence[str], n: int = 2
) -> dict[str, Any]:
    """The official ``VQAEval.accuracy`` (``setAccuracy``) of per-question accuracies: ``overall``,
    ``perQuestionType`` and ``perAnswerType`` in PERCENT, each the mean in question order, ``round(100 * mean, n)``
    (``n=2`` as ``vqaEvalDemo.py``)."""
    if not scores:
        raise ValueError("no questions to report on")

    def percent(values: list[float]) -> float:
        return round(100 * float(sum(values)) / len(values), n)

    by_question_type: dict[str, list[float]] = {}
    by_answer_type: dict[str, list[float]] = {}
    for score, answer_type, question_type in zip(scores, answer_types, question_types, strict=True):
        by_question_type.setdefault(question_type, []).append(score)
        by_answer_type.setdefault(answer_type, []).append(score)
    return {
        "overall": percent(list(scores)),
        "perQuestionType": {name: percent(values) for name, values in by_question_type.items()},
        "perAnswerType": {name: percent(values) for name, values in by_answer_type.items()},
    }
