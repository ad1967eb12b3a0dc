"""Long-form audio: how well ``prepare`` splits a long recording into its utterances, and what decode makes of them.

The 200 demo utterances (benchmarks/accented/demo/audio, real speech) are joined in file order with
``--gap`` seconds of low noise (Gaussian, RMS 0.001) between them, into one recording of about 10 minutes.
``choral run --until decode`` (default teacher, input.audio_dir holding the long file and the 200 files
themselves) then prepares and decodes both. Reported:

* pieces found against utterances joined;
* boundary error: the largest of |piece start - utterance start| and |piece end - utterance end|, in
  seconds (mean, max, how many under 0.15 s), where the utterance is the whole file (its own leading and
  trailing silence included);
* labels: how many pieces get the same 1-best as their utterance's file decoded alone, and the WER of the
  pieces' 1-bests against those of the files (the default teacher's 1-best moves with a shift of its input
  by 10 ms on the utterances it is unsure of, so this measures the teacher's stability as much as the split);
* the prepare and decode stage times, and the run's peak resident memory.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/longform_split.py [--gap 0.6] [--out /tmp/longform-bench]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf

from choral.pipeline.references import read_references
from choral.pipeline.text import normalize
from choral.pipeline.wer import pooled_word_errors

DEMO_AUDIO = Path(__file__).resolve().parents[1] / "benchmarks" / "accented" / "demo" / "audio"


def build(folder: Path, gap: float, seed: int = 0) -> list[tuple[str, float, float]]:
    """Write ``folder/long.flac`` and the demo files beside it; return (file id, start, end) per utterance."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    truth = []
    position = 0
    for path in sorted(DEMO_AUDIO.glob("*.flac")):
        samples, rate = sf.read(path, dtype="float32")
        if parts:
            parts.append((0.001 * rng.standard_normal(int(gap * rate))).astype(np.float32))
            position += len(parts[-1])
        truth.append((path.stem, position / rate, (position + len(samples)) / rate))
        parts.append(samples)
        position += len(samples)
        shutil.copy(path, folder / path.name)
    sf.write(folder / "long.flac", np.concatenate(parts), 16_000)
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", type=float, default=0.6, help="seconds of low noise between utterances")
    parser.add_argument("--out", type=Path, default=Path("/tmp/longform-bench"))
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    truth = build(args.out / "audio", args.gap)
    total = truth[-1][2]
    (args.out / "run.yaml").write_text("input:\n  audio_dir: audio\ndecode:\n  teacher: default\n")
    choral = Path(sys.executable).parent / "choral"
    subprocess.run([str(choral), "run", str(args.out / "run.yaml"), "--run-dir", str(args.out / "run"),
                    "--until", "decode"], check=True, stdout=subprocess.DEVNULL)
    run = json.loads((args.out / "run" / "run.json").read_text())
    seconds = {stage["stage"]: stage["seconds"] for stage in run["stages"]}
    with gzip.open(args.out / "run" / "decode" / "decoded.jsonl.gz", "rt") as lines:
        entries = [json.loads(line) for line in lines]
    label = {e["id"]: e["custom"]["nbest"][0]["text"] for e in entries}
    pieces = sorted((e for e in entries if e["id"].startswith("long-")), key=lambda e: e["start"])
    print(f"recording: {total:.1f} s, {len(truth)} utterances joined by {args.gap:g} s of low noise")
    print(f"pieces found: {len(pieces)}")
    if len(pieces) == len(truth):
        errors = np.array([max(abs(p["start"] - s), abs(p["start"] + p["duration"] - e))
                           for p, (_, s, e) in zip(pieces, truth)])
        print(f"boundary error: mean {errors.mean():.3f} s, max {errors.max():.3f} s, "
              f"{int((errors < 0.15).sum())}/{len(errors)} under 0.15 s")
        own = [label[name] for name, _, _ in truth]
        split = [label[p["id"]] for p in pieces]
        same = sum(a == b for a, b in zip(own, split))
        print(f"labels: {same}/{len(own)} pieces read as their own file; WER of pieces against the files' "
              f"1-bests {100 * jiwer.wer(own, split):.2f}%")
        references = read_references(DEMO_AUDIO.parent / "references.jsonl.gz")
        truth_text = [normalize(references[name].text) for name, _, _ in truth]
        for what, hypotheses in (("files", own), ("pieces", split)):
            errors, words = pooled_word_errors(truth_text, [normalize(h) for h in hypotheses])
            print(f"WER against the references, {what}: {100 * errors / words:.2f}%")
    for stage in ("prepare", "decode"):
        if stage in seconds:
            print(f"{stage}: {seconds[stage]:.1f} s")
    print(f"peak resident memory of the run: {run['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
