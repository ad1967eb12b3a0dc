"""Generate the synthetic accented-English corpus (issue #4) or its small demo set.

    python benchmarks/accented/make_corpus.py                 # full corpus -> benchmarks/accented/data
    python benchmarks/accented/make_corpus.py --demo          # committed demo set -> benchmarks/accented/demo

Splits of the full corpus (lhotse cut manifests, FLAC 16 kHz mono):

- ``teacher_train`` / ``teacher_dev``: majority accent (en-us) only, prompts disjoint from the pool;
- ``pool``: every accent; 10% of cuts per accent annotated (supervision text), the rest text None;
- ``pool_references``: the reference of every pool cut (SupervisionSegment, id = cut id).

Everything but piper's sampling noise is fixed by ``--seed`` (piper draws its noise inside
the ONNX graph, which cannot be seeded, so waveforms vary slightly between runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import random
import sys
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment, SupervisionSet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_io import stored_path
from corpus_prompts import Prompt, command_prompts, passage_prompts
from corpus_voices import MAJORITY, SAMPLE_RATE, SPEAKERS, synthesize

# Pool readings of every prompt: (voice, accent, how many pseudo-speakers).
POOL_CONDITIONS: tuple[tuple[str, str, int], ...] = (
    ("joe", "en-us", 2), ("heart", "en-us", 2), ("joe", "en-gb-x-rp", 1), ("heart", "en-gb-x-rp", 1),
    ("joe", "en-gb-scotland", 1), ("joe", "en-029", 1), ("joe", "en-gb-x-gbclan", 1),
)
# Demo: one unperturbed speaker (joe-a) in five accents, so conditions differ in pronunciation only.
DEMO_SPEAKER = "joe-a"
DEMO_ACCENTS = ("en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan")


@dataclass(frozen=True)
class Item:
    """One utterance to synthesize and where it belongs."""

    cut_id: str
    split: str
    prompt: Prompt
    accent: str
    speaker: str
    voice: str
    seed: int


def opaque_cut_id(split: str, prompt: Prompt, accent: str, speaker: str, seed: int) -> str:
    """``split-accent-speaker-<hash>``: the prompt stays hidden, so ids reveal no grouping."""
    digest = hashlib.sha1(f"{seed}:{split}:{prompt.id}:{accent}:{speaker}".encode()).hexdigest()[:12]
    return f"{split}-{accent}-{speaker}-{digest}"


def _item(split: str, prompt: Prompt, accent: str, speaker: str, voice: str, seed: int) -> Item:
    cut_id = opaque_cut_id(split, prompt, accent, speaker, seed)
    return Item(cut_id, split, prompt, accent, speaker, voice, zlib.crc32(f"{seed}:{cut_id}".encode()))


def _readings(split: str, prompts: list[Prompt], conditions, rng: random.Random, seed: int) -> list[Item]:
    """Every prompt read under every condition by distinct random pseudo-speakers of the voice."""
    items = []
    for prompt in prompts:
        for voice, accent, count in conditions:
            for spk in rng.sample(SPEAKERS[voice], count):
                items.append(_item(split, prompt, accent, spk.name, voice, seed))
    return items


def _majority_readings(split: str, prompts: list[Prompt], per_prompt: int, rng: random.Random,
                       seed: int) -> list[Item]:
    """Each prompt read by ``per_prompt`` distinct en-us pseudo-speakers of any voice."""
    speakers = [s for group in SPEAKERS.values() for s in group]
    return [_item(split, prompt, MAJORITY, s.name, s.voice, seed)
            for prompt in prompts for s in rng.sample(speakers, per_prompt)]


def plan_full(seed: int, pool_prompts: int, dev_prompts: int, train_prompts: int,
              train_readings: int, dev_readings: int) -> list[Item]:
    """Items of teacher_train, teacher_dev and pool; teacher prompts never occur in the pool."""
    rng = random.Random(seed)
    passage = passage_prompts()
    commands = command_prompts(pool_prompts - len(passage) + dev_prompts + train_prompts, seed)
    n_pool = pool_prompts - len(passage)
    pool = passage + commands[:n_pool]
    dev = commands[n_pool:n_pool + dev_prompts]
    train = commands[n_pool + dev_prompts:]
    return (_majority_readings("teacher_train", train, train_readings, rng, seed)
            + _majority_readings("teacher_dev", dev, dev_readings, rng, seed)
            + _readings("pool", pool, POOL_CONDITIONS, rng, seed))


def plan_demo(seed: int, n_prompts: int) -> list[Item]:
    """The demo set: a few passage sentences and commands, each read by joe-a in five accents."""
    passage = passage_prompts()[:max(1, n_prompts // 20)]
    prompts = passage + command_prompts(n_prompts - len(passage), seed + 1)
    return [_item("demo", prompt, accent, DEMO_SPEAKER, "joe", seed) for prompt in prompts for accent in DEMO_ACCENTS]


def _render(job: tuple[Item, str]) -> tuple[str, int]:
    """Synthesize one item to FLAC (kept if already there: reruns resume); its sample count."""
    item, path = job
    if Path(path).exists():
        return item.cut_id, sf.info(path).frames
    audio = synthesize(item.prompt.spoken, item.accent, item.speaker, item.seed)
    tmp = path + ".tmp"
    sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    Path(tmp).rename(path)
    return item.cut_id, len(audio)


def synthesize_all(items: list[Item], audio_dir: Path, jobs: int, flat: bool) -> dict[str, tuple[str, int]]:
    """Render every item on ``jobs`` processes; cut id -> (audio path, samples)."""
    paths = {}
    for item in items:
        folder = audio_dir if flat else audio_dir / item.split
        folder.mkdir(parents=True, exist_ok=True)
        paths[item.cut_id] = str(folder / f"{item.cut_id}.flac")
    out: dict[str, tuple[str, int]] = {}
    work = [(item, paths[item.cut_id]) for item in items]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for done, (cut_id, samples) in enumerate(pool.imap_unordered(_render, work, chunksize=4), 1):
            out[cut_id] = (paths[cut_id], samples)
            if done % 500 == 0 or done == len(work):
                print(f"  synthesized {done}/{len(work)}", flush=True)
    return out


def annotated_ids(items: list[Item], fraction: float, seed: int) -> set[str]:
    """A ``fraction`` of cut ids per accent (stratified, at least one per accent)."""
    by_accent: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_accent[item.accent].append(item.cut_id)
    chosen: set[str] = set()
    for accent, ids in sorted(by_accent.items()):
        ids = sorted(ids)
        random.Random(f"{seed}:{accent}").shuffle(ids)
        chosen.update(ids[:max(1, round(fraction * len(ids)))])
    return chosen


def _cut(item: Item, path: str, samples: int, text: str | None) -> MonoCut:
    """A cut over the whole recording; its supervision carries ``text`` (None = unannotated)."""
    duration = samples / SAMPLE_RATE
    source = AudioSource(type="file", channels=[0], source=stored_path(Path(path)))
    recording = Recording(id=item.cut_id, sources=[source],
                          sampling_rate=SAMPLE_RATE, num_samples=samples, duration=duration)
    custom = {"accent": item.accent, "voice": item.voice}
    supervision = SupervisionSegment(id=item.cut_id, recording_id=item.cut_id, start=0.0, duration=duration,
                                     channel=0, text=text, speaker=item.speaker, language="en", custom=dict(custom))
    return MonoCut(id=item.cut_id, start=0.0, duration=duration, channel=0, recording=recording,
                   supervisions=[supervision], custom={**custom, "annotated": text is not None})


def _reference(item: Item, samples: int) -> SupervisionSegment:
    """The evaluation-only reference of one cut."""
    return SupervisionSegment(id=item.cut_id, recording_id=item.cut_id, start=0.0, duration=samples / SAMPLE_RATE,
                              channel=0, text=item.prompt.text, speaker=item.speaker, language="en",
                              custom={"accent": item.accent, "voice": item.voice, "prompt": item.prompt.id,
                                      "domain": item.prompt.domain})


def write_split(items: list[Item], audio: dict[str, tuple[str, int]], cuts_path: Path,
                references_path: Path | None, annotated: set[str] | None) -> None:
    """Write one split's cuts (and references for the relabelled ones)."""
    items = sorted(items, key=lambda i: i.cut_id)
    cuts = [_cut(i, audio[i.cut_id][0], audio[i.cut_id][1],
                 i.prompt.text if annotated is None or i.cut_id in annotated else None) for i in items]
    CutSet.from_cuts(cuts).to_file(cuts_path)
    if references_path is not None:
        SupervisionSet.from_segments([_reference(i, audio[i.cut_id][1]) for i in items]).to_file(references_path)


def summarize(items: list[Item], audio: dict[str, tuple[str, int]]) -> dict:
    """Cuts and hours per split and per pool accent."""
    summary: dict = defaultdict(lambda: {"cuts": 0, "hours": 0.0})
    for item in items:
        hours = audio[item.cut_id][1] / SAMPLE_RATE / 3600
        for key in (item.split, f"{item.split}/{item.accent}/{item.voice}"):
            summary[key]["cuts"] += 1
            summary[key]["hours"] += hours
    return {k: {"cuts": v["cuts"], "hours": round(v["hours"], 3)} for k, v in sorted(summary.items())}


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="write the small committed demo set instead")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default data/ or demo/ beside this file)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=max(1, multiprocessing.cpu_count()))
    parser.add_argument("--pool-prompts", type=int, default=330, help="x 9 readings = pool cuts")
    parser.add_argument("--dev-prompts", type=int, default=120)
    parser.add_argument("--train-prompts", type=int, default=1600)
    parser.add_argument("--train-readings", type=int, default=3)
    parser.add_argument("--dev-readings", type=int, default=2)
    parser.add_argument("--demo-prompts", type=int, default=40, help="x 5 accents; keeps the demo under 10 MB")
    parser.add_argument("--annotated-fraction", type=float, default=0.1)
    args = parser.parse_args(argv)
    args.out = args.out or here / ("demo" if args.demo else "data")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Plan, synthesize, write manifests, print hours per split and the synthesis time."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.demo:
        items = plan_demo(args.seed, args.demo_prompts)
    else:
        items = plan_full(args.seed, args.pool_prompts, args.dev_prompts, args.train_prompts,
                          args.train_readings, args.dev_readings)
    print(f"{len(items)} utterances to synthesize on {args.jobs} processes -> {args.out}", flush=True)
    start = time.perf_counter()
    audio = synthesize_all(items, args.out / "audio", args.jobs, flat=args.demo)
    seconds = time.perf_counter() - start
    by_split: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        by_split[item.split].append(item)
    for split, split_items in by_split.items():
        relabelled = split in ("pool", "demo")
        annotated = annotated_ids(split_items, args.annotated_fraction, args.seed) if relabelled else None
        name = "cuts.jsonl.gz" if args.demo else f"{split}_cuts.jsonl.gz"
        references = (args.out / ("references.jsonl.gz" if args.demo else f"{split}_references.jsonl.gz")
                      if relabelled else None)
        write_split(split_items, audio, args.out / name, references, annotated)
    summary = {"synthesis_seconds": round(seconds, 1), "jobs": args.jobs, "seed": args.seed,
               "bytes": _bytes(args.out), "splits": summarize(items, audio)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    for key, value in summary["splits"].items():
        print(f"{key:45s} {value['cuts']:6d} cuts {value['hours']:7.3f} h")
    print(f"synthesis {seconds:.0f} s on {args.jobs} processes; {summary['bytes'] / 2**20:.1f} MiB in {args.out}")
    return summary


if __name__ == "__main__":
    main()
