"""Which step of propagation changed each label, and whether it helped or harmed: a census over development draws.

Each pool's run is replayed in-process with the parameters its ``propagate`` stage recorded (the sidecar of
``rescored.jsonl.gz``, tune's choice included) and the run's teacher scorer (its score memo is reused). A label that
differs from the teacher's 1-best is attributed to

- the in-group decision (:mod:`choral.pipeline.propagate.calibrate`), as ``decision/plain`` (the teacher's veto
  allowed it), ``decision/exempt`` (a winner with a word no n-best says: no veto) or ``decision/corrects`` (a one-word
  correction the veto may not block);
- or the retrieval path that first takes it (:mod:`choral.pipeline.propagate.retrieve`), the paths switched on one at
  a time in their order: ``retrieve/unsure``, ``retrieve/unheard``, ``retrieve/far``, ``retrieve/scored``.

It prints, per step, the labels changed, helped, harmed and word errors saved, then every harmed label (pool,
condition, step, texts, confidence), and with ``--rows FILE`` writes every changed label's row as JSON lines for
offline study. ``--set key=value`` (repeatable) replays with a propagate setting changed, e.g. a retrieval option
the runs were made without. Development draws only (the reported draws are refused):

    .venv/bin/python benchmarks/generalisation/harm_census.py benchmarks/generalisation/data/draw4[1-9]
    .venv/bin/python benchmarks/generalisation/harm_census.py benchmarks/generalisation/data/draw4[1-8] \\
        --set retrieve_hub_scale=20
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before numpy / torch load: the machine is shared

import argparse  # noqa: E402
import json  # noqa: E402
from collections import defaultdict  # noqa: E402
from dataclasses import fields, replace  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from noise_census import pool_snr  # noqa: E402
from replay_common import conditions, dev_rows, read_jsonl, read_references  # noqa: E402

from choral.pipeline.fields import CutResult  # noqa: E402
from choral.pipeline.propagate.calibrate import (  # noqa: E402
    FEATURES,
    Rule,
    SupportBatch,
    _answers,
    _vetoed,
    answer_counts,
    candidates,
    finisher,
)
from choral.pipeline.propagate.config import PropagateConfig  # noqa: E402
from choral.pipeline.propagate.engine import rescore  # noqa: E402
from choral.pipeline.propagate.labels import heard_words  # noqa: E402
from choral.pipeline.propagate.retrieve import hub_ratios, nearest_readings, retrieve  # noqa: E402
from choral.pipeline.propagate.stage import (  # noqa: E402
    decision_inputs,
    propagation_adjacency,
    read_grouped_and_graph,
)
from choral.pipeline.teacher.registry import teacher_scorer  # noqa: E402
from choral.pipeline.teacher.scoring import prefetch  # noqa: E402
from choral.pipeline.text import TextNormalizer  # noqa: E402
from choral.pipeline.wer import word_errors  # noqa: E402

# retrieval's paths in the order retrieve() tries them, each with the settings that switch it off
PATHS: tuple[tuple[str, dict], ...] = (
    ("unsure", {"retrieve_reach": 0.0}),
    ("unheard", {"retrieve_unheard_reach": 0.0}),
    ("far", {"retrieve_far_reach": 0.0}),
    ("scored", {"retrieve_scored_reach": 0.0}),
)
TEACHER = FEATURES.index("teacher")


def run_config(run: Path, overrides: dict | None = None) -> PropagateConfig:
    """The PropagateConfig the run's propagate stage recorded in its sidecar, with ``overrides`` applied."""
    params = json.loads((run / "rescored.jsonl.gz.meta.json").read_text())["params"]["propagate"]
    known = {f.name for f in fields(PropagateConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in known}
    return PropagateConfig(**{**values, **(overrides or {})})


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` for a PropagateConfig field, the value read as YAML (a number, a bool, a list)."""
    key, sep, value = text.partition("=")
    if not sep or key not in {f.name for f in fields(PropagateConfig)}:
        raise argparse.ArgumentTypeError(f"{text!r}: expected key=value with a propagate setting as key")
    parsed = yaml.safe_load(value)
    return key, tuple(parsed) if isinstance(parsed, list) else parsed


def decision_kinds(entries: list, graph, config: PropagateConfig, adjacency, scorer) -> tuple[list[CutResult], dict]:
    """The decision's labels and, per row it changed, how (plain / exempt / corrects) with the features read."""
    distances, sound, readings = decision_inputs(entries, graph, config)
    base = finisher(adjacency, distances, Rule.of(config), config.fusion_weight, sound, readings)
    rule = Rule.of(config)
    kinds: dict[int, dict] = {}

    def finish(batch: SupportBatch, indices: list[int], results: list[CutResult]) -> list[CutResult]:
        out = base(batch, indices, results)
        index = np.asarray(indices, dtype=np.int64)
        sub = adjacency[index][:, index]
        sub_distances = distances[index][:, index]
        sub_sound = sound[index][:, index] if sound is not None else None
        sub_readings = [readings[i] for i in index]
        answers = _answers(batch)
        answered = answer_counts(batch, answers)
        for r, result in enumerate(out):
            if batch.entries[r].reference is not None or result.text == result.teacher_text:
                continue
            found = candidates(batch, sub, r, config.fusion_weight, sub_distances, answers, sub_sound, answered,
                               sub_readings, rule.noisy_pair_snr)
            if found is None:
                continue
            vetoed = _vetoed(found, rule)
            kind = "corrects" if vetoed else "exempt" if found.exempt(rule) else "plain"
            kinds[int(index[r])] = {"kind": kind, "edits": found.edits, "by_sound": found.by_sound,
                                    "unheard": found.unheard, "fluency": found.fluency,
                                    "teacher_margin": float(found.x_winner[TEACHER] - found.x_one_best[TEACHER])}
        return out

    return rescore(entries, adjacency, config, scorer, finish=finish), kinds


def pool_rows(data: Path, run: Path, normalize: TextNormalizer, overrides: dict | None = None,
              snr_from_audio: bool = False) -> list[dict]:
    """One row per unannotated cut whose final label is not its teacher 1-best. ``snr_from_audio`` gives every cut
    whose decode did not measure it (runs decoded before ``custom.snr_db``) the SNR decode would write, read from the
    pool's audio (:func:`noise_census.pool_snr`), so a ``noisy_pair_snr`` setting can be replayed on old runs."""
    references = read_references(data, normalize)
    cuts = read_jsonl(data / "cuts.jsonl.gz")
    condition = conditions(cuts)
    duration = {c["id"]: float(c["duration"]) for c in cuts}
    config = run_config(run, overrides)
    scorer = teacher_scorer(run / "grouped.jsonl.gz", "default")
    entries, graph = read_grouped_and_graph(run / "grouped.jsonl.gz", run / "graph.npz", normalize)
    if snr_from_audio:
        measured = pool_snr(data)[0]
        entries = [e if e.snr_db is not None else replace(e, snr_db=measured[e.cut_id]) for e in entries]
    adjacency = propagation_adjacency(graph, config)
    decided, kinds = decision_kinds(entries, graph, config, adjacency, scorer)
    step = {row: f"decision/{k['kind']}" for row, k in kinds.items()}
    off = {key: value for _, settings in PATHS for key, value in settings.items()}
    previous = decided
    for name, settings in PATHS:  # switch the paths on one at a time, in retrieve's order
        for key in settings:
            off.pop(key)
        now = retrieve(entries, decided, graph, replace(config, **off), scorer, adjacency)
        for row, (a, b) in enumerate(zip(previous, now)):
            if a.text != b.text and row not in step:
                step[row] = f"retrieve/{name}"
        previous = now
    nearest, first, second = nearest_readings(graph, [e.reference for e in entries])
    heard = heard_words(entries)
    hubs = hub_ratios(nearest, [e.reference is not None for e in entries])
    changed = [row for row, (entry, result) in enumerate(zip(entries, previous))
               if entry.reference is None and result.text != result.teacher_text]
    # the teacher scores every changed label against its 1-best in one batched pass, not one cut at a time
    prefetch(scorer, [(entries[row].cut_id, [normalize(previous[row].text), entries[row].hypotheses[0]])
                      for row in changed])
    rows = []
    for row in changed:
        entry, result = entries[row], previous[row]
        reference, best, label = references[entry.cut_id], entry.hypotheses[0], normalize(result.text)
        before, after = word_errors(reference, best), word_errors(reference, label)
        said = {word for text in entry.hypotheses for word in text.split()}
        source = entries[int(nearest[row])].cut_id if nearest[row] >= 0 else None
        known = [w for w in label.split() if w in heard]
        scores = scorer(entry.cut_id, [label, best])
        shape = {"said": sum(w in said for w in label.split()) / max(len(label.split()), 1),
                 "said_heard": sum(w in said for w in known) / len(known) if known else None,
                 "margin": float(scores[0] - scores[1]),
                 "margin_word": float(scores[0] - scores[1]) / max(len(label.split()), 1),
                 "length_ratio": len(label.split()) / max(len(best.split()), 1),
                 "fluency_best": float(entry.scores[0]) / max(len(best.split()), 1),
                 "source": source, "source_condition": condition.get(source or "", None),
                 "hub": float(hubs[nearest[row]]) if nearest[row] >= 0 else None,
                 "d1": float(first[row]), "d2": float(second[row]),
                 "duration_ratio": duration[entry.cut_id] / duration[source] if source in duration else None}
        rows.append({"pool": str(data), "cut": entry.cut_id, "condition": condition.get(entry.cut_id, "?"),
                     "step": step.get(row, "?"), "confidence": result.confidence, "before": before, "after": after,
                     "reference": reference, "best": best, "label": label, "words": len(reference.split()),
                     **shape, **kinds.get(row, {})})
    return rows


def summary(rows: list[dict]) -> str:
    """Per step: changed, helped, harmed, word errors saved."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["step"]].append(r)
    lines = ["| step | changed | helped | harmed | words saved |", "|---|---:|---:|---:|---:|"]
    for name in sorted(by) + ["all"]:
        group = rows if name == "all" else by[name]
        lines.append(f"| {name} | {len(group)} | {sum(r['after'] < r['before'] for r in group)} | "
                     f"{sum(r['after'] > r['before'] for r in group)} | "
                     f"{sum(r['before'] - r['after'] for r in group)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("draws", nargs="+", type=Path, help="development draw folders (each with <pool>/ and runs/)")
    parser.add_argument("--rows", type=Path, help="write every changed label's row here (JSON lines)")
    parser.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                        metavar="KEY=VALUE", help="replay with this propagate setting (repeatable)")
    parser.add_argument("--snr-from-audio", action="store_true",
                        help="cuts decoded without custom.snr_db get it from the pool's audio (replays noisy_pair_snr)")
    args = parser.parse_args(argv)
    overrides = dict(args.overrides)
    rows = dev_rows(parser, args.draws, partial(pool_rows, overrides=overrides, snr_from_audio=args.snr_from_audio))
    print(summary(rows))
    print("\nharmed labels:")
    for r in sorted((r for r in rows if r["after"] > r["before"]), key=lambda r: (r["step"], r["pool"])):
        print(f"- {r['pool']} {r['condition']} {r['step']} p={r['confidence']:.3f} "
              f"errors {r['before']}->{r['after']}: ref '{r['reference']}' | 1-best '{r['best']}' | "
              f"label '{r['label']}'")
    if args.rows:
        with args.rows.open("w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
