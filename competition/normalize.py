"""Answer normalization (the official VQA eval's rules) and snapping to the training answer vocabulary.

    from competition.normalize import normalize, protected_answers, snap_to_vocab
    normalize("Two dogs.")                                    # '2 dogs'
    normalize("None", keep=protected_answers(["none", "0"]))  # 'none' (kept apart from '0')
    snap_to_vocab(["yelow", "zebra"], ["yellow", "red"])      # ['yellow', 'zebra']

Rules run in the fixed order of `RULES`, whatever order a caller lists them in. The mapping rules
(`number_words`, `contractions`) run last and skip any answer found in `keep` at that point.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process

from competition.config import Config
from competition.data import ANSWER, Competition

FUZZY_THRESHOLD = 90.0  # two spellings of one answer when rapidfuzz's ratio is at least this (votes, snapping)

RULES: tuple[str, ...] = ("lowercase", "punctuation", "whitespace", "articles", "number_words", "contractions")
DEFAULT_RULES: tuple[str, ...] = RULES
MAPPING_RULES: tuple[str, ...] = ("number_words", "contractions")

# The official VQA eval's marks; '.' has its own rule (_PERIOD) and the apostrophe is kept, as there.
_PUNCT = ';/[]"{}()=+\\_-><@`,?!'
_NUMBER_COMMA = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
_ARTICLES = frozenset({"a", "an", "the"})
_NUMBER_WORDS = {
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
# The official VQA eval's map, less its entries that never fire on lowercased text ("Im", "Ive", ...)
# or map a word to itself, and with its reversed "somebody'd" -> "somebodyd" entry turned round.
_CONTRACTIONS = {
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
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
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
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebodyd": "somebody'd",
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
_CHUNK_CELLS = 4_000_000  # score-matrix cells per rapidfuzz call: 16 MB of float32


def _lowercase(text: str) -> str:
    """Lower-case."""
    return text.lower()


def _punctuation(text: str) -> str:
    """VQA eval: newlines and tabs to spaces and strip, as it does first; then drop a mark that touches a space
    (or any mark when a comma sits between digits, so '1,000' -> '1000'), else turn it into a space
    ('t-shirt' -> 't shirt', 't-shirt\\n-x' -> 'tshirt x'); drop '.' unless a digit follows."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    glued = _NUMBER_COMMA.search(text) is not None
    table = {ord(p): "" if glued or f"{p} " in text or f" {p}" in text else " " for p in _PUNCT if p in text}
    return _PERIOD.sub("", text.translate(table))


def _whitespace(text: str) -> str:
    """Strip and collapse runs of whitespace to one space."""
    return " ".join(text.split())


def _articles(text: str) -> str:
    """Drop the words a, an, the."""
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def _number_words(text: str) -> str:
    """Number words to digits, word by word ('none' -> '0' too, as in the VQA eval)."""
    return " ".join(_NUMBER_WORDS.get(w, w) for w in text.split())


def _contractions(text: str) -> str:
    """Restore apostrophes of contractions written without one ('dont' -> "don't")."""
    return " ".join(_CONTRACTIONS.get(w, w) for w in text.split())


_RULE_FUNCS: dict[str, Callable[[str], str]] = {
    "lowercase": _lowercase,
    "punctuation": _punctuation,
    "whitespace": _whitespace,
    "articles": _articles,
    "number_words": _number_words,
    "contractions": _contractions,
}


@lru_cache(maxsize=64)
def _pipeline(rules: tuple[str, ...]) -> tuple[list[Callable[[str], str]], list[Callable[[str], str]]]:
    """The chosen rules in `RULES` order, split into (editing rules, mapping rules); unknown names refused."""
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise ValueError(f"unknown normalization rule(s) {unknown}; valid: {', '.join(RULES)}")
    chosen = [r for r in RULES if r in rules]
    edit = [_RULE_FUNCS[r] for r in chosen if r not in MAPPING_RULES]
    return edit, [_RULE_FUNCS[r] for r in chosen if r in MAPPING_RULES]


def normalize(text: str, rules: Sequence[str] = DEFAULT_RULES, keep: Collection[str] = ()) -> str:
    """Apply `rules` in `RULES` order; an answer in `keep` after the editing rules skips the mapping rules."""
    edit, mapping = _pipeline(tuple(rules))
    for rule in edit:
        text = rule(text)
    if text in keep:
        return text
    for rule in mapping:
        text = rule(text)
    return text


def normalize_series(s: pd.Series, rules: Sequence[str] = DEFAULT_RULES, keep: Collection[str] = ()) -> pd.Series:
    """`normalize` on every cell (missing -> ''), each distinct value computed once; index and name kept."""
    codes, uniques = pd.factorize(s.fillna("").astype(str))
    keep = frozenset(keep)
    forms = np.array([normalize(u, rules, keep) for u in uniques], dtype=object)
    return pd.Series(forms[codes], index=s.index, name=s.name)


def normalize_lists(lists: Iterable[Sequence[str]], normalizer: Callable[[pd.Series], pd.Series]
                    ) -> list[tuple[str, ...]]:  # fmt: skip
    """Each list of texts normalized, as a tuple; every text of every list through one call of `normalizer`."""
    lists = [list(texts) for texts in lists]
    flat = normalizer(pd.Series([t for texts in lists for t in texts], dtype=str)).tolist()
    ends = np.cumsum([len(texts) for texts in lists])
    return [tuple(flat[end - len(texts) : end]) for texts, end in zip(lists, ends, strict=True)]


def _groups(answers: Iterable[str], rules: Sequence[str], keep: Collection[str]) -> dict[str, set[str]]:
    """Normalized form -> the distinct raw answers that reach it."""
    groups: dict[str, set[str]] = defaultdict(set)
    for a in set(answers):
        groups[normalize(a, rules, keep)].add(a)
    return groups


def merge_report(
    answers: Iterable[str], rules: Sequence[str] = DEFAULT_RULES, keep: Collection[str] = ()
) -> dict[str, list[str]]:
    """Normalized form -> the sorted raw answers it merges, for forms merging answers that differ beyond
    case and whitespace, e.g. {'0': ['0', 'none']}."""
    return {
        form: sorted(raw)
        for form, raw in sorted(_groups(answers, rules, keep).items())
        if len({_whitespace(a.lower()) for a in raw}) > 1
    }


def protected_answers(answers: Iterable[str], rules: Sequence[str] = DEFAULT_RULES) -> set[str]:
    """The `keep` set that stops the mapping rules from merging distinct answers, e.g. {'none'} when both
    'none' and '0' are answers. Merges made by the editing rules ('a dog' / 'dog') cannot be stopped."""
    edit_rules = [r for r in rules if r not in MAPPING_RULES]
    answers = set(answers)
    pre = {a: normalize(a, edit_rules) for a in answers}
    keep: set[str] = set()
    while True:
        merged: dict[str, set[str]] = defaultdict(set)
        for a in answers:
            merged[normalize(a, rules, keep)].add(pre[a])
        new = {p for form, ps in merged.items() if len(ps) > 1 for p in ps if p != form}
        if new <= keep:
            return keep
        keep |= new


def snap_to_vocab(answers: Sequence[str], vocab: Sequence[str], cutoff: float = FUZZY_THRESHOLD) -> list[str]:
    """Each answer replaced by its closest `vocab` entry (rapidfuzz `fuzz.ratio`, 0-100) when that scores
    >= cutoff, else kept. Ties go to the earlier entry, so pass the vocabulary most common first."""
    vocab = list(dict.fromkeys(vocab))
    todo = sorted(set(answers) - set(vocab)) if vocab else []
    snapped: dict[str, str] = {}
    step = max(1, _CHUNK_CELLS // max(1, len(vocab)))
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        scores = process.cdist(chunk, vocab, scorer=fuzz.ratio, score_cutoff=cutoff, dtype=np.float32, workers=-1)
        best = scores.argmax(axis=1)
        hit = scores[np.arange(len(chunk)), best] >= cutoff
        snapped.update((a, vocab[j]) for a, j, ok in zip(chunk, best, hit, strict=True) if ok)
    return [snapped.get(a, a) for a in answers]


class AnswerNormalizer:
    """Raw answers -> answers, by the config's rules, protected answers and optional vocabulary snap."""

    def __init__(self, cfg: Config, train_answers: pd.Series) -> None:
        n = cfg.normalize
        self.rules = n.rules
        self.keep = protected_answers(train_answers, n.rules) if n.protect else set()
        self.cutoff = n.snap_cutoff
        self.vocab = normalize_series(pd.Series(train_answers.value_counts().index), n.rules, self.keep).tolist()

    @classmethod
    def of(cls, cfg: Config, comp: Competition) -> AnswerNormalizer:
        """The competition's one normalizer (all training answers), shared by predictions and ground truth,
        so that a fold lacking one member of a protected pair ('none' / '0') scores like the others."""
        return cls(cfg, comp.train[ANSWER])

    def __call__(self, raw: pd.Series) -> pd.Series:
        out = normalize_series(raw, self.rules, self.keep)
        if self.cutoff is not None:
            out = pd.Series(snap_to_vocab(out.tolist(), self.vocab, self.cutoff), index=out.index)
        return out


def describe_merges(cfg: Config, comp: Competition, shown: int = 3) -> str:
    """One line on what normalization does to the training answers: the groups of distinct answers it merges."""
    norm = AnswerNormalizer.of(cfg, comp)
    merges = merge_report(comp.train[ANSWER].unique(), norm.rules, norm.keep)
    examples = "; ".join(f"{' / '.join(raw)} -> {form}" for form, raw in list(merges.items())[:shown])
    return f"normalization merges {len(merges)} groups of distinct training answers" + (f", e.g. {examples}" if merges else "")
