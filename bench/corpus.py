"""Deterministic text corpora for the benchmarks, generated fast enough to make hundreds of MB.

Word frequencies follow a Zipf law over a synthetic vocabulary, as in natural text, so the
aggregation has a realistic number of distinct keys (tens of thousands) instead of a handful. Lines
are drawn from a fixed pool of lines: drawing whole lines keeps generation at hundreds of MB/s
while the files stay different from each other. A seed fixes every byte, so two runs (and the
stream and its batch baselines within one run) see the same input.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# A few non-ASCII and punctuated words keep the keys honest (UTF-8, case and punctuation are kept).
EXTRA_WORDS = ("naïve", "Straße", "日本語", "emoji🙂", "über", "ÉCOLE", "don't", "end.", "(x)", "3.14")
SEPARATORS = (" ", " ", " ", " ", " ", " ", "  ", "\t")
VOCABULARY_SIZE = 50_000
POOL_LINES = 20_000
ZIPF_EXPONENT = 1.05


@dataclass(frozen=True)
class Corpus:
    """Files of one corpus with the number of words (keys in ``words`` mode) in each."""

    files: tuple[Path, ...]
    words: tuple[int, ...]

    @property
    def total_words(self) -> int:
        return sum(self.words)

    @property
    def total_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)

    def waves(self, count: int) -> list[tuple[Path, ...]]:
        """The files split into ``count`` consecutive groups of (nearly) equal size."""
        count = max(1, min(count, len(self.files)))
        size, extra = divmod(len(self.files), count)
        groups: list[tuple[Path, ...]] = []
        start = 0
        for index in range(count):
            end = start + size + (1 if index < extra else 0)
            groups.append(self.files[start:end])
            start = end
        return groups


def vocabulary(rng: random.Random, size: int) -> list[str]:
    """``size`` distinct pseudo-words, mostly short ones first (the most frequent ranks come first)."""
    words: list[str] = list(EXTRA_WORDS)
    seen = set(words)
    while len(words) < size:
        length = min(14, max(1, int(rng.gauss(7, 2.5))))
        word = "".join(rng.choices(LETTERS, k=length))
        if rng.random() < 0.08:
            word = word.capitalize()
        if word not in seen:
            seen.add(word)
            words.append(word)
    # Frequent words tend to be short, loosely: running text averages about five letters a word.
    noise = {word: len(word) + rng.gauss(0, 3) for word in words}
    words.sort(key=noise.__getitem__)
    return words


def line_pool(seed: int, size: int = POOL_LINES) -> tuple[list[str], list[int]]:
    """Lines (with their terminator) and the number of words in each."""
    rng = random.Random(seed)
    vocab = vocabulary(rng, VOCABULARY_SIZE)
    weights = list(itertools.accumulate(1.0 / (rank + 1) ** ZIPF_EXPONENT for rank in range(len(vocab))))
    lines: list[str] = []
    counts: list[int] = []
    for _ in range(size):
        if rng.random() < 0.03:
            lines.append("\n")  # blank lines: no keys in words mode
            counts.append(0)
            continue
        n = rng.randint(1, 16)
        words = rng.choices(vocab, cum_weights=weights, k=n)
        line = "".join(word + rng.choice(SEPARATORS) for word in words[:-1]) + words[-1]
        lines.append(line + ("\r\n" if rng.random() < 0.02 else "\n"))
        counts.append(n)
    return lines, counts


def write_corpus(folder: Path, total_bytes: int, file_bytes: int, seed: int, prefix: str = "part") -> Corpus:
    """About ``total_bytes`` of text in files of about ``file_bytes`` each (deterministic by seed)."""
    lines, counts = line_pool(seed)
    rng = random.Random(seed + 1)
    folder.mkdir(parents=True, exist_ok=True)
    average = sum(len(line.encode()) for line in lines) / len(lines)
    per_file = max(1, round(file_bytes / average))
    files = max(1, round(total_bytes / file_bytes))
    paths: list[Path] = []
    words: list[int] = []
    indexes = range(len(lines))
    for number in range(files):
        chosen = rng.choices(indexes, k=per_file)
        path = folder / f"{prefix}-{seed}-{number:05d}.txt"
        path.write_text("".join(lines[i] for i in chosen), encoding="utf-8", newline="")
        paths.append(path)
        words.append(sum(counts[i] for i in chosen))
    return Corpus(tuple(paths), tuple(words))


def distinct_words_corpus(folder: Path, distinct: int, files: int, repeats: int, seed: int,
                          prefix: str = "keys") -> Corpus:
    """Every one of ``distinct`` unique words, ``repeats`` times, spread over ``files`` files.

    Used to grow the streaming state to a known number of keys: each file carries a disjoint slice
    of the keys, so after all files the state holds exactly ``distinct`` keys.
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-distinct // files)
    paths: list[Path] = []
    words: list[int] = []
    for number in range(files):
        keys = [f"k{index:07d}" for index in range(number * per_file, min(distinct, (number + 1) * per_file))]
        tokens = keys * repeats
        rng.shuffle(tokens)
        lines = (" ".join(tokens[i:i + 12]) for i in range(0, len(tokens), 12))
        path = folder / f"{prefix}-{seed}-{number:05d}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
        words.append(len(tokens))
    return Corpus(tuple(paths), tuple(words))


def counter_word_count(paths: Iterable[Path]) -> Counter[bytes]:
    """The single-thread Python baseline: ``collections.Counter`` over each line's words.

    ``bytes.split()`` splits on exactly the contract's ASCII whitespace (`` \\t\\n\\v\\f\\r``), so
    this is also an exact reference for the ``words`` key mode, with no decoding cost per line.
    """
    counts: Counter[bytes] = Counter()
    for path in paths:
        with open(path, "rb") as handle:
            for line in handle:
                counts.update(line.split())
    return counts


def decoded(counts: Counter[bytes]) -> dict[str, int]:
    return {key.decode("utf-8"): value for key, value in counts.items()}


def total_words(corpus: Corpus, files: Sequence[Path]) -> int:
    index = {path: words for path, words in zip(corpus.files, corpus.words, strict=True)}
    return sum(index[path] for path in files)
