"""Measure a teacher on the synthetic corpus: 1-best and n-best oracle WER per accent.

    .venv/bin/python benchmarks/accented/eval_teacher.py --teacher pipeline/teacher/default_teacher.pt
    .venv/bin/python benchmarks/accented/eval_teacher.py --teacher benchmarks/accented/data/stateless.pt

``--teacher`` is anything choral's ``--teacher`` accepts (``default``, a character or
stateless checkpoint, an exported ONNX or icefall-layout directory), opened through
the teacher registry, so the numbers are those of the backend choral itself would use.

Rows: ``teacher_dev`` (majority accent, prompts unseen in training) and every
accent of the ``pool`` (its references file), with each row's 1-best WER over the
majority's. The quality bar for the default teacher (issue 13): majority WER <= 8%
at beam 8; every accented condition at least 2x the majority WER (errors to fix);
n-best oracle WER (8-best) at most 0.6x the 1-best WER on accented prompts within
the training vocabulary (the right answer is often in reach).

The summary splits the accented cuts by prompt: those whose words all occur in
``teacher_train``'s transcripts, and those with a word the teacher never heard in
training (the pool's free sentences). For the second kind the right answer is out
of reach of any n-best of a character model trained on a small template
vocabulary; the split shows how much of the oracle ratio that explains.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import jiwer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_io import load_cuts, load_references

from choral.pipeline.errors import ChoralError
from choral.pipeline.teacher import open_teacher, resolve_teacher
from choral.pipeline.teacher.registry import backend_of
from choral.pipeline.text import normalize

DATA = Path(__file__).resolve().parent / "data"


def oracle(reference: str, texts: list[str]) -> str:
    """The n-best entry with the fewest word errors against the reference."""
    return min(texts, key=lambda t: jiwer.process_words(reference, t or "<empty>").wer if reference else 0)


def training_vocabulary(manifest: Path) -> set[str]:
    """Every normalised word of the training transcripts."""
    return {word for cut in load_cuts(manifest) for s in cut.supervisions if s.text
            for word in normalize(s.text).split()}


def word_errors(refs: list[str], hyps: list[str]) -> int:
    out = jiwer.process_words(refs, [h or "<empty>" for h in hyps])
    return out.substitutions + out.deletions + out.insertions


def print_vocabulary_split(accented: dict[str, list[tuple[str, str, str]]]) -> None:
    """Accented 1-best and oracle WER for prompts inside / outside the training vocabulary."""
    total = sum(word_errors([r for r, _, _ in rows], [b for _, b, _ in rows]) for rows in accented.values())
    print("\naccented cuts by prompt vocabulary")
    print(f"{'prompts':32s} {'cuts':>5s} {'1-best WER':>11s} {'oracle WER':>11s} {'oracle/1-best':>14s} "
          f"{'share of errors':>16s}")
    for kind in ("in vocabulary", "unseen words"):
        rows = accented.get(kind, [])
        if not rows:
            continue
        refs = [r for r, _, _ in rows]
        words = sum(len(r.split()) for r in refs)
        one = word_errors(refs, [b for _, b, _ in rows])
        orc = word_errors(refs, [o for _, _, o in rows])
        print(f"{kind:32s} {len(rows):5d} {100 * one / words:10.2f}% {100 * orc / words:10.2f}% "
              f"{orc / one if one else 0:14.2f} {100 * one / max(total, 1):15.1f}%")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="`default`, a checkpoint or a teacher directory")
    parser.add_argument("--dev", type=Path, default=DATA / "teacher_dev_cuts.jsonl.gz")
    parser.add_argument("--pool", type=Path, default=DATA / "pool_cuts.jsonl.gz")
    parser.add_argument("--references", type=Path, default=DATA / "pool_references.jsonl.gz")
    parser.add_argument("--per-accent", type=int, default=200, help="pool cuts decoded per accent")
    parser.add_argument("--train", type=Path, default=DATA / "teacher_train_cuts.jsonl.gz",
                        help="the teacher's training manifest: its words define 'in vocabulary'")
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--nbest", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)

    try:
        path = resolve_teacher(args.teacher)
        teacher = open_teacher(path, beam=args.beam, nbest=args.nbest)
    except ChoralError as error:
        raise SystemExit(f"eval_teacher.py: error: {error}") from None
    vocabulary = training_vocabulary(args.train)
    references = {s.id: s.text for s in load_references(args.references)}
    rows: dict[str, list] = defaultdict(list)
    for cut in load_cuts(args.dev):
        rows["majority (teacher_dev)"].append((cut, " ".join(s.text for s in cut.supervisions if s.text)))
    taken: dict[str, int] = defaultdict(int)
    for cut in load_cuts(args.pool):
        accent = str(cut.custom.get("accent")) if cut.custom else "unknown"
        if taken[accent] < args.per_accent:
            taken[accent] += 1
            rows[f"pool {accent}"].append((cut, references[cut.id]))

    print(f"teacher {path} ({backend_of(path).name} backend), beam {args.beam}, n-best {args.nbest}")
    print(f"{'condition':32s} {'cuts':>5s} {'1-best WER':>11s} {'oracle WER':>11s} {'oracle/1-best':>14s} "
          f"{'1-best/majority':>16s}")
    majority = None
    started, audio = time.perf_counter(), 0.0
    accented: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for name, items in rows.items():
        refs, best, best_oracle = [], [], []
        for start in range(0, len(items), args.batch):
            chunk = items[start:start + args.batch]
            for (cut, reference), result in zip(chunk, teacher.decode([c for c, _ in chunk])):
                texts = [text for text, _, _ in result.nbest]
                ref = normalize(reference)
                refs.append(ref)
                best.append(texts[0] if texts else "")
                best_oracle.append(oracle(ref, texts) if texts else "")
                audio += cut.duration
                if name.startswith("pool ") and name != "pool en-us":
                    kind = "in vocabulary" if set(ref.split()) <= vocabulary else "unseen words"
                    accented[kind].append((ref, best[-1], best_oracle[-1]))
        one = jiwer.wer(refs, [b or "<empty>" for b in best])
        orc = jiwer.wer(refs, [b or "<empty>" for b in best_oracle])
        majority = one if majority is None else majority  # the first row is teacher_dev
        print(f"{name:32s} {len(refs):5d} {100 * one:10.2f}% {100 * orc:10.2f}% {orc / one if one else 0:14.2f} "
              f"{one / majority if majority else 0:16.2f}", flush=True)
    print_vocabulary_split(accented)
    elapsed = time.perf_counter() - started
    print(f"decoded {audio / 3600:.2f} h in {elapsed:.0f} s (RTF {elapsed / audio:.3f})")


if __name__ == "__main__":
    main()
