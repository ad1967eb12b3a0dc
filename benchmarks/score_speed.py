"""Propagate with the teacher scorer: batched trie lattice passes vs the old one-cut-at-a-time float64 path.

Needs a run directory through `graph` (and `tune` for params.yaml, else the propagate
defaults), e.g. `choral run configs/accented.yaml --until tune`. In one process it
runs `propagate_manifest` (force, no disk memo) with:

- ``old``: the scorer as it was before batching: per cut, stored frames -> projected,
  its texts padded together, joiner in float32, forward algorithm in float64
  (``search.score_texts``), memoised per (cut, text), called one cut at a time;
- ``batched-f32`` (the default), ``batched-f64`` (forward algorithm in float64), and ``pruned-S``
  for each ``--prune`` S (all batched variants: prefix tries, float32 joiner, see
  ``choral.pipeline.teacher.scoring``);

and prints seconds (median of ``--repeats`` for batched-f32, ``--old-repeats`` for old), the ratio to
``old``, cuts whose label differs from ``old``'s (and the WER of each variant when
``--references`` is given), and the largest score difference from ``old`` over every
(cut, text) pair propagate asked for.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/score_speed.py RUN_DIR --references REFS --repeats 3

``--cuts N`` times the scorers alone (no propagate, no labels) on the requests propagate
makes for N of the cuts (recorded from one propagate run with batched-f64): a quick
measurement while iterating.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from choral.kernels import threads
from choral.pipeline.manifest import iter_cuts, read_cuts
from choral.pipeline.propagate import PropagateConfig, load_params, propagate_manifest
from choral.pipeline.references import read_references
from choral.pipeline.teacher.registry import open_teacher, resolve_teacher
from choral.pipeline.teacher.scoring import ScoreOptions
from choral.pipeline.teacher.search import score_texts
from choral.pipeline.text import TextNormalizer
from choral.pipeline.wer import pooled_word_errors


class OldScorer:
    """The pre-batching scorer, rebuilt here as the peer: one cut per call, float64 lattice."""

    def __init__(self, teacher, cuts) -> None:
        self.teacher = teacher
        self.by_id = {cut.id: cut for cut in cuts}
        self.memo: dict[tuple[str, str], float] = {}

    def __call__(self, cut_id: str, texts: Sequence[str]) -> list[float]:
        missing = list(dict.fromkeys(t for t in texts if (cut_id, t) not in self.memo))
        if missing:
            frames = torch.from_numpy(np.asarray(self.by_id[cut_id].load_custom("frames"), dtype=np.float32))
            values = score_texts(self.teacher.model, frames, [self.teacher.tokens.encode(t) for t in missing])
            self.memo.update(((cut_id, t), float(v)) for t, v in zip(missing, values))
        return [self.memo[(cut_id, t)] for t in texts]


def labels_of(path: Path) -> dict[str, str]:
    return {cut.id: cut.custom["choral"][0]["text"] for cut in iter_cuts(path)}


def recorded_requests(grouped: Path, graph: Path, out: Path, config: PropagateConfig, normalizer: TextNormalizer,
                      teacher, cuts, count: int) -> list[tuple[str, list[str]]]:
    """The (cut, texts) requests one propagate run makes, restricted to ``count`` cuts (every few-th one)."""
    scorer = teacher.scorer(cuts, ScoreOptions(dtype="float64"))
    asked: dict[str, list[str]] = {}
    plain = scorer.prefetch

    def recording(requests):
        for cut_id, texts in requests:
            known = asked.setdefault(cut_id, [])
            known.extend(t for t in texts if t not in known)
        plain(requests)

    scorer.prefetch = recording  # type: ignore[method-assign]
    propagate_manifest(grouped, graph, out / "recorded.jsonl.gz", config, normalizer, scorer=scorer, force=True)
    ids = sorted(asked)
    step = max(1, len(ids) // count)
    return [(cut_id, asked[cut_id]) for cut_id in ids[::step][:count]]


def score_only(make_scorer, requests: list[tuple[str, list[str]]], repeats: int) -> tuple[float, object]:
    """Median seconds to score ``requests`` (batched scorers in one call, the old one a cut at a time)."""
    times, scorer = [], None
    for _ in range(repeats):
        scorer = make_scorer()
        started = time.perf_counter()
        if hasattr(scorer, "score_many"):
            scorer.score_many(requests)
        else:
            for cut_id, texts in requests:
                scorer(cut_id, texts)
        times.append(time.perf_counter() - started)
    return statistics.median(times), scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--teacher", default="default")
    parser.add_argument("--references", type=Path, help="reference transcripts (WER of each variant)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of batched-f32 (median)")
    parser.add_argument("--old-repeats", type=int, default=3, help="runs of the old path (median)")
    parser.add_argument("--prune", default="4,8", help="comma-separated labels per frame of the pruned variants")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-old", action="store_true", help="time only the new variants")
    parser.add_argument("--cuts", type=int, default=0,
                        help="time the scorers alone on the requests of this many cuts (0: propagate end to end)")
    args = parser.parse_args()
    threads.apply_to_torch()

    grouped, graph = args.run_dir / "grouped.jsonl.gz", args.run_dir / "graph.npz"
    params = args.run_dir / "params.yaml"
    config = load_params(params) if params.is_file() else PropagateConfig()
    teacher = open_teacher(resolve_teacher(args.teacher), device=args.device)
    cuts = read_cuts(grouped)
    normalizer = TextNormalizer()
    references = ({k: normalizer(v.text) for k, v in read_references(args.references).items()}
                  if args.references else None)
    out = Path(tempfile.mkdtemp(prefix="score_speed_"))
    print(f"{len(cuts)} cuts, params {'from ' + str(params) if params.is_file() else 'defaults'}, "
          f"{threads.budget()} thread(s), device {args.device}")

    def run(name: str, make_scorer, repeats: int) -> tuple[float, object]:
        times, scorer = [], None
        for _ in range(repeats):
            scorer = make_scorer()
            started = time.perf_counter()
            propagate_manifest(grouped, graph, out / f"{name}.jsonl.gz", config, normalizer, scorer=scorer,
                               force=True)
            times.append(time.perf_counter() - started)
        return statistics.median(times), scorer

    variants: list[tuple[str, ScoreOptions | None, int]] = []
    if not args.skip_old:
        variants.append(("old", None, args.old_repeats))
    variants += [("batched-f32", ScoreOptions(), args.repeats), ("batched-f64", ScoreOptions(dtype="float64"), 1)]
    variants += [(f"pruned-{w}", ScoreOptions(prune=int(w)), 1) for w in args.prune.split(",") if w]
    results = {}
    if args.cuts:
        requests = recorded_requests(grouped, graph, out, config, normalizer, teacher, cuts, args.cuts)
        print(f"scoring only: {len(requests)} cuts, {sum(len(t) for _, t in requests):,} (cut, text) pairs")
    for name, options, repeats in variants:
        if options is None:
            def make_scorer():
                return OldScorer(teacher, cuts)
        else:
            def make_scorer(options=options):
                return teacher.scorer(cuts, options)
        if args.cuts:
            seconds, scorer = score_only(make_scorer, requests, repeats)
            results[name] = (seconds, scorer.memo, {})
        else:
            seconds, scorer = run(name, make_scorer, repeats)
            results[name] = (seconds, scorer.memo, labels_of(out / f"{name}.jsonl.gz"))
        print(f"  {name}: {seconds:.2f} s", flush=True)

    base_name = "old" if "old" in results else "batched-f64"
    base_seconds, base_memo, base_labels = results[base_name]
    pairs = list(base_memo)
    print(f"{len(pairs):,} (cut, text) pairs scored; differences against {base_name}")
    print(f"{'variant':14s} {'seconds':>8s} {'x ' + base_name:>9s} {'labels differ':>14s} "
          f"{'max |score diff|':>17s} {'WER':>7s}")
    for name, (seconds, memo, labels) in results.items():
        differ = str(sum(labels[k] != base_labels[k] for k in base_labels)) if labels else "-"
        common = [p for p in pairs if p in memo]
        diff = max((abs(memo[p] - base_memo[p]) for p in common), default=float("nan"))
        wer = ""
        if references is not None and labels:
            ids = [k for k in labels if k in references]
            errors, words = pooled_word_errors([references[k] for k in ids], [normalizer(labels[k]) for k in ids])
            wer = f"{errors / max(words, 1):.4f}"
        print(f"{name:14s} {seconds:8.2f} {base_seconds / seconds:9.2f} {differ:>14s} {diff:17.3g} {wer:>7s}")


if __name__ == "__main__":
    main()
