"""Reference implementations of the competition metrics, transcribed from the official sources (rewritten, not
copied, each keeping its source's exact behaviour, quirks included), for `test_metric_reference.py` to hold
`competition.metrics` against. Nothing here imports the toolkit.

Sources (read at these paths):

* VQA v2 accuracy -- GT-Vision-Lab/VQA, `PythonEvaluationTools/vqaEvaluation/vqaEval.py` (HEAD, commit a013f00
  "Fixed processing answers bug"): `VQAEval.__init__`'s `contractions`, `manualMap`, `articles`, `periodStrip`,
  `commaStrip`, `punct`; `processPunctuation`; `processDigitArticle`; the accuracy loop of `evaluate`.
  Quirks kept:
    - the ground truth answers are always stripped (and '\\n', '\\t' turned into spaces), but punctuation and
      digit/article processing run on them *and on the prediction* only when the stripped answers are not all
      the same (`len(set(gtAnswers)) > 1`): against unanimous ground truth the raw prediction is compared raw;
    - leave-one-out is over answer *records* (`item != gtAnsDatum` compares dicts that carry a distinct
      `answer_id`), so repeated answer strings each count -- modelled here with one record per annotator;
    - `periodStrip.sub("", outText, re.UNICODE)` passes the flag as the `count` argument: at most 32 periods
      (re.UNICODE == 32) are stripped;
    - `periodStrip`'s `(?!<=\\d)` is a negative lookahead (a mistyped lookbehind) that never fires before a '.';
    - the contractions map is looked up after lowercasing, so its upper-case keys ("Im", "Ive", ...) never fire,
      and it holds the reversed entry "somebody'd" -> "somebodyd" as published.
* ANLS -- shunk031/ANLS, `anls/metrics/score.py` (`anls_score`, `similatiry_function`) and `anls/dist.py`
  (`levenshtein_distance`, `normalized_levenshtein_distance`), itself based on the Robust Reading Competition's
  InfographicVQA evaluation script. Both strings lowercased, stripped, inner whitespace runs collapsed to one
  space; score 1 - NL when NL < threshold, else 0; max over the gold answers. Quirk kept: the normalizing length
  is `max(len(a.upper()), len(b.upper()))` (e.g. 'ß'.upper() == 'SS' counts two). Note google-research/pix2struct
  `pix2struct/metrics.py` `anls_metric` keeps NL == theta (`<=`); the DocVQA/RRC convention followed here drops it.
* Relaxed correctness -- google-research/pix2struct, `pix2struct/metrics.py` `relaxed_correctness` (the ChartQA
  metric, as used by ChartQA/Pix2Struct/DePlot/MatCha evaluations) and `aggregate_metrics` (max over targets).
  Quirks kept: a trailing '%' divides by 100 (so '5%' == '0.05'); `float()` parses 'nan', 'inf', '1e3', '1_000',
  surrounding whitespace; a target that parses to 0 (or fails to parse) falls back to case-insensitive exact string
  comparison *without* stripping; relative change `<=` the tolerance counts.
* MAP@k -- benhamner/Metrics, `Python/ml_metrics/average_precision.py` (`apk`, `mapk`; HEAD, after commit a28d7ad
  "if length of actual is 0 it should return 0" -- older copies return 1.0 there). Quirks kept: empty `actual`
  scores 0.0; guesses cut to the first k; a guess repeated earlier in the list scores nothing (but still
  takes up its rank); the sum is divided by min(len(actual), k).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# ---- VQA v2 (GT-Vision-Lab/VQA vqaEval.py) ---------------------------------------------------------------------

# `contractions`, every published entry (upper-case keys and the reversed somebody'd entry included), written as
# whitespace-separated key>value pairs.
_CONTRACTION_PAIRS = """
aint>ain't arent>aren't cant>can't couldve>could've couldnt>couldn't couldn'tve>couldn't've
couldnt've>couldn't've didnt>didn't doesnt>doesn't dont>don't hadnt>hadn't hadnt've>hadn't've
hadn'tve>hadn't've hasnt>hasn't havent>haven't hed>he'd hed've>he'd've he'dve>he'd've hes>he's howd>how'd
howll>how'll hows>how's Id've>I'd've I'dve>I'd've Im>I'm Ive>I've isnt>isn't itd>it'd itd've>it'd've
it'dve>it'd've itll>it'll let's>let's maam>ma'am mightnt>mightn't mightnt've>mightn't've mightn'tve>mightn't've
mightve>might've mustnt>mustn't mustve>must've neednt>needn't notve>not've oclock>o'clock oughtnt>oughtn't
ow's'at>'ow's'at 'ows'at>'ow's'at 'ow'sat>'ow's'at shant>shan't shed've>she'd've she'dve>she'd've she's>she's
shouldve>should've shouldnt>shouldn't shouldnt've>shouldn't've shouldn'tve>shouldn't've somebody'd>somebodyd
somebodyd've>somebody'd've somebody'dve>somebody'd've somebodyll>somebody'll somebodys>somebody's
someoned>someone'd someoned've>someone'd've someone'dve>someone'd've someonell>someone'll someones>someone's
somethingd>something'd somethingd've>something'd've something'dve>something'd've somethingll>something'll
thats>that's thered>there'd thered've>there'd've there'dve>there'd've therere>there're theres>there's
theyd>they'd theyd've>they'd've they'dve>they'd've theyll>they'll theyre>they're theyve>they've twas>'twas
wasnt>wasn't wed've>we'd've we'dve>we'd've weve>we've werent>weren't whatll>what'll whatre>what're
whats>what's whatve>what've whens>when's whered>where'd wheres>where's whereve>where've whod>who'd
whod've>who'd've who'dve>who'd've wholl>who'll whos>who's whove>who've whyll>why'll whyre>why're whys>why's
wont>won't wouldve>would've wouldnt>wouldn't wouldnt've>wouldn't've wouldn'tve>wouldn't've yall>y'all
yall'll>y'all'll y'allll>y'all'll yall'd've>y'all'd've y'alld've>y'all'd've y'all'dve>y'all'd've youd>you'd
youd've>you'd've you'dve>you'd've youll>you'll youre>you're youve>you've
"""
VQA_CONTRACTIONS: dict[str, str] = dict(pair.split(">", 1) for pair in _CONTRACTION_PAIRS.split())
VQA_NUMBER_WORDS: dict[str, str] = {
    word: str(i) for i, word in enumerate("zero one two three four five six seven eight nine ten".split())
} | {"none": "0"}
VQA_ARTICLES: tuple[str, ...] = ("a", "an", "the")
# `punct`, in the published order (the order does not change the result: each mark is decided on the input).
VQA_PUNCT: tuple[str, ...] = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
                              "`", ",", "?", "!")  # fmt: skip
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # as published: the lookahead `(?!<=\d)` is always true here
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
_PERIOD_STRIP_COUNT = int(re.UNICODE)  # `periodStrip.sub("", outText, re.UNICODE)`: the flag lands on `count` (32)


def vqa_process_punctuation(text: str) -> str:
    """`processPunctuation`: a mark next to a space -- or any mark at all once the input has a digit,digit -- is
    deleted, otherwise replaced by a space (both decided on the input, replaced in the output); then up to 32
    periods not followed by a digit are deleted."""
    digit_comma = _COMMA_STRIP.search(text) is not None
    out = text
    for mark in VQA_PUNCT:
        touches_space = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if touches_space or digit_comma else " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def vqa_process_digit_article(text: str) -> str:
    """`processDigitArticle`: lowercase, split on whitespace, number words to digits, articles dropped, then
    contractions looked up word by word; joined by single spaces."""
    words = []
    for word in text.lower().split():
        word = VQA_NUMBER_WORDS.get(word, word)
        if word not in VQA_ARTICLES:
            words.append(word)
    return " ".join(VQA_CONTRACTIONS.get(word, word) for word in words)


def _vqa_clean(text: str) -> str:
    """The line-break/tab/strip step `evaluate` runs on every answer and on the prediction."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_official_accuracy(pred: str, gt_answers: Sequence[str]) -> float:
    """One question's accuracy as `VQAEval.evaluate` computes it (before its rounding to 100ths of a percent),
    on RAW strings: the prediction and the annotators' answers as submitted/annotated."""
    # One record per annotator, as in the annotation file: the answer_id keeps equal answers distinct records.
    records = [
        {"answer": _vqa_clean(a), "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(gt_answers)
    ]
    res = _vqa_clean(pred)
    if len({r["answer"] for r in records}) > 1:  # not unanimous: process the answers and the prediction
        for r in records:
            r["answer"] = vqa_process_digit_article(vqa_process_punctuation(r["answer"]))
        res = vqa_process_digit_article(vqa_process_punctuation(res))
    per_subset = []
    for left_out in records:
        others = [r for r in records if r != left_out]
        matching = [r for r in others if r["answer"] == res]
        per_subset.append(min(1, float(len(matching)) / 3))
    return float(sum(per_subset)) / len(per_subset)


def vqa_official_normalize(text: str) -> str:
    """What the official eval does to one answer when it does process it (non-unanimous ground truth)."""
    return vqa_process_digit_article(vqa_process_punctuation(_vqa_clean(text)))


# ---- ANLS (shunk031/ANLS, after the RRC InfographicVQA script) -------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute, each 1), one DP row at a time over the shorter string."""
    if len(a) > len(b):
        a, b = b, a
    prev = list(range(len(a) + 1))
    for j, cb in enumerate(b):
        row = [j + 1]
        for i, ca in enumerate(a):
            row.append(prev[i] if ca == cb else 1 + min(prev[i], prev[i + 1], row[-1]))
        prev = row
    return prev[-1]


def normalized_levenshtein(a: str, b: str) -> float:
    """Edit distance over the longer length, lengths taken of the upper-cased strings (as published); 0 for two
    empty strings."""
    longest = max(len(a.upper()), len(b.upper()))
    return 0.0 if longest == 0 else levenshtein(a, b) / longest


def _anls_clean(text: str) -> str:
    """'not case sensitive, but space sensitive': lowercase, strip, collapse whitespace runs."""
    return " ".join(text.strip().lower().split())


def anls_reference(pred: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """`anls_score`: max over the gold answers of 1 - NL when NL < threshold, else 0. Raises on no answers
    (`max` of an empty list), as published."""
    p = _anls_clean(pred)
    scores = []
    for answer in answers:
        nl = normalized_levenshtein(p, _anls_clean(answer))
        scores.append(1 - nl if nl < threshold else 0.0)
    return max(scores)


# ---- ChartQA relaxed correctness (google-research/pix2struct metrics.py) ---------------------------------------


def _relaxed_float(text: str) -> float | None:
    """`_to_float`: a trailing '%' (after which nothing, not even a space) means /100; `float()` else; None when
    `float()` refuses."""
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_correctness_reference(target: str, prediction: str, max_relative_change: float = 0.05) -> bool:
    """`relaxed_correctness(target, prediction)`: numeric within the relative change when both parse and the
    target is non-zero (truthy); else case-insensitive string equality, no stripping."""
    p, t = _relaxed_float(prediction), _relaxed_float(target)
    if p is not None and t:
        return abs(p - t) / abs(t) <= max_relative_change
    return prediction.lower() == target.lower()


def relaxed_reference(pred: str, answers: Sequence[str], tolerance: float = 0.05) -> float:
    """`aggregate_metrics`' per-question term with `relaxed_correctness` (no normalize_fn): max over targets."""
    return float(max(relaxed_correctness_reference(t, pred, tolerance) for t in answers))


# ---- MAP@k (benhamner/Metrics ml_metrics/average_precision.py) -------------------------------------------------


def apk_reference(actual: Sequence[str], predicted: Sequence[str], k: int = 10) -> float:
    """`apk`: average precision at k of the ranked `predicted` against the set `actual`."""
    predicted = list(predicted)[:k]
    hits, total = 0.0, 0.0
    for rank, guess in enumerate(predicted, start=1):
        if guess in actual and guess not in predicted[: rank - 1]:
            hits += 1.0
            total += hits / rank
    return 0.0 if not actual else total / min(len(actual), k)


def mapk_reference(actual: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], k: int = 10) -> float:
    """`mapk`: the mean of `apk` over rows."""
    return float(np.mean([apk_reference(a, p, k) for a, p in zip(actual, predicted, strict=True)]))
