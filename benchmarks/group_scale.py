"""Time and measure ``group_hypotheses`` on synthetic n-best lists (default: 1,000,000 cuts).

The corpus imitates read speech with templated prompts: a vocabulary of
pseudo-words with Zipf-like frequencies, about 50 prompts per template, each
template 1-5 fixed words and 3-12 slots that prompts fill with random words,
1-20 readings per prompt in shuffled order, and for each reading 3-8 n-best
hypotheses: the best one substitutes (and occasionally drops) words at a
per-reading error rate of 0-15%, the others differ from it in about one word
in fifteen. About 0.2% of the cuts have no hypotheses at all. Generation is
timed separately and is not part of the measurement.

Prompts of one template share their fixed words, so a few of them overlap by
half or more of their words; the grouping links those legitimately (their
Jaccard similarity passes the threshold), which is what purity and pair
precision below 1 mostly measure.

Reported: wall time, memory (resident set size before the call, the peak
during it, and the process peak ``ru_maxrss``), groups, singletons, largest
group, and grouping quality against the known prompt of every cut:

* purity: fraction of cuts whose group's majority prompt is their own prompt;
* completeness: fraction of cuts in their prompt's largest group;
* pair precision / recall: of the same-group pairs, how many share a prompt; of
  the same-prompt pairs, how many share a group.

Usage: ``python benchmarks/group_scale.py [--cuts 100000] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

try:
    from choral.pipeline.group import Grouping, GroupingConfig, group_hypotheses
except ModuleNotFoundError as error:  # pragma: no cover - setup problem, not a benchmark result
    raise SystemExit(f"{error}: install choral first (make install, or pip install -e .)") from error

_CONSONANTS = list("bdfgklmnprstvz") + ["ch", "sh", "th", "tr", "st"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ee"]
_NEWLINE = -1  # token that ends a hypothesis in the generated token stream
_DELETED = -2  # token dropped from the best hypothesis

TARGET_SECONDS = 300.0  # for 1,000,000 cuts on 2 cores
TARGET_MIB = 4096.0

Sampler = Callable[[int], np.ndarray]  # count -> that many random word ids


@dataclass
class Corpus:
    """Synthetic hypotheses and, for every cut, the prompt it reads (-1: no hypotheses)."""

    hypotheses: list[list[str]]
    prompt_of_cut: np.ndarray
    n_prompts: int
    n_templates: int
    vocabulary: int


# --- generation --------------------------------------------------------------------------


def make_vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """``size`` distinct pseudo-words of 1-4 syllables."""
    words: dict[str, None] = {}
    while len(words) < size:
        n_syllables = rng.integers(1, 5, size)
        for count in n_syllables:
            consonants = rng.integers(0, len(_CONSONANTS), count)
            vowels = rng.integers(0, len(_VOWELS), count)
            words["".join(_CONSONANTS[c] + _VOWELS[v] for c, v in zip(consonants, vowels))] = None
            if len(words) == size:
                break
    return list(words)


def zipf_sampler(size: int, offset: float, rng: np.random.Generator) -> Sampler:
    """Draw word ids with probability proportional to ``1 / (rank + offset)``."""
    weights = 1.0 / (np.arange(size) + offset)
    cdf = np.cumsum(weights / weights.sum())

    def draw(count: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, rng.random(count)), size - 1).astype(np.int32)

    return draw


def ragged_gather(
    indptr: np.ndarray, data: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``data[indptr[r]:indptr[r+1]]`` for ``rows``, and each row's length."""
    lengths = indptr[rows + 1] - indptr[rows]
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return data[np.repeat(indptr[rows], lengths) + offsets], lengths


def make_prompts(
    n_prompts: int, n_templates: int, common: Sampler, content: Sampler, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Prompts as CSR word ids: templates of 1-5 fixed words and 3-12 slots, in random order."""
    n_fixed = rng.integers(1, 6, n_templates)
    n_slots = rng.integers(3, 13, n_templates)
    template_len = n_fixed + n_slots
    template_ptr = np.concatenate([[0], np.cumsum(template_len)])
    fixed_word = common(int(template_len.sum()))
    # Slot positions: the n_slots[t] positions with the smallest random keys in template t.
    template = np.repeat(np.arange(n_templates), template_len)
    order = np.lexsort((rng.random(template.size), template))
    rank = np.empty(template.size, np.int64)
    rank[order] = np.arange(template.size) - np.repeat(template_ptr[:-1], template_len)
    template_words = np.where(rank < np.repeat(n_slots, template_len), -1, fixed_word)
    template_of_prompt = rng.integers(0, n_templates, n_prompts)
    prompt_words, prompt_len = ragged_gather(template_ptr, template_words, template_of_prompt)
    slots = prompt_words == -1
    prompt_words[slots] = content(int(slots.sum()))
    return np.concatenate([[0], np.cumsum(prompt_len)]), prompt_words


def make_chunk(
    cut_prompt: np.ndarray,
    prompt_ptr: np.ndarray,
    prompt_words: np.ndarray,
    vocab: list[str],
    common: Sampler,
    rng: np.random.Generator,
) -> list[list[str]]:
    """N-best lists for the readings ``cut_prompt`` (one prompt id per cut)."""
    n = cut_prompt.size
    # Best hypothesis: substitutions at a per-reading rate, a few deletions.
    best, best_len = ragged_gather(prompt_ptr, prompt_words, cut_prompt)
    rate = np.repeat(rng.uniform(0.0, 0.15, n), best_len)
    draw = rng.random(best.size)
    best = np.where(draw < rate, common(best.size), best)
    best[draw > 1.0 - rate / 5] = _DELETED
    # Alternatives: copies of the best hypothesis with ~1 word in 15 replaced.
    n_hyp = rng.integers(3, 9, n)
    n_hyp[rng.random(n) < 0.002] = 0  # no hypotheses (e.g. nothing decoded)
    best_ptr = np.concatenate([[0], np.cumsum(best_len)])
    hyp_cut = np.repeat(np.arange(n), n_hyp)
    tokens, hyp_len = ragged_gather(best_ptr, best, hyp_cut)
    first = np.zeros(hyp_cut.size, bool)
    first[np.cumsum(n_hyp)[n_hyp > 0] - n_hyp[n_hyp > 0]] = True
    alternative = (rng.random(tokens.size) < 1 / 15) & ~np.repeat(first, hyp_len) & (tokens != _DELETED)
    tokens[alternative] = common(int(alternative.sum()))
    # Text: one joined string with a newline token after every hypothesis.
    ends = np.cumsum(hyp_len)
    stream = np.insert(tokens, ends, _NEWLINE)
    stream = stream[stream != _DELETED]
    names = vocab + ["\n"]  # index -1 is the newline
    text = " ".join(map(names.__getitem__, stream.tolist()))
    texts = list(map(str.strip, text.split("\n")))[:-1]
    hyp_ptr = np.concatenate([[0], np.cumsum(n_hyp)]).tolist()
    return [texts[a:b] for a, b in zip(hyp_ptr[:-1], hyp_ptr[1:])]


def make_corpus(n_cuts: int, vocabulary: int, seed: int) -> Corpus:
    """``n_cuts`` synthetic n-best lists, 1-20 readings per prompt, in shuffled order."""
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(vocabulary, rng)
    common = zipf_sampler(vocabulary, 10.0, rng)  # template words, recognition errors
    content = zipf_sampler(vocabulary, 300.0, rng)  # slot words: flatter distribution
    readings = rng.integers(1, 21, n_cuts)  # more than enough prompts
    n_prompts = int(np.searchsorted(np.cumsum(readings), n_cuts) + 1)
    readings = readings[:n_prompts]
    n_templates = max(1, n_prompts // 50)
    prompt_ptr, prompt_words = make_prompts(n_prompts, n_templates, common, content, rng)
    cut_prompt = rng.permutation(np.repeat(np.arange(n_prompts), readings)[:n_cuts])
    hypotheses: list[list[str]] = []
    for start in range(0, n_cuts, 100_000):
        part = cut_prompt[start : start + 100_000]
        hypotheses += make_chunk(part, prompt_ptr, prompt_words, vocab, common, rng)
    no_words = np.fromiter((not any(h) for h in hypotheses), bool, n_cuts)
    prompt_of_cut = np.where(no_words, -1, cut_prompt)
    return Corpus(hypotheses, prompt_of_cut, n_prompts, n_templates, vocabulary)


# --- measurement ---------------------------------------------------------------------------


def rss_mib() -> float:
    """Current resident set size in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Peak resident set size during a block.

    Uses the kernel's high-water mark (reset through ``/proc/self/clear_refs``)
    where allowed, and a 20 ms sampling thread in any case.
    """

    def __enter__(self) -> "PeakRss":
        self.peak = rss_mib()
        self.kernel = _reset_high_water_mark()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.kernel:
            self.peak = max(self.peak, _high_water_mark_mib())


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _high_water_mark_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def quality(labels: np.ndarray, prompts: np.ndarray) -> dict[str, float]:
    """Purity, completeness and pair precision / recall over cuts that have words."""
    keep = prompts >= 0
    groups, prompts = labels[keep], prompts[keep]
    n, n_prompts = groups.size, int(prompts.max()) + 1
    # Contingency table as its non-zero cells: (group, prompt) -> count.
    cells, count = np.unique(groups * n_prompts + prompts, return_counts=True)
    best_in_group = np.zeros(int(groups.max()) + 1, np.int64)
    np.maximum.at(best_in_group, cells // n_prompts, count)
    best_in_prompt = np.zeros(n_prompts, np.int64)
    np.maximum.at(best_in_prompt, cells % n_prompts, count)

    def pairs(sizes: np.ndarray) -> float:
        return float((sizes * (sizes - 1) // 2).sum())

    together = pairs(count)
    return {
        "purity": best_in_group.sum() / n,
        "completeness": best_in_prompt.sum() / n,
        "pair precision": together / max(pairs(np.bincount(groups)), 1.0),
        "pair recall": together / max(pairs(np.bincount(prompts)), 1.0),
    }


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    """Two-column table."""
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}\n" + "-" * (width + 22))
    for name, value in rows:
        print(f"{name:<{width}}  {value:>18}")


def main(argv: list[str] | None = None) -> int:
    """Generate the corpus, time one ``group_hypotheses`` call, print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=1_000_000, help="number of cuts (default 1,000,000)")
    parser.add_argument("--vocabulary", type=int, default=8_000, help="distinct words (default 8,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus")
    parser.add_argument("--profile", action="store_true", help="print the top functions by time (slower)")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also report the traced allocation peak (slower)"
    )
    args = parser.parse_args(argv)
    config = GroupingConfig()

    started = time.perf_counter()
    corpus = make_corpus(args.cuts, args.vocabulary, args.seed)
    generation = time.perf_counter() - started
    baseline = rss_mib()

    profiler = cProfile.Profile() if args.profile else None
    if args.tracemalloc:
        tracemalloc.start()
    with PeakRss() as peak:
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        grouping: Grouping = group_hypotheses(corpus.hypotheses, config)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else None
    tracemalloc.stop()

    scores = quality(grouping.labels, corpus.prompt_of_cut)
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_hyps = sum(map(len, corpus.hypotheses))
    print_table(
        "group_scale: MinHash/LSH grouping of synthetic n-best lists",
        [
            ("cuts", f"{args.cuts:,}"),
            ("prompts / templates", f"{corpus.n_prompts:,} / {corpus.n_templates:,}"),
            ("hypotheses (top_k used)", f"{n_hyps:,} ({config.top_k})"),
            ("vocabulary", f"{corpus.vocabulary:,}"),
            ("cuts without hypotheses", f"{int((corpus.prompt_of_cut < 0).sum()):,}"),
            ("config", f"perm={config.num_perm} bands={config.bands} t={config.jaccard_threshold}"),
            ("generation (not timed)", f"{generation:.1f} s"),
            ("group_hypotheses wall time", f"{elapsed:.1f} s"),
            ("throughput", f"{args.cuts / elapsed:,.0f} cuts/s"),
            ("RSS before call", f"{baseline:,.0f} MiB"),
            ("peak RSS during call", f"{peak.peak:,.0f} MiB"),
            ("peak added by call", f"{peak.peak - baseline:,.0f} MiB"),
            ("process peak (ru_maxrss)", f"{max_rss:,.0f} MiB"),
            *([("traced allocation peak", f"{traced_peak:,.0f} MiB")] if traced_peak is not None else []),
            ("groups", f"{grouping.n_groups:,}"),
            ("singletons", f"{grouping.n_singletons:,}"),
            ("largest group", f"{grouping.largest:,}"),
            ("split components", f"{grouping.n_split:,}"),
            *((name, f"{value:.4f}") for name, value in scores.items()),
            ("1M-cut target: <= 300 s", "met" if elapsed <= TARGET_SECONDS else "MISSED"),
            ("1M-cut target: peak <= 4 GiB", "met" if max_rss <= TARGET_MIB else "MISSED"),
        ],
    )
    if profiler:
        print()
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
