"""Is the accented corpus fit for purpose? Decode a sample per accent with a US-English recognizer.

pocketsphinx ships a US English acoustic model, language model and dictionary in its wheel;
it plays the role of a teacher trained on the majority accent. The accented conditions
must come out clearly worse than en-us, otherwise there is nothing for choral to fix.

    python benchmarks/accented/check_corpus.py                       # the committed demo set
    python benchmarks/accented/check_corpus.py --cuts benchmarks/accented/data/pool_cuts.jsonl.gz \
        --references benchmarks/accented/data/pool_references.jsonl.gz --per-condition 60
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import jiwer
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_io import DEMO_DIR, load_cuts, load_references
from corpus_voices import MAJORITY


@lru_cache(maxsize=None)
def _decoder():
    """pocketsphinx with its bundled US English model (one per process)."""
    from pocketsphinx import Decoder

    return Decoder(samprate=16000, loglevel="FATAL")


def decode(audio: np.ndarray) -> str:
    """Recognize 16 kHz float audio; lowercase words."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return (hyp.hypstr if hyp is not None else "").lower()


def _decode_job(job: tuple[str, str, int]) -> tuple[str, str]:
    """(cut id, hypothesis) for one audio file."""
    import soundfile as sf

    cut_id, path, _ = job
    audio, rate = sf.read(path, dtype="float32")
    if rate != 16000:
        raise ValueError(f"{path}: {rate} Hz, expected 16000")
    return cut_id, decode(audio)


def sample(cuts, per_condition: int, seed: int) -> list:
    """Up to ``per_condition`` cuts of every (accent, voice), chosen reproducibly."""
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for cut in cuts:
        groups[(cut.custom["accent"], cut.custom["voice"])].append(cut)
    chosen = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda c: c.id)
        random.Random(f"{seed}:{key}").shuffle(members)
        chosen += members[:per_condition]
    return chosen


def wer_table(hypotheses: dict[str, str], references: dict[str, str], conditions: dict[str, tuple[str, str]]):
    """WER per (accent, voice) and per accent, pooled over words: rows of (accent, voice, cuts, wer)."""
    rows = []
    keys = sorted(set(conditions.values()), key=lambda k: (k[0] != MAJORITY, k))
    accents = sorted({a for a, _ in keys}, key=lambda a: (a != MAJORITY, a))
    for label, members in [(k, [c for c, v in conditions.items() if v == k]) for k in keys] + \
                           [((a, "all"), [c for c, v in conditions.items() if v[0] == a]) for a in accents]:
        refs = [references[c] for c in members]
        hyps = [hypotheses[c] for c in members]
        rows.append((label[0], label[1], len(members), jiwer.wer(refs, hyps)))
    return rows


def main(argv: list[str] | None = None) -> list:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=Path, default=DEMO_DIR / "cuts.jsonl.gz")
    parser.add_argument("--references", type=Path, default=DEMO_DIR / "references.jsonl.gz")
    parser.add_argument("--per-condition", type=int, default=40, help="cuts decoded per (accent, voice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=max(1, multiprocessing.cpu_count()))
    args = parser.parse_args(argv)

    cuts = sample(load_cuts(args.cuts), args.per_condition, args.seed)
    references = {s.id: s.text for s in load_references(args.references)}
    jobs = [(c.id, c.recording.sources[0].source, c.num_samples) for c in cuts]
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        hypotheses = dict(pool.imap_unordered(_decode_job, jobs, chunksize=4))
    seconds = time.perf_counter() - start
    rows = wer_table(hypotheses, references, {c.id: (c.custom["accent"], c.custom["voice"]) for c in cuts})
    print("| accent | voice | cuts | pocketsphinx WER |\n|---|---|---:|---:|")
    for accent, voice, n, wer in rows:
        print(f"| {accent} | {voice} | {n} | {100 * wer:.1f}% |")
    audio_hours = sum(c.duration for c in cuts) / 3600
    print(f"decoded {len(cuts)} cuts ({audio_hours:.2f} h) in {seconds:.0f} s on {args.jobs} processes")
    return rows


if __name__ == "__main__":
    main()
