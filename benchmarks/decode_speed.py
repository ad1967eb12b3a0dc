"""Real-time factor of `choral decode`'s batched beam search vs per-utterance search (n-best 8, beam 8).

Measured on the committed demo set (200 cuts, 0.14 h, 5 accents) with the default
teacher, the way the decode stage runs it: features, encoder, modified beam
search, exact n-best rescoring. The peer is the same search run one utterance at
a time (what a straightforward implementation does), in the same process.

    .venv/bin/python benchmarks/decode_speed.py                  # default teacher, all 200 demo cuts
    .venv/bin/python benchmarks/decode_speed.py --teacher PATH --cuts 50

``--sherpa CKPT_OR_DIR``: choral decoding the exported teacher (icefall layout; a
stateless checkpoint is exported first, as ``choral export-teacher`` does) against
sherpa-onnx decoding the same files in the same run: same cuts, same batches (about
``--batch-seconds`` of audio each, sherpa-onnx's ``decode_streams``), same threads,
same search (greedy; ``modified_beam_search`` with ``max_active_paths`` = ``--beam``),
from samples to 1-best on both sides (features included, audio reading not).

    .venv/bin/python benchmarks/decode_speed.py --sherpa pipeline/teacher/default_teacher.pt --threads 1 --beam 4
    .venv/bin/python benchmarks/decode_speed.py --threads 1 --workers 1   # + the decode stage with a loader

``--workers N [M ...]`` (instead of the comparison above): the decode stage end to end (audio, features,
search, writing) with 0 and each given number of loader workers, through the torch DataLoader (the stage's
loader) and through the ProcessPoolExecutor it replaced (kept here only to compare), on the same cuts in the
same run, the median of ``--repeat`` runs each.

``--precision``: the teacher's network in float32 and in float16 on ``--device`` (features precomputed,
batches of ``--batch-seconds``): seconds (median of ``--repeat``), and how far the n-best agree (cuts with
the same n-best texts in the same order, the same 1-best, the largest score difference of a text in both),
and what ``--precision auto``'s guard decides on the first batch. On the CPU float16 is real half arithmetic
(slower; the figures check agreement); on CUDA it is what a GPU session measures.

    .venv/bin/python benchmarks/decode_speed.py --threads 1 --workers 1 2 --cuts 100
    .venv/bin/python benchmarks/decode_speed.py --precision --device cuda --cuts 200

``--snr``: the decode stage end to end with ``measure_snr`` (each cut's energy SNR, ``custom.snr_db``: a second
read of its audio) against the same stage without it (the peer), runs interleaved, median of ``--repeat``.

    .venv/bin/python benchmarks/decode_speed.py --snr --threads 1 --repeat 5
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "accented"))

from corpus_io import load_demo

import choral.pipeline.decode as decode_stage
from choral.pipeline.decode import DecodeConfig, decode_manifest
from choral.pipeline.manifest import write_cuts
from choral.pipeline.teacher import open_teacher, parameter_count, resolve_teacher


def timed(teacher, features: list, batch_seconds: float) -> float:
    """Seconds to decode all feature matrices in consecutive batches of about ``batch_seconds`` of audio."""
    started = time.perf_counter()
    batch, frames = [], 0
    for item in features:
        batch.append(item)
        frames += item.shape[0]
        if frames >= batch_seconds * 100:
            teacher.decode_features(batch)
            batch, frames = [], 0
    if batch:
        teacher.decode_features(batch)
    return time.perf_counter() - started


def sherpa_batches(cuts: list, batch_seconds: float) -> list[list[int]]:
    """Indices of consecutive cuts in batches of about ``batch_seconds`` of audio (the decode stage's batching)."""
    out: list[list[int]] = [[]]
    seconds = 0.0
    for i, cut in enumerate(cuts):
        out[-1].append(i)
        seconds += cut.duration
        if seconds >= batch_seconds:
            out.append([])
            seconds = 0.0
    return [b for b in out if b]


def choral_exported(teacher, samples: list, batches: list[list[int]], method: str, beam: int) -> float:
    """Seconds for choral's ``icefall`` backend to go from samples to the 1-best of every cut."""
    from choral.pipeline.teacher.features import log_mel
    from choral.pipeline.teacher.search import modified_beam_search

    started = time.perf_counter()
    for batch in batches:
        features = [log_mel(samples[i]) for i in batch]
        if method == "greedy_search":
            teacher.greedy_features(features)
        elif method == "modified_beam_search":
            projected, lengths, _ = teacher.model.encode(features)
            modified_beam_search(teacher.model, projected, lengths, beam=beam)
        else:  # choral decode: the beam's n-best rescored exactly, frames and embeddings kept
            teacher.decode_features(features)
    return time.perf_counter() - started


def sherpa_decoded(directory: Path, samples: list, batches: list[list[int]], method: str, beam: int,
                   threads: int) -> float:
    """Seconds for sherpa-onnx to go from the same samples to the 1-best of every cut, batch by batch."""
    import sherpa_onnx

    recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(directory / "encoder.onnx"), decoder=str(directory / "decoder.onnx"),
        joiner=str(directory / "joiner.onnx"), tokens=str(directory / "tokens.txt"), num_threads=threads,
        sample_rate=16_000, feature_dim=80, decoding_method=method, max_active_paths=beam)
    started = time.perf_counter()
    for batch in batches:
        streams = []
        for i in batch:
            stream = recognizer.create_stream()
            stream.accept_waveform(16_000, samples[i])
            streams.append(stream)
        recognizer.decode_streams(streams)
    return time.perf_counter() - started


def sherpa_main(args: argparse.Namespace) -> None:
    """choral vs sherpa-onnx on the exported teacher: throughput per search, one run."""
    import tempfile

    from choral.pipeline.teacher.features import load_audio
    from choral.pipeline.teacher.icefall_backend import load_icefall_teacher
    from choral.pipeline.teacher.icefall_export import export_icefall
    from choral.pipeline.teacher.stateless import load_stateless

    source = Path(args.sherpa)
    with tempfile.TemporaryDirectory() as scratch:
        directory = source
        if source.is_file():
            directory = Path(scratch) / "teacher"
            export_icefall(*load_stateless(source), directory)
        teacher = load_icefall_teacher(directory, beam=args.beam, nbest=min(8, args.beam))
        cuts = list(load_demo()[0])[: args.cuts]
        samples = [load_audio(cut) for cut in cuts]
        audio = sum(cut.duration for cut in cuts)
        batches = sherpa_batches(cuts, args.batch_seconds)
        choral_exported(teacher, samples[:2], [[0, 1]], "greedy_search", args.beam)  # warm-up
        sherpa_decoded(directory, samples[:2], [[0, 1]], "greedy_search", args.beam, args.threads)
        print(f"exported teacher {source} (icefall layout), {len(cuts)} demo cuts, {audio:.0f} s of audio, "
              f"{len(batches)} batches of ~{args.batch_seconds:g} s, {args.threads} thread(s), beam / "
              f"max_active_paths {args.beam}; samples -> 1-best, features included")
        print(f"median of {args.repeat} interleaved runs each (choral, sherpa-onnx, choral, ...)")
        print(f"{'search':<34}{'choral s':>10}{'sherpa s':>10}{'choral xRT':>12}{'sherpa xRT':>12}{'ratio':>8}")
        for method in ("greedy_search", "modified_beam_search"):
            runs = [(choral_exported(teacher, samples, batches, method, args.beam),
                     sherpa_decoded(directory, samples, batches, method, args.beam, args.threads))
                    for _ in range(args.repeat)]
            ours, theirs = (statistics.median(times) for times in zip(*runs))
            print(f"{method:<34}{ours:>10.2f}{theirs:>10.2f}{audio / ours:>12.1f}{audio / theirs:>12.1f}"
                  f"{theirs / ours:>7.2f}x")
        ours = statistics.median(choral_exported(teacher, samples, batches, "decode", args.beam)
                                 for _ in range(args.repeat))
        print(f"{'choral decode (n-best, rescored)':<34}{ours:>10.2f}{'':>10}{audio / ours:>12.1f}")
        print("ratio = choral's throughput / sherpa-onnx's (above 1: choral is faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="default")
    parser.add_argument("--cuts", type=int, default=200, help="demo cuts to decode")
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--beam", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sherpa", help="stateless checkpoint or icefall-layout directory: choral vs sherpa-onnx")
    parser.add_argument("--repeat", type=int, default=3,
                        help="--sherpa, --workers, --precision: runs of each case (the median is shown)")
    parser.add_argument("--workers", type=int, nargs="*", default=[],
                        help="also run the decode stage (audio loading included) with 0 and these numbers of "
                             "loader worker processes, DataLoader and the old process pool, and print the RTFs")
    parser.add_argument("--precision", action="store_true",
                        help="float32 vs float16 teacher network on --device: speed and n-best agreement")
    parser.add_argument("--snr", action="store_true", help="the decode stage with and without measure_snr")
    parser.add_argument("--device", default="cpu", help="--precision: cpu, cuda or cuda:N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.sherpa:
        sherpa_main(args)
        return
    if args.precision:
        precision_case(args)
        return

    cuts = list(load_demo()[0])[: args.cuts]
    if args.snr:
        snr_case(cuts, args)
        return
    if args.workers:
        loader_case(cuts, args)
        return
    teacher = open_teacher(resolve_teacher(args.teacher), beam=args.beam, nbest=min(8, args.beam))
    started = time.perf_counter()
    features = teacher.features(cuts)  # the teacher's own input (normalised or raw fbank)
    feature_seconds = time.perf_counter() - started
    audio = sum(cut.duration for cut in cuts)
    timed(teacher, features[:4], 1e9)  # warm-up
    batched = timed(teacher, features, args.batch_seconds)
    per_utterance = timed(teacher, features, 0.0)

    print(f"teacher {args.teacher}: {parameter_count(teacher.model) / 1e6:.2f}M parameters, beam {args.beam}, "
          f"n-best {min(8, args.beam)}; {len(cuts)} demo cuts, {audio:.0f} s of audio; {args.threads} threads")
    print(f"features (fbank, both modes): {feature_seconds:.1f} s, RTF {feature_seconds / audio:.4f}")
    print(f"{'mode':<24}{'seconds':>10}{'RTF':>10}{'x real time':>14}")
    for name, seconds in ((f"batched ({args.batch_seconds:g} s)", batched), ("per-utterance (peer)", per_utterance)):
        total = seconds + feature_seconds
        print(f"{name:<24}{total:>10.1f}{total / audio:>10.4f}{audio / total:>14.1f}")
    speed_up = (per_utterance + feature_seconds) / (batched + feature_seconds)
    print(f"speed-up of batched over per-utterance: {speed_up:.2f}x")


def _one_thread() -> None:
    torch.set_num_threads(1)


def pool_with_features(planned, teacher, workers: int):
    """The loader the decode stage had before the DataLoader: a spawned ProcessPoolExecutor, one thread per
    worker, ``2 x workers`` batches in flight, in order (kept here only for the comparison)."""
    options = getattr(teacher, "feature_options", None)
    if workers == 0 or options is None:
        for refused, batch in planned:
            yield refused, batch, None
        return
    mel, normalize = options()
    pending: deque = deque()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        for refused, batch in planned:
            pending.append((refused, batch, pool.submit(decode_stage.load_features, batch, mel, normalize)
                            if batch else None))
            while len(pending) > 2 * workers:
                ready, ready_batch, future = pending.popleft()
                yield ready, ready_batch, future.result() if future is not None else ([], {})
        while pending:
            ready, ready_batch, future = pending.popleft()
            yield ready, ready_batch, future.result() if future is not None else ([], {})


def snr_case(cuts: list, args: argparse.Namespace) -> None:
    """The decode stage end to end with and without ``measure_snr``, runs interleaved, median of ``--repeat``."""
    teacher = open_teacher(resolve_teacher(args.teacher), beam=args.beam, nbest=min(8, args.beam))
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "cuts.jsonl.gz"
        write_cuts(cuts, manifest)
        audio = sum(cut.duration for cut in cuts)
        for _ in range(args.repeat):
            for measure in (False, True):
                config = DecodeConfig(beam=args.beam, nbest=min(8, args.beam), batch_duration=args.batch_seconds,
                                      measure_snr=measure)
                started = time.perf_counter()
                decode_manifest(manifest, Path(folder) / f"snr-{measure}", args.teacher, config, teacher=teacher,
                                force=True)
                times[measure].append(time.perf_counter() - started)
        same = _texts(Path(folder) / "snr-False" / "decoded.jsonl.gz") == _texts(
            Path(folder) / "snr-True" / "decoded.jsonl.gz")
    print(f"decode stage, {len(cuts)} cuts ({audio:.0f} s), {args.threads} thread(s), median of {args.repeat} "
          f"interleaved runs; n-best identical: {same}")
    print(f"{'measure_snr':<14}{'seconds':>10}{'RTF':>10}{'runs':>40}")
    for measure in (False, True):
        median = statistics.median(times[measure])
        print(f"{str(measure):<14}{median:>10.2f}{median / audio:>10.4f}"
              f"{' '.join(f'{t:.2f}' for t in times[measure]):>40}")
    ratio = statistics.median(times[True]) / statistics.median(times[False])
    print(f"with the SNR / without (peer): {ratio:.3f}x the time")


def loader_case(cuts: list, args: argparse.Namespace) -> None:
    """The decode stage end to end (audio, features, search, writing): in-process loading, then each number
    of workers through the DataLoader and through the old pool, runs interleaved, median of ``--repeat``."""
    dataloader = decode_stage._with_features
    teacher = open_teacher(resolve_teacher(args.teacher), beam=args.beam, nbest=min(8, args.beam))
    cases = [(0, "in process")] + [(w, name) for w in args.workers if w > 0 for name in ("DataLoader", "old pool")]
    times: dict[tuple[int, str], list[float]] = {case: [] for case in cases}
    outputs: dict[tuple[int, str], bytes] = {}
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "cuts.jsonl.gz"
        write_cuts(cuts, manifest)
        audio = sum(cut.duration for cut in cuts)
        for _ in range(args.repeat):
            for workers, name in cases:
                decode_stage._with_features = pool_with_features if name == "old pool" else dataloader
                config = DecodeConfig(beam=args.beam, nbest=min(8, args.beam), batch_duration=args.batch_seconds,
                                      workers=workers)
                out = Path(folder) / f"w{workers}-{name.replace(' ', '')}"
                started = time.perf_counter()
                decode_manifest(manifest, out, args.teacher, config, teacher=teacher, force=True)
                times[(workers, name)].append(time.perf_counter() - started)
                outputs[(workers, name)] = _texts(out / "decoded.jsonl.gz")
        decode_stage._with_features = dataloader
    same = len(set(outputs.values())) == 1
    print(f"decode stage, {len(cuts)} cuts ({audio:.0f} s), {args.threads} model thread(s), median of "
          f"{args.repeat} interleaved runs; n-best identical across loaders: {same}")
    print(f"{'workers':<10}{'loader':<14}{'seconds':>10}{'RTF':>10}{'runs':>30}")
    base = statistics.median(times[(0, "in process")])
    for case in cases:
        median = statistics.median(times[case])
        print(f"{case[0]:<10}{case[1]:<14}{median:>10.2f}{median / audio:>10.4f}"
              f"{', '.join(f'{t:.2f}' for t in times[case]):>30}   {base / median:.2f}x in-process")


def _texts(path: Path) -> bytes:
    from choral.pipeline.manifest import read_cuts

    return repr([(c.id, c.custom["nbest"]) for c in read_cuts(path)]).encode()


def precision_case(args: argparse.Namespace) -> None:
    """float32 vs float16 decoding of the same feature batches on ``--device``: speed and agreement."""
    from choral.pipeline.teacher.device import resolve_device
    from choral.pipeline.teacher.precision import half_keeps_nbest

    device = resolve_device(args.device)
    teacher = open_teacher(resolve_teacher(args.teacher), beam=args.beam, nbest=min(8, args.beam)).to(device)
    cuts = list(load_demo()[0])[: args.cuts]
    features = teacher.features(cuts)  # the teacher's own input (normalised or raw fbank)
    audio = sum(cut.duration for cut in cuts)
    batches: list[list] = [[]]
    frames = 0
    for item in features:
        batches[-1].append(item)
        frames += item.shape[0]
        if frames >= args.batch_seconds * 100:
            batches.append([])
            frames = 0
    batches = [b for b in batches if b]
    results: dict[str, list] = {}
    times: dict[str, list[float]] = {"float32": [], "float16": []}
    for precision in ("float32", "float16"):  # warm-up (CUDA kernels, the half copy)
        teacher.set_precision(precision)
        teacher.decode_features(batches[0][:2])
    for _ in range(args.repeat):
        for precision in ("float32", "float16"):
            teacher.set_precision(precision)
            started = time.perf_counter()
            decoded = [r for batch in batches for r in teacher.decode_features(batch)]
            times[precision].append(time.perf_counter() - started)
            results[precision] = decoded
    full, half = results["float32"], results["float16"]
    same_nbest = sum([h[0] for h in a.nbest] == [h[0] for h in b.nbest] for a, b in zip(full, half))
    same_best = sum(a.nbest[0][0] == b.nbest[0][0] for a, b in zip(full, half))
    diffs = [abs(score - dict((t, s) for t, _, s in b.nbest)[text]) for a, b in zip(full, half)
             for text, _, score in a.nbest if text in {t for t, _, _ in b.nbest}]
    first = len(batches[0])
    verdict = half_keeps_nbest({str(i): [h[0] for h in r.nbest] for i, r in enumerate(full[:first])},
                               {str(i): [h[0] for h in r.nbest] for i, r in enumerate(half[:first])})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"teacher {args.teacher} on {device} ({name}); {len(cuts)} demo cuts, {audio:.0f} s of audio, "
          f"{len(batches)} batches of ~{args.batch_seconds:g} s, beam {args.beam}; median of {args.repeat}")
    print(f"{'precision':<12}{'seconds':>10}{'RTF':>10}{'x real time':>14}")
    for precision in ("float32", "float16"):
        median = statistics.median(times[precision])
        print(f"{precision:<12}{median:>10.2f}{median / audio:>10.5f}{audio / median:>14.1f}")
    print(f"float16 speed-up: {statistics.median(times['float32']) / statistics.median(times['float16']):.2f}x")
    print(f"same n-best (texts and order): {same_nbest}/{len(cuts)}; same 1-best: {same_best}/{len(cuts)}; "
          f"max |score diff| of a text in both: {max(diffs):.4g} (median {statistics.median(diffs):.3g}, "
          f"{len(diffs)} texts)")
    print(f"auto's guard on the first batch ({first} cuts): {verdict.precision} ({verdict.reason})")


if __name__ == "__main__":
    main()
