"""The generalisation protocol: choral on held-out pools, per condition, and leave-one-condition-out.

    .venv/bin/python benchmarks/generalisation/run_protocol.py          # -> benchmarks/generalisation/RESULTS.md
    make generalisation-benchmark                                       # the same, after installing .[corpus]

1. Plan the pools (``gen_pools``): the ``generator`` pool (the corpus' prompt generator with another seed,
   no prompt of any accented-corpus split) and the ``unseen-words`` pool (prompts with words outside the
   teacher's training text), each read in every condition of ``gen_conditions``; 10% annotated per condition.
2. Synthesise them into ``data/<pool>/`` (git-ignored; reruns keep finished audio).
3. ``choral run`` per pool with the run config's settings (default ``configs/demo.yaml``), in
   ``data/runs/<pool>/`` (a separate process, pinned to one thread per library).
4. With ``--loco``, the leave-one-condition-out loop of ``gen_loco`` on the pools' decoded cuts.
5. With ``--ablations [NAMES]``, each method of ``gen_loco.ABLATIONS`` (or the names given) on the whole
   pools beside the baseline (``config``) on the same decoded cuts.
6. RESULTS.md (``gen_report``).
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")  # before numpy / torch load: the machine is shared

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from gen_conditions import CONTROL, DEFAULT_CONDITIONS, Condition, select_conditions  # noqa: E402
from gen_loco import (  # noqa: E402
    ABLATIONS,
    DEFAULT_CANDIDATES,
    Candidate,
    RunKey,
    ablation_verdict,
    leave_one_out,
    loco_runs,
    select_candidates,
)
from gen_pools import PoolPlan, corpus_texts, out_of_vocabulary_rate, plan_pools  # noqa: E402
from gen_report import AblationResult, PoolResult, render  # noqa: E402
from gen_results import Slice, annotated_counts, condition_slices  # noqa: E402
from gen_stability import DEFAULT_FRACTIONS, StabilityRow, stability  # noqa: E402


def pool_signature(plan: PoolPlan) -> dict:
    """What the pool's manifests depend on: its cut ids, which are annotated, the prompt sets."""
    return {"items": sorted(item.cut_id for item in plan.items), "annotated": sorted(plan.annotated),
            "prompt_sets": plan.prompt_sets}


def build_pool(plan: PoolPlan, folder: Path, jobs: int) -> tuple[Path, Path]:
    """Synthesise the pool and write its manifests, unless ``folder`` already holds this exact plan."""
    from gen_pools import synthesize_pool, write_pool

    cuts, references, stamp = folder / "cuts.jsonl.gz", folder / "references.jsonl.gz", folder / "plan.json"
    signature = pool_signature(plan)
    if cuts.is_file() and references.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == signature:
        print(f"{plan.name}: {len(plan.items)} cuts already built in {folder}", flush=True)
        return cuts, references
    folder.mkdir(parents=True, exist_ok=True)
    audio = synthesize_pool(plan, folder, jobs)
    write_pool(plan, audio, folder)
    stamp.write_text(json.dumps(signature))
    return cuts, references


def pool_config(base: Path, run_dir: Path, cuts: Path, references: Path, out: Path) -> Path:
    """The base run config's settings with this pool's input, references and run directory (absolute paths)."""
    data = yaml.safe_load(base.read_text(encoding="utf-8")) or {}
    data["run_dir"] = str(run_dir)
    data["input"] = {**(data.get("input") or {}), "cuts": str(cuts), "audio_root": str(REPO)}
    data["eval"] = {**(data.get("eval") or {}), "references": str(references), "by": ["accent", "prompt_set"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {base.name}'s settings on a generalisation pool (written by run_protocol.py)\n"
                   + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def run_choral(config: Path) -> float:
    """``choral run config`` in its own process; its wall-clock seconds."""
    command = [str(REPO / ".venv" / "bin" / "choral"), "run", str(config)]
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def read_pool(plan: PoolPlan, run_dir: Path, oov_rate: float, seconds: float) -> PoolResult:
    """The pool's per-condition slices, threshold fit and tuned values from its run directory."""
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    threshold = json.loads((run_dir / "threshold.json").read_text()) if (run_dir / "threshold.json").is_file() else {}
    params: dict = {}
    tune_report = run_dir / "params.json"
    if tune_report.is_file():
        best = json.loads(tune_report.read_text()).get("best") or {}
        params = {key: best[key] for key in ("alpha", "fusion_weight", "temperature", "threshold_scale")
                  if key in best}
    return PoolResult(plan.name, len(plan.prompts), oov_rate, condition_slices(report), annotated_counts(report),
                      threshold, params, seconds, condition_slices(report, "prompt_set"))


def run_stages(decoded: Path, out: Path, config_path: Path, scorer, *, tune: bool = True,
               fusion_weight: tuple[float, ...] | None = None, propagate: tuple = (), nearest: tuple[int, ...] = (),
               started: float | None = None, group: tuple = (), graph: tuple = ()
               ) -> tuple[dict[str, Slice], dict, dict]:
    """group -> graph -> tune -> propagate -> eval on a decoded manifest, in ``out``; returns the per-condition
    slices, the threshold fit (threshold.json) and the tuned values (empty when not tuned). ``propagate``:
    (key, value) overrides of the config's propagate section (``group``, ``graph``: of those sections); ``nearest``: k
    values tune tries; the run's
    seconds since ``started`` go to ``seconds.json`` when propagate computed."""
    from choral.pipeline.evaluate import evaluate, write_report
    from choral.pipeline.graph import build_graph
    from choral.pipeline.group import group_manifest
    from choral.pipeline.propagate import load_params, propagate_manifest
    from choral.pipeline.run_config import load_run_config
    from choral.pipeline.tune import tune_stage

    config = load_run_config(config_path)
    normalizer = config.normalizer
    group_manifest(decoded, out / "grouped.jsonl.gz", replace(config.group, **dict(group)), normalizer)
    build_graph(out / "grouped.jsonl.gz", out / "graph.npz", None, replace(config.graph, **dict(graph)), normalizer)
    base = replace(config.propagate, **dict(propagate))
    shared = scorer if config.scorer and base.share_candidates else None
    params = base
    tuned: dict = {}
    if tune and config.tune_enabled:
        grid = config.tune if fusion_weight is None else replace(config.tune, fusion_weight=fusion_weight)
        if nearest:
            grid = replace(grid, nearest=nearest)
        tune_stage(out / "grouped.jsonl.gz", out / "graph.npz", out / "params.yaml", base=base, grid=grid,
                   normalizer=normalizer, scorer=shared)
        params = load_params(out / "params.yaml", base=base)
        report = json.loads((out / "params.json").read_text())
        if "grid" in report:  # cross-validated (an untuned report holds the base values only)
            tuned = {k: report["best"][k] for k in ("alpha", "fusion_weight", "temperature", "threshold_scale")}
            if len(report["grid"]) == 1:  # fewer than tune.min_annotated: the base values, calibration fitted
                tuned["held"] = True
    propagated = propagate_manifest(out / "grouped.jsonl.gz", out / "graph.npz", out / "rescored.jsonl.gz", params,
                                    normalizer, scorer=shared if params.share_candidates else None)
    assert config.eval.references is not None
    report = evaluate(out / "rescored.jsonl.gz", config.eval.references, ("accent",), normalizer)
    write_report(report, out / "eval")
    # the run's cost: measured when propagate ran, read back when a rerun found everything up to date
    if started is not None and not propagated.skipped:
        (out / "seconds.json").write_text(json.dumps({"seconds": time.perf_counter() - started}))
    threshold = json.loads((out / "threshold.json").read_text())
    return condition_slices(report.to_dict()), threshold, tuned


def run_candidate(key: RunKey, candidate: Candidate, pool_run: Path, config_path: Path, out: Path,
                  scorer) -> dict[str, Slice]:
    """One LOCO run on the pool's decoded cuts minus the held-out condition (:func:`run_stages`)."""
    from choral.pipeline.manifest import CutWriter, iter_cuts
    from choral.pipeline.run import RunPaths

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    source = RunPaths(pool_run).decoded
    decoded = out / "decoded.jsonl.gz"
    if not decoded.is_file() or decoded.stat().st_mtime < source.stat().st_mtime:
        with CutWriter(decoded) as writer:
            for cut in iter_cuts(source):
                if key.excluded is None or (cut.custom or {}).get("accent") != key.excluded:
                    writer.write(cut)
    return run_stages(decoded, out, config_path, scorer, tune=candidate.tune, fusion_weight=candidate.fusion_weight,
                      propagate=tuple(candidate.propagate), nearest=tuple(candidate.nearest or ()), started=started,
                      group=tuple(candidate.group), graph=tuple(candidate.graph))[0]


def _stability_run(decoded: Path, out: Path, *, config_path: Path, scorer) -> tuple[dict[str, Slice], dict, dict]:
    return run_stages(decoded, out, config_path, scorer)


def pool_scorer(pool_run: Path, config_path: Path):
    """The teacher scorer of a pool's run (None when the config scores nothing)."""
    from choral.pipeline.run import RunPaths
    from choral.pipeline.run_config import load_run_config
    from choral.pipeline.teacher import teacher_scorer

    config = load_run_config(config_path)
    return teacher_scorer(RunPaths(pool_run).grouped, config.teacher) if config.scorer else None


def run_seconds(out: Path) -> float:
    """Seconds of the run in ``out`` when it last computed (NaN when unknown)."""
    stamp = out / "seconds.json"
    return float(json.loads(stamp.read_text())["seconds"]) if stamp.is_file() else float("nan")


def run_keys(keys: list[RunKey], runs: Path, configs: dict[str, Path], candidates: tuple[Candidate, ...],
             results: dict[RunKey, dict[str, Slice]], seconds: dict[RunKey, float], fresh_scorer: bool = False) -> None:
    """Run every key not yet in ``results``: one shared teacher scorer per pool (its memo spares re-scoring),
    or with ``fresh_scorer`` a new one per run, so each run's time includes all of its teacher scoring."""
    by_name = {c.name: c for c in candidates}
    scorers: dict[str, object] = {}
    for key in keys:
        if key in results:
            continue
        pool_run = runs / key.pool
        if key.pool not in scorers or fresh_scorer:
            scorers[key.pool] = pool_scorer(pool_run, configs[key.pool])
        started = time.perf_counter()
        results[key] = run_candidate(key, by_name[key.candidate], pool_run, configs[key.pool],
                                     pool_run / "loco" / key.slug, scorers[key.pool])
        seconds[key] = run_seconds(pool_run / "loco" / key.slug)
        print(f"  loco {key.pool}/{key.slug}: {time.perf_counter() - started:.0f} s (computed in {seconds[key]:.0f} s)",
              flush=True)


def run_loco(plans: list[PoolPlan], runs: Path, configs: dict[str, Path], conditions: tuple[Condition, ...],
             candidates: tuple[Candidate, ...], results: dict[RunKey, dict[str, Slice]],
             seconds: dict[RunKey, float]) -> dict[RunKey, dict[str, Slice]]:
    """Every run of the LOCO loop."""
    keys = list(loco_runs([p.name for p in plans], [c.name for c in conditions], [c.name for c in candidates]))
    run_keys(keys, runs, configs, candidates, results, seconds)
    return {key: results[key] for key in keys}


def run_ablations(plans: list[PoolPlan], runs: Path, configs: dict[str, Path], methods: tuple[Candidate, ...],
                  results: dict[RunKey, dict[str, Slice]], seconds: dict[RunKey, float]) -> list[AblationResult]:
    """The baseline (``config``) and each method on every whole pool, with their verdicts and run times."""
    from gen_conditions import CONTROL as control
    from gen_loco import CANDIDATES

    baseline = CANDIDATES["config"]
    pools = [p.name for p in plans]
    keys = [RunKey(pool, c.name, None) for c in (baseline, *methods) for pool in pools]
    run_keys(keys, runs, configs, (baseline, *methods), results, seconds, fresh_scorer=True)
    base_runs = {pool: results[RunKey(pool, baseline.name, None)] for pool in pools}
    out = [AblationResult(baseline, base_runs, {p: seconds.get(RunKey(p, baseline.name, None), float("nan"))
                                                for p in pools}, None)]
    for method in methods:
        method_runs = {pool: results[RunKey(pool, method.name, None)] for pool in pools}
        out.append(AblationResult(method, method_runs,
                                  {p: seconds.get(RunKey(p, method.name, None), float("nan")) for p in pools},
                                  ablation_verdict(method.name, method_runs, base_runs, control)))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml",
                        help="run config whose settings every pool runs with (its input/eval/run_dir are replaced)")
    parser.add_argument("--data", type=Path, default=HERE / "data", help="pools and run directories (git-ignored)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--conditions", nargs="+", default=list(DEFAULT_CONDITIONS))
    parser.add_argument("--prompts", type=int, default=50, help="generator prompts (x conditions = cuts); 0: no pool")
    parser.add_argument("--unseen-prompts", type=int, default=50, help="unseen-word prompts; 0: no pool")
    parser.add_argument("--annotated-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=12, help="cut ids, annotation and noise")
    parser.add_argument("--prompt-seed", type=int, default=12, help="the prompt generator's seed (the corpus uses 4)")
    parser.add_argument("--jobs", type=int, default=max(1, os.cpu_count() or 1), help="synthesis processes")
    parser.add_argument("--loco", action=argparse.BooleanOptionalAction, default=True,
                        help="the leave-one-condition-out loop (--no-loco: per-pool runs only)")
    parser.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES))
    parser.add_argument("--stability", action=argparse.BooleanOptionalAction, default=True,
                        help="threshold stability against the annotated fraction (gen_stability.py)")
    parser.add_argument("--stability-fractions", nargs="+", type=float, default=list(DEFAULT_FRACTIONS))
    parser.add_argument("--runs-name", default="runs", help="run directories go to <data>/<runs-name>/<pool>")
    parser.add_argument("--ablations", nargs="*", default=None, metavar="METHOD",
                        help=f"run each method on the whole pools beside the baseline (no names: all of "
                             f"{', '.join(ABLATIONS)}); adds the Ablations section")
    args = parser.parse_args(argv)
    if args.prompt_seed == 4:
        parser.error("--prompt-seed 4 is the accented corpus' own seed; the protocol needs another")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    conditions = select_conditions(args.conditions)
    candidates = select_candidates(args.candidates)
    methods = () if args.ablations is None else select_candidates(args.ablations or list(ABLATIONS))
    plans = plan_pools(conditions, args.prompts, args.unseen_prompts, args.annotated_fraction, args.seed,
                       args.prompt_seed)
    train_words = set(corpus_texts().train_words)
    data, runs = args.data.resolve(), args.data.resolve() / args.runs_name
    configs: dict[str, Path] = {}
    pools: list[PoolResult] = []
    synthesis = 0.0
    for plan in plans:
        t0 = time.perf_counter()
        cuts, references = build_pool(plan, data / plan.name, args.jobs)
        synthesis += time.perf_counter() - t0
        configs[plan.name] = pool_config(args.config.resolve(), runs / plan.name, cuts, references,
                                         runs / plan.name / "config.yaml")
        seconds = run_choral(configs[plan.name])
        pools.append(read_pool(plan, runs / plan.name, out_of_vocabulary_rate(list(plan.prompts), train_words),
                               seconds))
    loco = None
    results: dict[RunKey, dict[str, Slice]] = {}
    seconds_of: dict[RunKey, float] = {}
    if args.loco:
        loco_results = run_loco(plans, runs, configs, conditions, candidates, results, seconds_of)
        loco = leave_one_out(loco_results, [c.name for c in conditions], [c.name for c in candidates], CONTROL)
    stability_rows: list[StabilityRow] = []
    if args.stability:
        for plan in plans:
            scorer = pool_scorer(runs / plan.name, configs[plan.name])
            config_path = configs[plan.name]
            stability_rows += stability(plan, runs / plan.name, args.stability_fractions, args.seed,
                                        functools.partial(_stability_run, config_path=config_path, scorer=scorer))
    ablations = None
    if args.ablations is not None:
        t0 = time.perf_counter()
        ablations = run_ablations(plans, runs, configs, tuple(m for m in methods if m.name != "config"), results,
                                  seconds_of)
        print(f"ablations: {time.perf_counter() - t0:.0f} s", flush=True)
    total_seconds = time.perf_counter() - started
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "benchmarks/generalisation/run_protocol.py", *given])
    settings = [
        f"pools: {', '.join(f'`{p.name}` {len(p.items)} cuts ({len(p.annotated)} annotated)' for p in plans)}; "
        f"annotated fraction {args.annotated_fraction:g} per condition; seed {args.seed}, prompt seed "
        f"{args.prompt_seed} (the accented corpus uses 4)",
        f"audio synthesised (or found) in {synthesis:.0f} s; whole protocol {total_seconds:.0f} s on "
        f"{os.cpu_count()} cores (one thread per library: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')})",
    ]
    config = args.config.resolve()
    text = render(command=command, config=str(config.relative_to(REPO) if config.is_relative_to(REPO) else config),
                  settings=settings, conditions=conditions, pools=pools, control=CONTROL, loco=loco,
                  candidates=candidates, stability=stability_rows, ablations=ablations)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({total_seconds:.0f} s)")


if __name__ == "__main__":
    main()
