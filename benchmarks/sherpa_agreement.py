"""Does sherpa-onnx read choral's exported teacher as choral does? 1-best agreement on the demo set.

``choral export-teacher CKPT DIR`` writes a stateless checkpoint in icefall's
export-onnx.py layout; sherpa-onnx's ``OfflineRecognizer.from_transducer`` (a
client no one here wrote) and choral's ``icefall`` backend then decode the same
cuts (configs/demo.yaml's 200 cuts) from the same samples:

- greedy: sherpa-onnx ``greedy_search`` vs choral's greedy search;
- beam: sherpa-onnx ``modified_beam_search`` (``max_active_paths=BEAM``) vs choral's
  batched modified beam search with ``beam=BEAM``, its final beam read two ways:
  ``search``: the hypothesis sherpa-onnx's rule picks from a final beam (highest
  score per symbol, :func:`~choral.pipeline.teacher.search.length_normalized_best`),
  i.e. the same search; ``decode``: the 1-best of ``choral decode`` (the beam's
  n-best rescored by exact RNN-T log-likelihood), what the pipeline uses.

Agreement is token-for-token equality of the 1-best. Both sides run with the
same number of threads; sherpa-onnx decodes the streams in batches of
``--sherpa-batch`` (``decode_streams``), choral in batches of about 60 s of audio.

    .venv/bin/python benchmarks/sherpa_agreement.py pipeline/teacher/default_teacher.pt
    .venv/bin/python benchmarks/sherpa_agreement.py CKPT --beam 4 --cuts 200 --threads 1 --show 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "accented"))

from corpus_io import load_demo

from choral.pipeline.teacher.features import load_audio
from choral.pipeline.teacher.icefall_backend import IcefallTeacher, load_icefall_teacher
from choral.pipeline.teacher.search import length_normalized_best, modified_beam_search


def export(checkpoint: Path, out: Path) -> None:
    """``choral export-teacher CHECKPOINT OUT`` (the command a user runs), in a child process."""
    choral = Path(sys.executable).with_name("choral")
    subprocess.run([str(choral), "export-teacher", str(checkpoint), str(out)], check=True,
                   stdout=subprocess.DEVNULL)


def batches(items: list, frames_per_batch: int) -> list[list[int]]:
    """Indices of ``items`` (feature matrices) in consecutive batches of about ``frames_per_batch`` frames."""
    out: list[list[int]] = [[]]
    frames = 0
    for i, item in enumerate(items):
        out[-1].append(i)
        frames += item.shape[0]
        if frames >= frames_per_batch:
            out.append([])
            frames = 0
    return [b for b in out if b]


def choral_best(teacher: IcefallTeacher, features: list[np.ndarray], beam: int) -> dict[str, list[list[int]]]:
    """choral's 1-best token ids per cut: greedy, beam (sherpa's final pick) and decode (exact rescoring)."""
    out: dict[str, list[list[int]]] = {"greedy": [], "search": [], "decode": []}
    order = batches(features, 6000)
    by_index: dict[str, dict[int, list[int]]] = {key: {} for key in out}
    for batch in order:
        chunk = [features[i] for i in batch]
        for i, (_, tokens, _) in zip(batch, teacher.greedy_features(chunk)):
            by_index["greedy"][i] = tokens
        projected, lengths, _ = teacher.model.encode(chunk)
        beams = modified_beam_search(teacher.model, projected, lengths, beam=beam)
        for i, hyps in zip(batch, beams):
            by_index["search"][i] = list(length_normalized_best(hyps, teacher.model.context_size).tokens)
        for i, result in zip(batch, teacher.decode_features(chunk)):
            by_index["decode"][i] = list(result.nbest[0][1]) if result.nbest else []
    for key in out:
        out[key] = [by_index[key][i] for i in range(len(features))]
    return out


def sherpa_best(directory: Path, samples: list[np.ndarray], method: str, beam: int, threads: int,
                batch: int) -> tuple[list[list[int]], float]:
    """sherpa-onnx's 1-best token ids per cut, and the seconds its decoding took."""
    import sherpa_onnx

    ids = {}
    for line in (directory / "tokens.txt").read_text(encoding="utf-8").splitlines():
        symbol, index = line.split()
        ids[symbol.replace("\u2581", " ")] = int(index)
    recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(directory / "encoder.onnx"), decoder=str(directory / "decoder.onnx"),
        joiner=str(directory / "joiner.onnx"), tokens=str(directory / "tokens.txt"), num_threads=threads,
        sample_rate=16_000, feature_dim=80, decoding_method=method, max_active_paths=beam)
    results: list[list[int]] = []
    started = time.perf_counter()
    for begin in range(0, len(samples), batch):
        streams = []
        for audio in samples[begin: begin + batch]:
            stream = recognizer.create_stream()
            stream.accept_waveform(16_000, audio)
            streams.append(stream)
        recognizer.decode_streams(streams)
        results.extend([ids[symbol] for symbol in stream.result.tokens] for stream in streams)
    return results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a stateless checkpoint (exported with choral export-teacher)")
    parser.add_argument("--export-dir", type=Path, help="where to export (default: a temporary folder)")
    parser.add_argument("--cuts", type=int, default=200)
    parser.add_argument("--beam", type=int, default=4, help="choral's beam = sherpa-onnx's max_active_paths")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sherpa-batch", type=int, default=16, help="streams per decode_streams call")
    parser.add_argument("--show", type=int, default=3, help="print this many disagreements per comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        directory = args.export_dir or Path(scratch) / "teacher"
        export(args.checkpoint, directory)
        teacher = load_icefall_teacher(directory, beam=args.beam, nbest=args.beam)
        cuts = list(load_demo()[0])[: args.cuts]
        samples = [load_audio(cut) for cut in cuts]
        features = teacher.features(cuts)
        ours = choral_best(teacher, features, args.beam)
        theirs = {method: sherpa_best(directory, samples, method, args.beam, args.threads, args.sherpa_batch)[0]
                  for method in ("greedy_search", "modified_beam_search")}

    print(f"{args.checkpoint}: {len(cuts)} demo cuts ({sum(c.duration for c in cuts):.0f} s), "
          f"{args.threads} thread(s), beam {args.beam} = sherpa-onnx max_active_paths {args.beam}, "
          f"sherpa-onnx batches of {args.sherpa_batch} streams, dither 0")
    rows = [("greedy", "greedy_search", "greedy"),
            ("beam (same search, sherpa's final pick)", "modified_beam_search", "search"),
            ("beam (choral decode 1-best, exact rescoring)", "modified_beam_search", "decode")]
    for name, method, key in rows:
        same = [a == b for a, b in zip(ours[key], theirs[method])]
        print(f"{name:<48} {sum(same):>4}/{len(same)} = {100 * sum(same) / len(same):6.2f}%")
        shown = 0
        for cut, ok, a, b in zip(cuts, same, ours[key], theirs[method]):
            if not ok and shown < args.show:
                print(f"    {cut.id}: choral {teacher.tokens.decode(a)!r} | sherpa-onnx {teacher.tokens.decode(b)!r}")
                shown += 1


if __name__ == "__main__":
    main()
