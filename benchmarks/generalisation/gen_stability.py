"""Threshold stability against the annotated fraction: the same pool with 0%, 2%, 5%, 10%, 20% annotated.

For each pool and fraction ``f`` the pool's decoded cuts are re-annotated: ``f`` of every condition's cuts
(``gen_pools.annotated_ids`` with the protocol's seed, so a larger fraction holds the smaller one's cuts
where the hash order agrees) carry their reference text, the others none. Then group -> graph -> tune ->
propagate -> eval run on them (``run_protocol.run_stages``), and the table reports the graph threshold, the
rule and the pairs it was learned from (annotated pairs, of them positive; with confident-teacher pairs,
all pairs used), the tuned values, and WER / help / harm / ECE over that run's unannotated cuts.

At 0% nothing is annotated: the threshold comes from confident-teacher pairs (else a distance quantile),
``tune`` does not run (fewer than 2 annotated cuts), and propagation uses the config's values with the
calibration prior (``PropagateConfig.calibration``) as its decision rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from gen_pools import PoolPlan, annotated_ids
from gen_results import Slice, num, pct, total

DEFAULT_FRACTIONS: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class StabilityRow:
    """One pool at one annotated fraction."""

    pool: str
    fraction: float
    n_annotated: int
    threshold: dict
    params: dict
    overall: Slice


def write_annotated(source: Path, target: Path, texts: dict[str, str], annotated: frozenset[str]) -> None:
    """Copy the decoded manifest ``source`` to ``target`` with reference text only on ``annotated`` cuts."""
    from choral.pipeline.manifest import CutWriter, iter_cuts

    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        stamp = target.with_suffix(".ids.json")
        if stamp.is_file() and json.loads(stamp.read_text()) == sorted(annotated):
            return
    target.parent.mkdir(parents=True, exist_ok=True)
    with CutWriter(target) as writer:
        for cut in iter_cuts(source):
            text = texts[cut.id] if cut.id in annotated else None
            cut.supervisions = [replace(s, text=text) for s in cut.supervisions]
            writer.write(cut)
    target.with_suffix(".ids.json").write_text(json.dumps(sorted(annotated)))


def stability(plan: PoolPlan, pool_run: Path, fractions: Sequence[float], seed: int,
              run: Callable[[Path, Path], tuple[dict[str, Slice], dict, dict]]) -> list[StabilityRow]:
    """Every fraction of one pool; ``run(decoded, out)`` runs the stages and returns (slices, threshold, params)."""
    from choral.pipeline.run import RunPaths

    texts = {item.cut_id: item.prompt.text for item in plan.items}
    rows = []
    for fraction in fractions:
        annotated = annotated_ids(list(plan.items), fraction, seed)
        out = pool_run / "stability" / f"annotated-{fraction:g}"
        decoded = out / "decoded.jsonl.gz"
        write_annotated(RunPaths(pool_run).decoded, decoded, texts, annotated)
        slices, threshold, params = run(decoded, out)
        rows.append(StabilityRow(plan.name, fraction, len(annotated), threshold, params,
                                 total(list(slices.values()))))
    return rows


def _pairs(threshold: dict) -> str:
    rule = threshold.get("rule", "?")
    annotated = f"{threshold.get('n_annotated_pairs', 0)} / {threshold.get('n_annotated_positive', 0)}"
    return f"{annotated} ({rule}; {threshold.get('n_pairs', 0)} pairs used, {threshold.get('n_positive', 0)} positive)"


def stability_section(rows: Sequence[StabilityRow]) -> list[str]:
    """The RESULTS.md section: one row per pool and fraction."""
    lines = ["## Threshold stability against the annotated fraction", "",
             "Each pool's decoded cuts re-annotated at 0%, 2%, 5%, 10% and 20% per condition (`gen_stability.py`), "
             "then group -> graph -> tune -> propagate -> eval. Threshold from = annotated pairs / of them positive "
             "(rule; all pairs the F1 fit used and their positives, confident-teacher pairs included). "
             "At 0% the threshold comes from confident-teacher pairs, tune does not run, and the decision uses "
             "the calibration prior; below `tune.min_annotated` annotated cuts (10) the config's values are held "
             "and only the calibration is fitted (held). Figures over that run's unannotated cuts.", "",
             "| pool | annotated | annotated cuts | threshold | threshold from | tuned alpha / lambda / T / scale | "
             "teacher WER | choral WER | help rate | harm rate | ECE |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        p = row.params
        tuned = (" / ".join(f"{p[k]:g}" for k in ("alpha", "fusion_weight", "temperature", "threshold_scale"))
                 if p else "not tuned")
        if p.get("held"):
            tuned += " (held: calibration only)"
        s = row.overall
        lines.append(f"| {row.pool} | {100 * row.fraction:g}% | {row.n_annotated} | "
                     f"{row.threshold.get('threshold', float('nan')):.2f} | {_pairs(row.threshold)} | {tuned} | "
                     f"{pct(s.wer('teacher'))} | {pct(s.wer('choral'))} | {pct(s.help_rate)} | "
                     f"{pct(s.harm_rate)} | {num(s.ece)} |")
    return lines + [""]
