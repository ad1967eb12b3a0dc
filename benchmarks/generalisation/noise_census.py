"""How noisy each reading is, and which changed labels join two noisy readings: evidence for the next harm step.

A cut's noise is read from its audio as an energy-percentile SNR: with ``E_t`` the energy in dB of 10 ms frames
(:func:`choral.pipeline.segment.frame_energies`, the segmenter's; :mod:`choral.pipeline.noise`, which decode writes
as ``custom.snr_db``),

    snr_db = E_90 - E_10,

the 90th percentile of the frame energies (speech) less the 10th (the floor between words and at the edges). Clean
synthesis has near-silent floors (60-90 dB); the protocol's ``us-noisy`` condition (white noise at 10 dB over the
whole clip) reads 10-17 dB. It prints each condition's SNR range over the given draws and, with ``--rows`` (the JSON
lines ``harm_census.py --rows`` writes; they carry each label's source reading), the changed / helped / harmed /
saved labels split by whether the cut and its source reading are below ``--below`` dB, per step. Development draws
only (the reported draws are refused):

    .venv/bin/python benchmarks/generalisation/harm_census.py benchmarks/generalisation/data/draw{41..74} \\
        --rows /tmp/rows.jsonl > /dev/null
    .venv/bin/python benchmarks/generalisation/noise_census.py benchmarks/generalisation/data/draw{41..74} \\
        --rows /tmp/rows.jsonl --below 20
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf
from replay_common import POOLS, REPORTED, conditions, read_jsonl

from choral.pipeline import noise
from choral.pipeline.segment import SAMPLING_RATE


def energy_snr_db(samples: np.ndarray, sample_rate: int) -> float:
    """:func:`choral.pipeline.noise.energy_snr_db` (decode's ``custom.snr_db``) of 16 kHz audio, refusing another rate.

    Shapes: ``samples`` (n,) or (n, channels) -> the first channel is read."""
    if sample_rate != SAMPLING_RATE:
        raise ValueError(f"energy_snr_db reads {SAMPLING_RATE} Hz audio, not {sample_rate} Hz")
    x = np.asarray(samples, dtype=np.float64)
    return noise.energy_snr_db(x[:, 0] if x.ndim > 1 else x)


@cache
def pool_snr(data: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Each cut's SNR (rounded as decode rounds it) and condition (``custom.accent``) of one protocol pool."""
    snr = {}
    cuts = read_jsonl(data / "cuts.jsonl.gz")
    for cut in cuts:
        source = Path(cut["recording"]["sources"][0]["source"])
        # run_protocol writes paths relative to the working directory it ran in (the repository root)
        path = source if source.is_absolute() or not (data / source).exists() else data / source
        samples, rate = sf.read(path, dtype="float32")
        snr[cut["id"]] = round(energy_snr_db(samples, rate), 2)
    return snr, conditions(cuts)


def split(rows: list[dict], snr: dict[str, float], below: float) -> dict[tuple[str, bool, bool], list[int]]:
    """Per (step, cut noisy, source noisy): changed, helped, harmed, word errors saved. A row without a source
    reading counts its source as not noisy."""
    out: dict[tuple[str, bool, bool], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in rows:
        key = (r["step"], snr.get(r["cut"], np.inf) < below, snr.get(r.get("source") or "", np.inf) < below)
        tally = out[key]
        tally[0] += 1
        tally[1] += r["after"] < r["before"]
        tally[2] += r["after"] > r["before"]
        tally[3] += r["before"] - r["after"]
    return dict(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("draws", nargs="+", type=Path, help="development draws' data folders (run_protocol --data)")
    parser.add_argument("--rows", type=Path, help="harm_census.py --rows output over the same draws")
    parser.add_argument("--below", type=float, default=20.0, help="a reading under this SNR (dB) is noisy")
    args = parser.parse_args(argv)
    snr: dict[str, float] = {}
    by_condition: dict[str, list[float]] = defaultdict(list)
    for draw in args.draws:
        if draw.resolve().name in REPORTED:
            parser.error(f"{draw}: a reported draw; measure development draws only")
        for pool in POOLS:
            values, condition = pool_snr(draw / pool)
            snr.update(values)
            for cut, value in values.items():
                by_condition[condition[cut]].append(value)
    print("| condition | cuts | min | 10% | median | 90% | max (dB) |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, values in sorted(by_condition.items()):
        q = np.percentile(values, [0, 10, 50, 90, 100])
        print(f"| {name} | {len(values)} | " + " | ".join(f"{v:.1f}" for v in q) + " |")
    if args.rows:
        rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
        print(f"\n| step | cut < {args.below:g} dB | source < {args.below:g} dB | changed | helped | harmed | saved |\n"
              "|---|---|---|---:|---:|---:|---:|")
        for (step, noisy, source), t in sorted(split(rows, snr, args.below).items()):
            print(f"| {step} | {noisy} | {source} | {t[0]} | {t[1]} | {t[2]} | {t[3]} |")


if __name__ == "__main__":
    main()
