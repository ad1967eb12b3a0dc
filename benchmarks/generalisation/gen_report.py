"""RESULTS.md of the generalisation protocol, rendered from the measured slices (pure: no files, no runs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from gen_conditions import Condition
from gen_loco import Candidate, LocoOutcome, Verdict
from gen_results import (
    MAX_EXCESS,
    TABLE_HEADER,
    Slice,
    headline,
    mean_reduction,
    num,
    pct,
    reliability_table,
    table_row,
    total,
)
from gen_stability import StabilityRow, stability_section


@dataclass(frozen=True)
class PoolResult:
    """One pool's run with the config as given: per-condition slices, its threshold fit and tuned values."""

    name: str
    n_prompts: int
    oov_rate: float
    slices: dict[str, Slice]
    annotated: dict[str, int]
    threshold: dict = field(default_factory=dict)      # threshold.json: threshold, rule, n_pairs, n_positive
    params: dict = field(default_factory=dict)         # tuned alpha, lambda, T, threshold scale (empty: not tuned)
    seconds: float = float("nan")
    prompt_sets: dict[str, Slice] = field(default_factory=dict)   # prompt set (gen_pools) -> slice

    @property
    def pairs(self) -> str:
        if not self.threshold:
            return "-"
        fit = self.threshold
        if "n_annotated_pairs" in fit and fit["rule"] == "annotated+confident-teacher":
            return (f"{fit['n_annotated_pairs']:,} / {fit['n_annotated_positive']:,} ({fit['rule']}: "
                    f"{fit.get('n_pairs', 0):,} / {fit.get('n_positive', 0):,} used)")
        return f"{fit.get('n_pairs', 0):,} / {fit.get('n_positive', 0):,} ({fit['rule']})"


@dataclass(frozen=True)
class AblationResult:
    """One method (or the baseline, ``verdict`` None) on every whole pool: per-condition slices, run seconds."""

    candidate: Candidate
    runs: dict[str, dict[str, Slice]]          # pool -> condition -> slice
    seconds: dict[str, float]                  # pool -> seconds of its group -> eval run
    verdict: Verdict | None


PROMPT_SETS = {"teacher-text": "in the teacher's training text", "new": "new, words all in the teacher's text",
               "new-words-command": "commands with new words", "new-words-sentence": "sentences with new words"}


def _pool_section(pool: PoolResult, conditions: Sequence[Condition], control: str) -> list[str]:
    params = ", ".join(f"{k} {v:g}" for k, v in pool.params.items() if k != "held") or "not tuned (config values)"
    threshold = f"{pool.threshold['threshold']:.4g}" if pool.threshold else "-"
    lines = [f"### Pool `{pool.name}`: {pool.n_prompts} prompts x {len(conditions)} conditions",
             "",
             f"Out-of-vocabulary words (not in the teacher's training text): {pct(pool.oov_rate)} of the prompts' "
             f"words. Graph threshold {threshold}; tuned: {params}; run time {pool.seconds:.0f} s.", "",
             *TABLE_HEADER]
    for condition in conditions:
        if condition.name in pool.slices:
            label = f"{condition.name} (control)" if condition.name == control else condition.name
            lines.append(table_row(label, pool.slices[condition.name], pool.annotated.get(condition.name, 0),
                                   pool.pairs))
    lines.append(table_row("**overall**", total(list(pool.slices.values())), sum(pool.annotated.values()),
                           pool.pairs))
    for name, s in sorted(pool.prompt_sets.items()):
        lines.append(table_row(f"prompts: {PROMPT_SETS.get(name, name)}", s, "-", pool.pairs))
    return lines + ["", "Headline: " + headline(pool.slices, control) + ".", ""]


def _merged(pools: Sequence[PoolResult]) -> dict[str, Slice]:
    names = list(dict.fromkeys(name for pool in pools for name in pool.slices))
    return {name: total([pool.slices[name] for pool in pools if name in pool.slices]) for name in names}


def _all_pools_section(pools: Sequence[PoolResult], conditions: Sequence[Condition], control: str) -> list[str]:
    merged = _merged(pools)
    annotated = {name: sum(pool.annotated.get(name, 0) for pool in pools) for name in merged}
    lines = ["### All pools together", "", *TABLE_HEADER]
    for condition in conditions:
        if condition.name in merged:
            label = f"{condition.name} (control)" if condition.name == control else condition.name
            lines.append(table_row(label, merged[condition.name], annotated[condition.name], "per pool"))
    everything = total(list(merged.values()))
    lines.append(table_row("**overall**", everything, sum(annotated.values()), "per pool"))
    sets = list(dict.fromkeys(name for pool in pools for name in pool.prompt_sets))
    for name in sorted(sets):
        merged_set = total([pool.prompt_sets[name] for pool in pools if name in pool.prompt_sets])
        lines.append(table_row(f"prompts: {PROMPT_SETS.get(name, name)}", merged_set, "-", "per pool"))
    lines += ["", "Headline, all pools: " + headline(merged, control) + ".", "",
              f"Reliability of choral's confidence over all {everything.calibration.n:,} unannotated cuts "
              f"(correct = label equals the reference after normalisation; ECE {num(everything.ece)}):", "",
              *reliability_table(everything), ""]
    return lines


def _loco_section(outcomes: Sequence[LocoOutcome], candidates: Sequence[Candidate], pools: Sequence[str],
                  control: str) -> list[str]:
    lines = ["## Leave-one-condition-out", "",
             "Candidates (`gen_loco.py`): " + "; ".join(f"`{c.name}` = {c.description}" for c in candidates) + ".",
             "For each held-out condition every candidate runs on every pool without that condition; the rule "
             "(safe = no remaining condition worse than the teacher by more than 0.2 points, then the highest "
             "mean relative reduction over the remaining non-control conditions, ties to `"
             f"{candidates[0].name}`) picks one, and the held-out condition is then read from that candidate's "
             "run on the whole pool.", "",
             "| held-out condition | selection: mean reduction / worst excess per candidate | chosen | "
             + " | ".join(f"{p}: teacher, default choral, chosen choral" for p in pools) + " | held-out reduction, "
             "chosen (default) | harm rate, chosen (default) |",
             "|---|---|---|" + "---:|" * len(pools) + "---:|---:|"]
    chosen_slices: dict[str, Slice] = {}
    default_slices: dict[str, Slice] = {}
    for outcome in outcomes:
        scores = "; ".join(f"{s.candidate} {pct(s.mean_reduction)} / {100 * s.worst_excess:+.2f}"
                           + ("" if s.safe else " (unsafe)") for s in outcome.scores)
        per_pool = " | ".join(f"{pct(outcome.evaluated[p].wer('teacher'))}, {pct(outcome.default[p].wer('choral'))}, "
                              f"{pct(outcome.evaluated[p].wer('choral'))}" for p in pools)
        chosen_slices[outcome.held_out] = total(list(outcome.evaluated.values()))
        default_slices[outcome.held_out] = total(list(outcome.default.values()))
        chosen, default = chosen_slices[outcome.held_out], default_slices[outcome.held_out]
        lines.append(f"| {outcome.held_out} | {scores} | `{outcome.chosen}` | {per_pool} | {pct(chosen.reduction)} "
                     f"({pct(default.reduction)}) | {pct(chosen.harm_rate)} ({pct(default.harm_rate)}) |")
    lines += ["", f"Mean relative reduction over the held-out non-control conditions (all pools): chosen "
                  f"**{pct(mean_reduction(chosen_slices, control))}**, default "
                  f"{pct(mean_reduction(default_slices, control))}.", ""]
    return lines


def _merged_runs(runs: dict[str, dict[str, Slice]]) -> dict[str, Slice]:
    names = list(dict.fromkeys(n for slices in runs.values() for n in slices))
    return {n: total([slices[n] for slices in runs.values() if n in slices]) for n in names}


def _ablation_section(ablations: Sequence[AblationResult], conditions: Sequence[Condition], control: str
                      ) -> list[str]:
    baseline, methods = ablations[0], ablations[1:]
    pools = list(baseline.runs)
    lines = ["## Ablations (issue 12 part 4)", "",
             "Each method is the run config as given (tune on) with one change, run (group -> graph -> tune -> "
             "propagate -> eval) on every whole pool's decoded cuts, so every row is on the same audio and the "
             f"same n-best lists as the baseline `{baseline.candidate.name}`. Methods (`gen_loco.ABLATIONS`): "
             + "; ".join(f"`{a.candidate.name}` = {a.candidate.description}" for a in methods) + ".",
             "A method may become a default only when, over all pools, no condition is worse than the teacher by "
             "more than 0.2 points, its mean relative reduction over the non-control conditions beats the "
             "baseline's and its harm rate does not rise (the LOCO rule's criteria). Seconds: group -> eval of "
             "one run, with its own teacher scorer (no scores memoised from another run).", "",
             "| method | " + " | ".join(f"{p}: mean reduction / choral WER / help / harm" for p in pools)
             + " | all pools: mean reduction | harm rate | worst excess (points) | ECE | seconds (per pool) | "
             "verdict |",
             "|---|" + "---:|" * len(pools) + "---:|---:|---:|---:|---:|---|"]
    for a in ablations:
        merged = _merged_runs(a.runs)
        everything = total(list(merged.values()))
        per_pool = []
        for p in pools:
            over = total(list(a.runs[p].values()))
            per_pool.append(f"{pct(mean_reduction(a.runs[p], control))} / {pct(over.wer('choral'))} / "
                            f"{pct(over.help_rate)} / {pct(over.harm_rate)}")
        worst = max(s.excess for slices in a.runs.values() for s in slices.values())
        verdict = "baseline" if a.verdict is None else (("**helps**: " if a.verdict.helps else "option: ")
                                                         + a.verdict.reason)
        lines.append(f"| `{a.candidate.name}` | " + " | ".join(per_pool)
                     + f" | {pct(mean_reduction(merged, control))} | {pct(everything.harm_rate)} | "
                       f"{100 * worst:+.2f} | {num(everything.ece)} | "
                     + " + ".join(f"{a.seconds[p]:.0f}" for p in pools) + f" | {verdict} |")
    names = [c.name for c in conditions]
    for title, pick in [*[(f"Pool `{p}`", (lambda a, p=p: a.runs[p])) for p in pools],
                        ("All pools together", lambda a: _merged_runs(a.runs))]:
        base = pick(baseline)
        lines += ["", f"### {title}: per condition, choral WER (help rate / harm rate) per method", "",
                  "| condition | teacher WER | oracle WER | " + " | ".join(f"`{a.candidate.name}`" for a in ablations)
                  + " |", "|---|---:|---:|" + "---:|" * len(ablations)]
        rows = [(f"{n} (control)" if n == control else n, n) for n in names if n in base]
        for label, name in [*rows, ("**overall**", None)]:
            def cell(slices: dict[str, Slice], name: str | None = name) -> Slice:
                return slices[name] if name is not None else total(list(slices.values()))
            ref = cell(base)
            cells = []
            for a in ablations:
                s = cell(pick(a))
                worse = " (worse)" if s.excess > MAX_EXCESS else ""
                cells.append(f"{pct(s.wer('choral'))}{worse} ({pct(s.help_rate)} / {pct(s.harm_rate)})")
            lines.append(f"| {label} | {pct(ref.wer('teacher'))} | {pct(ref.wer('oracle'))} | " + " | ".join(cells)
                         + " |")
    return lines + [""]


def render(*, command: str, config: str, settings: Sequence[str], conditions: Sequence[Condition],
           pools: Sequence[PoolResult], control: str, loco: Sequence[LocoOutcome] | None = None,
           candidates: Sequence[Candidate] = (), notes: Sequence[str] = (),
           stability: Sequence[StabilityRow] = (), ablations: Sequence[AblationResult] | None = None) -> str:
    """The whole RESULTS.md."""
    lines = ["# Generalisation protocol: results", "",
             f"Produced by `{command}` with the run config `{config}` (one `choral run` per pool, each in its own "
             "run directory; `tune` sees only that pool's annotated cuts). Figures are over unannotated cuts; "
             "annotated cuts seed propagation and tuning.", "",
             *[f"- {s}" for s in settings], "",
             "Conditions (none is a condition of `benchmarks/accented`'s recipe; the control is its majority voice "
             "reading the protocol's own prompts):", "",
             "| condition | how it is read |", "|---|---|",
             *[f"| {c.name} | {c.description} |" for c in conditions], "",
             "Columns: WER is corpus-level; relative reduction = (teacher - choral) / teacher; help / harm rate = "
             "unannotated cuts whose choral label has fewer / more word errors than the teacher's 1-best; ECE = "
             "expected calibration error of choral's confidence against exact correctness (10 bins); threshold "
             "from = annotated same-group pairs the graph threshold was learned from (all / positive) and the "
             "rule; (worse) marks a condition more than 0.2 points worse than the teacher.", "",
             "## Today's defaults, per pool", ""]
    for pool in pools:
        lines += _pool_section(pool, conditions, control)
    if len(pools) > 1:
        lines += _all_pools_section(pools, conditions, control)
    elif pools:
        merged = pools[0].slices
        everything = total(list(merged.values()))
        lines += [f"Reliability of choral's confidence ({everything.calibration.n:,} unannotated cuts, ECE "
                  f"{num(everything.ece)}):", "", *reliability_table(everything), ""]
    if stability:
        lines += stability_section(stability)
    if loco:
        lines += _loco_section(loco, candidates, [p.name for p in pools], control)
    if ablations:
        lines += _ablation_section(ablations, conditions, control)
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)
