"""The accented-English benchmark: choral on the corpus pool, per-accent table, ablations, diagnostics.

    .venv/bin/python benchmarks/accented/run_benchmark.py            # writes benchmarks/accented/RESULTS.md

1. ``choral run configs/accented.yaml`` (a separate process, so its stage times and
   peak memory are the tool's own): decode the 2,970-cut pool with the default
   teacher, group, graph, tune on the 10% annotated cuts, propagate, export, eval.
2. Ablations, each one row, re-using the decoded and grouped manifests of that run
   (decoding does not depend on them): binary vs distance-weighted edges, DTW over
   the pooled vector vs DTW over encoder frames vs cosine, with and without
   candidate sharing, spreading vs hard-clamped propagation, and the annotated
   fraction (0%, 5%, 10%, 20%; annotations added from / removed to the reference
   file, stratified by accent). Every row is evaluated on its own unannotated cuts.
3. Diagnostics that bound what propagation can do: n-best oracle WER, grouping
   recall (same-prompt pairs that share a group), graph precision and recall over
   same-prompt pairs inside groups.

The corpus comes from ``make corpus`` (benchmarks/accented/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Sequence

import numpy as np

from choral.pipeline.evaluate import evaluate, write_report
from choral.pipeline.graph import CutGraph, build_graph
from choral.pipeline.manifest import CutWriter, iter_cuts
from choral.pipeline.propagate import load_params, propagate_manifest
from choral.pipeline.run import load_run_config
from choral.pipeline.teacher import teacher_scorer
from choral.pipeline.tune import tune_params, tune_stage

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MAJORITY = "en-us"


@dataclass(frozen=True)
class Variant:
    """One ablation row: what differs from the main configuration."""

    name: str
    metric: str | None = None
    weighted_edges: bool | None = None
    share_candidates: bool | None = None
    algorithm: str | None = None
    annotated_fraction: float | None = None
    nearest: int | None = None
    max_borrowed: int | None = None
    propagate: tuple[tuple[str, object], ...] = ()     # other PropagateConfig fields (issue 12 part 4)
    tune_nearest: tuple[int, ...] = ()                  # k-nearest counts tune chooses from


VARIANTS = (
    Variant("distance-weighted edges", weighted_edges=True),
    Variant("threshold + 3 nearest neighbours", nearest=3),
    Variant("DTW over pooled vector (paper)", metric="dtw-vector"),
    Variant("cosine over pooled vector", metric="cosine"),
    Variant("no candidate sharing", share_candidates=False),
    Variant("no cap on borrowed candidates", max_borrowed=0),
    Variant("hard-clamped propagation", algorithm="propagation"),
    Variant("annotated 0% (unsupervised)", annotated_fraction=0.0),
    Variant("annotated 5%", annotated_fraction=0.05),
    Variant("annotated 20%", annotated_fraction=0.20),
    # issue 12 part 4 (benchmarks/generalisation/RESULTS.md, Ablations)
    Variant("word-level consensus (4 paths)", propagate=(("consensus", 4),)),
    Variant("k-nearest edges chosen by tune (k in 0, 2, 4)", tune_nearest=(0, 2, 4)),
    Variant("k-nearest edges alone chosen by tune (k in 2, 4, 8)", propagate=(("nearest", 4), ("nearest_only", True)),
            tune_nearest=(2, 4, 8)),
    Variant("3 propagation rounds (soft seeds)", propagate=(("rounds", 3),)),
    Variant("length-normalised teacher scores", propagate=(("length_norm", True),)),
    Variant("no scored retrieval (session 12)", propagate=(("retrieve_scored_reach", 0.0),)),
    Variant("no hub bound on retrieval (session 14)",
            propagate=(("retrieve_unsure_hub", 0.0), ("retrieve_far_hub", 0.0))),
    Variant("session 14 decision (ratio 0.75, margin 0.1, corrections)",
            propagate=(("retrieve_ratio", 0.75), ("error_margin", 0.1), ("correction_edits", 1))),
    Variant("no noisy-pair bound (session 16)", propagate=(("noisy_pair_snr", 0.0),)),
)


def _rank(cut_id: str) -> str:
    return hashlib.sha256(cut_id.encode()).hexdigest()


def reannotate(grouped: Path, references: dict[str, dict], fraction: float, out: Path) -> None:
    """Copy ``grouped`` with the first ``fraction`` of each accent's cuts (by hashed id) annotated."""
    cuts = list(iter_cuts(grouped))
    by_accent: dict[str, list[str]] = defaultdict(list)
    for cut in cuts:
        by_accent[str(cut.custom.get("accent"))].append(cut.id)
    chosen: set[str] = set()
    for ids in by_accent.values():
        # keep the existing annotated cuts first, so 5% is a subset of 10% and 10% of 20%
        annotated = sorted((i for i in ids if references[i]["annotated"]), key=_rank)
        rest = sorted((i for i in ids if not references[i]["annotated"]), key=_rank)
        chosen.update((annotated + rest)[: int(round(fraction * len(ids)))])
    with CutWriter(out) as writer:
        for cut in cuts:
            for s in cut.supervisions:
                s.text = references[cut.id]["text"] if cut.id in chosen else None
            writer.write(cut)


def run_variant(variant: Variant, main_run: Path, config, references: dict[str, dict], out: Path,
                shared_scorer) -> dict:
    """group output -> (re-annotate) -> graph -> tune -> propagate -> eval, in ``out``.

    ``shared_scorer`` is one teacher scorer over the pool's cuts for every variant: the
    cuts and their audio are the same in all of them, and its memo of (cut, text) scores
    spares re-scoring what an earlier variant already scored.
    """
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    grouped = main_run / "grouped.jsonl.gz"
    if variant.annotated_fraction is not None:
        reannotate(grouped, references, variant.annotated_fraction, out / "grouped.jsonl.gz")
        grouped = out / "grouped.jsonl.gz"
    normalizer = config.normalizer
    graph_config = replace(config.graph, metric=variant.metric) if variant.metric else config.graph
    build_graph(grouped, out / "graph.npz", None, graph_config, normalizer)
    base = config.propagate
    for key in ("weighted_edges", "share_candidates", "algorithm", "nearest", "max_borrowed"):
        if getattr(variant, key) is not None:
            base = replace(base, **{key: getattr(variant, key)})
    base = replace(base, **dict(variant.propagate))
    n_annotated = sum(1 for c in iter_cuts(grouped) if any(s.text for s in c.supervisions))
    scorer = shared_scorer if config.scorer and base.share_candidates else None
    if config.tune_enabled and n_annotated >= 2 and variant.tune_nearest:
        tune_stage(grouped, out / "graph.npz", out / "params.yaml", base=base,
                   grid=replace(config.tune, nearest=variant.tune_nearest), normalizer=normalizer, scorer=scorer,
                   force=True)
        params = load_params(out / "params.yaml", base=base)
    elif config.tune_enabled and n_annotated >= 2:
        tune_params(grouped, out / "graph.npz", out / "params.yaml", base=base, grid=config.tune,
                    folds=config.tune.folds, seed=config.tune.seed, normalizer=normalizer, scorer=scorer)
        params = load_params(out / "params.yaml", base=base)
    else:
        params = base
    propagate_manifest(grouped, out / "graph.npz", out / "rescored.jsonl.gz", params, normalizer, scorer=scorer)
    report = evaluate(out / "rescored.jsonl.gz", config.eval.references, config.eval.by, normalizer)
    write_report(report, out / "eval")
    result = report.to_dict()
    result["seconds"] = time.perf_counter() - started
    (out / "seconds.json").write_text(json.dumps({"seconds": result["seconds"]}))
    result["params"] = {"alpha": params.alpha, "lambda": params.fusion_weight, "T": params.temperature,
                        "threshold_scale": params.threshold_scale}
    return result


def kept_rows(results: Path, redone: set[str]) -> list[str]:
    """The ablation rows of an existing RESULTS.md whose variant (a name of :data:`VARIANTS`) was not redone,
    in the order of :data:`VARIANTS`."""
    if not results.is_file():
        return []
    by_name: dict[str, str] = {}
    previous_main = None
    for line in results.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and cells[1] in {v.name for v in VARIANTS} and cells[1] not in redone:
            by_name.setdefault(cells[1], line)
        elif len(cells) > 2 and cells[1].startswith("main (") and previous_main is None:
            previous_main = line.replace("| main (", "| previous run's main (", 1)
        elif len(cells) > 2 and cells[1].startswith("previous run's main (") and previous_main is None:
            previous_main = line
    kept = [by_name[v.name] for v in VARIANTS if v.name in by_name]
    return ([previous_main] if previous_main and kept else []) + kept


def load_variant(out: Path) -> dict | None:
    """An ablation's report from an earlier run (its eval/report.json, params.yaml, seconds.json)."""
    if not (out / "eval" / "report.json").is_file():
        return None
    report = json.loads((out / "eval" / "report.json").read_text())
    seconds = out / "seconds.json"
    report["seconds"] = json.loads(seconds.read_text())["seconds"] if seconds.is_file() else float("nan")
    report["params"] = {}
    if (out / "params.yaml").is_file():
        p = load_params(out / "params.yaml")
        report["params"] = {"alpha": p.alpha, "lambda": p.fusion_weight, "T": p.temperature,
                            "threshold_scale": p.threshold_scale}
    return report


def accent_rows(report: dict) -> dict[str, tuple[float, float, float, float, int]]:
    """accent -> (teacher, choral, oracle WER, relative reduction, cuts) on the unannotated cuts."""
    split = report["unannotated"]
    rows = {}
    for accent, info in split["breakdown"]["accent"].items():
        rows[accent] = (split["teacher"]["by"]["accent"][accent], split["choral"]["by"]["accent"][accent],
                        split["oracle"]["by"]["accent"][accent], info["relative_wer_reduction"], info["n_cuts"])
    return rows


def headline(report: dict) -> tuple[float, float, float]:
    """(mean relative reduction over accented conditions, majority choral - teacher WER, overall reduction)."""
    rows = accent_rows(report)
    accented = [r[3] for a, r in rows.items() if a != MAJORITY]
    majority = rows.get(MAJORITY)
    delta = majority[1] - majority[0] if majority else float("nan")
    return float(np.mean(accented)), delta, report["unannotated"]["relative_wer_reduction"]


def diagnostics(run: Path, references: dict[str, dict], threshold_scale: float = 1.0, nearest: int = 0
                ) -> dict[str, float]:
    """Grouping recall and graph precision/recall over same-prompt pairs (edges as propagate used them)."""
    group_of = {c.id: c.custom["group"] for c in iter_cuts(run / "grouped.jsonl.gz")}
    by_prompt: dict[str, list[str]] = defaultdict(list)
    for cut_id in group_of:
        by_prompt[references[cut_id]["prompt"]].append(cut_id)
    same_prompt = sum(len(v) * (len(v) - 1) // 2 for v in by_prompt.values())
    same_group = sum(1 for ids in by_prompt.values() for a, b in combinations(ids, 2) if group_of[a] == group_of[b])
    graph = CutGraph.load(run / "graph.npz")
    ids = [str(i) for i in graph.cut_ids]
    prompt = np.array([references[i]["prompt"] for i in ids])
    positive = prompt[graph.pair_a] == prompt[graph.pair_b]
    edge = graph.distances <= graph.threshold * threshold_scale
    if nearest > 0:
        edge |= graph.nearest_pairs(nearest)
    true_edges = int(np.sum(edge & positive))
    return {
        "same_prompt_pairs": same_prompt,
        "grouping_recall": same_group / max(same_prompt, 1),
        "graph_precision": true_edges / max(int(edge.sum()), 1),
        "graph_recall_in_groups": true_edges / max(int(positive.sum()), 1),
        "graph_recall_overall": true_edges / max(same_prompt, 1),
    }


def reach_breakdown(run: Path, references: dict[str, dict], threshold_scale: float, nearest: int = 0
                    ) -> dict[str, dict[str, int]]:
    """Unannotated accented cuts by how their prompt's annotated reading could reach them, with exact-match counts.

    direct: an edge to an annotated reading of the same prompt; component: a path to one;
    unreached: the prompt has an annotated reading the graph does not connect;
    no annotation: no reading of the prompt is annotated (only consensus can help).
    """
    import scipy.sparse.csgraph as csgraph

    from choral.pipeline.text import normalize

    graph = CutGraph.load(run / "graph.npz")
    ids = [str(i) for i in graph.cut_ids]
    position = {cut_id: k for k, cut_id in enumerate(ids)}
    adjacency = graph.adjacency(graph.threshold * threshold_scale, nearest=nearest)
    _, component = csgraph.connected_components(adjacency, directed=False)
    annotated_components: dict[str, set] = defaultdict(set)
    for cut_id in ids:
        if references[cut_id]["annotated"]:
            annotated_components[references[cut_id]["prompt"]].add(component[position[cut_id]])
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for cut in iter_cuts(run / "rescored.jsonl.gz"):
        info = references[cut.id]
        if info["annotated"] or info["accent"] == MAJORITY:
            continue
        k = position[cut.id]
        neighbours = adjacency.indices[adjacency.indptr[k]:adjacency.indptr[k + 1]]
        if any(references[ids[j]]["annotated"] and references[ids[j]]["prompt"] == info["prompt"] for j in neighbours):
            kind = "direct edge to an annotated reading"
        elif component[k] in annotated_components.get(info["prompt"], ()):
            kind = "path to an annotated reading"
        elif info["prompt"] in annotated_components:
            kind = "annotated reading not connected"
        else:
            kind = "no reading of the prompt annotated"
        choral = cut.custom["choral"][0]
        reference = normalize(info["text"])
        out[kind]["cuts"] += 1
        out[kind]["teacher exact"] += normalize(choral["teacher_text"]) == reference
        out[kind]["choral exact"] += normalize(choral["text"]) == reference
    return {k: dict(v) for k, v in out.items()}


def load_reference_info(path: Path) -> dict[str, dict]:
    from choral.pipeline.manifest import iter_json_lines

    out = {}
    for _, entry in iter_json_lines(path):
        custom = entry.get("custom") or {}
        out[entry["id"]] = {"text": entry["text"], "prompt": custom.get("prompt"), "accent": custom.get("accent"),
                            "annotated": False}
    return out


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def write_results(path: Path, config_file: Path, main: dict, run_info: dict, diag: dict,
                  variants: list[tuple[Variant, dict]], command: str, config_summary: str,
                  reach: dict[str, dict[str, int]], kept: Sequence[str] = ()) -> None:
    """RESULTS.md; ``kept``: ablation rows of an earlier RESULTS.md for variants this run did not redo (--only)."""
    rows = accent_rows(main)
    mean_accented, majority_delta, overall = headline(main)
    lines = [
        "# Accented-English benchmark: results",
        "",
        f"Produced by `{command}` (config `{config_file.relative_to(REPO)}`); "
        f"corpus from `make corpus` (see README.md here). Unannotated cuts only; annotated cuts "
        "seed propagation and tuning.",
        "",
        "## Per accent (main configuration)",
        "",
        "| accent | cuts | teacher WER | choral WER | oracle n-best WER | relative reduction |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for accent, (teacher, choral, oracle, reduction, n) in sorted(rows.items(), key=lambda kv: kv[0] == MAJORITY):
        label = f"{accent} (majority)" if accent == MAJORITY else accent
        lines.append(f"| {label} | {n:,} | {pct(teacher)} | {pct(choral)} | {pct(oracle)} | {pct(reduction)} |")
    split = main["unannotated"]
    lines += [
        f"| overall | {split['n_cuts']:,} | {pct(split['teacher']['wer'])} | {pct(split['choral']['wer'])} | "
        f"{pct(split['oracle']['wer'])} | {pct(overall)} |",
        "",
        f"**Average relative WER reduction over the accented conditions: {pct(mean_accented)}** "
        f"(target >= 50%). Majority accent: choral - teacher = {100 * majority_delta:+.2f} points absolute "
        "(target <= +0.2).",
        "",
        "## Ablations",
        "",
        "Each row changes one thing from the main configuration and is tuned and evaluated the same way "
        "(the 0% row has no annotated cut to tune on and uses the config's values). Rows re-use the main "
        "run's decoded and grouped manifests; a row's time covers graph, tune, propagate and eval, and the "
        "teacher scores of borrowed transcripts are memoised across rows, so the first row pays most of "
        "the scoring. Majority change is choral - teacher in WER points on en-us (negative: better).",
        "",
        "| variant | unannotated cuts | teacher WER | choral WER | avg. accented reduction | majority change | "
        "overall reduction | params (alpha, lambda, T, scale) | time |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    main_params = run_info.get("params", {})
    all_rows = [(Variant(f"main ({config_summary})"),
                 {**main, "params": main_params, "seconds": float("nan")})] + variants
    for variant, report in all_rows:
        mean_acc, delta, over = headline(report)
        split = report["unannotated"]
        p = report.get("params") or {}
        params = ", ".join(f"{p[k]:g}" for k in ("alpha", "lambda", "T", "threshold_scale")) if p else "-"
        seconds = "-" if report["seconds"] != report["seconds"] else f"{report['seconds']:.0f} s"
        lines.append(f"| {variant.name} | {split['n_cuts']:,} | {pct(split['teacher']['wer'])} | "
                     f"{pct(split['choral']['wer'])} | {pct(mean_acc)} | {100 * delta:+.2f} | {pct(over)} | "
                     f"{params} | {seconds} |")
    lines += list(kept)
    if kept:
        lines += ["", "Rows from \"previous run's main\" on are kept from the previous RESULTS.md: variants this "
                      "run did not redo (`--only`), measured against that earlier main run (its row; their "
                      "teacher WER column tells the runs apart)."]
    lines += [
        "",
        "## What bounds the result",
        "",
        f"- n-best oracle WER (unannotated): {pct(split_oracle(main))} "
        f"vs teacher {pct(main['unannotated']['teacher']['wer'])}.",
        f"- Grouping recall: {pct(diag['grouping_recall'])} of {diag['same_prompt_pairs']:,} same-prompt pairs "
        "share a group (only they can be linked).",
        f"- Graph precision: {pct(diag['graph_precision'])} of edges join readings of the same prompt; "
        f"recall {pct(diag['graph_recall_in_groups'])} of same-prompt pairs inside groups, "
        f"{pct(diag['graph_recall_overall'])} of all same-prompt pairs.",
        "",
        "Unannotated accented cuts by how an annotated reading of their prompt can reach them "
        "(exact = the whole transcript right):",
        "",
        "| reach | cuts | teacher exact | choral exact |",
        "|---|---:|---:|---:|",
        *[f"| {kind} | {v['cuts']:,} | {pct(v['teacher exact'] / v['cuts'])} | {pct(v['choral exact'] / v['cuts'])} |"
          for kind, v in reach.items()],
        "",
        "## Stage times and memory (main run, 2 CPU cores)",
        "",
        "| stage | status | seconds | peak RSS so far |",
        "|---|---|---:|---:|",
    ]
    for stage in run_info["stages"]:
        lines.append(f"| {stage['stage']} | {stage['status']} | {stage['seconds']:.1f} | "
                     f"{stage['peak_rss_mib']:,.0f} MiB |")
    lines += ["", f"Total {run_info['seconds']:.0f} s; peak resident memory {run_info['peak_rss_mib']:,.0f} MiB. "
              "Wall-clock seconds on the 2-core development machine; other jobs may have shared it "
              "(`benchmarks/decode_speed.py` measures decoding alone).", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def split_oracle(report: dict) -> float:
    return report["unannotated"]["oracle"]["wer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "accented.yaml")
    parser.add_argument("--run-dir", type=Path, default=None, help="override the config's run_dir")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--only", nargs="*", default=None, help="ablation names to run (default: all)")
    parser.add_argument("--skip-ablations", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite RESULTS.md from the outputs of an earlier run (nothing recomputed)")
    args = parser.parse_args()
    args.config = args.config.resolve()  # a relative --config is relative to the working directory

    config = load_run_config(args.config)
    if args.run_dir is not None:
        config = replace(config, run_dir=args.run_dir)
    run_dir = Path(config.run_dir)
    command = [str(REPO / ".venv" / "bin" / "choral"), "run", str(args.config), "--run-dir", str(run_dir)]
    if not args.report_only:
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    run_info = json.loads((run_dir / "run.json").read_text())
    run_info["params"] = {}
    if (run_dir / "params.yaml").is_file():
        tuned = load_params(run_dir / "params.yaml", base=config.propagate)
        run_info["params"] = {"alpha": tuned.alpha, "lambda": tuned.fusion_weight, "T": tuned.temperature,
                              "threshold_scale": tuned.threshold_scale}
    main_report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert config.eval.references is not None
    references = load_reference_info(config.eval.references)
    for cut in iter_cuts(run_dir / "grouped.jsonl.gz"):
        references[cut.id]["annotated"] = any(s.text for s in cut.supervisions)
    diag = diagnostics(run_dir, references, run_info["params"].get("threshold_scale", 1.0), config.propagate.nearest)
    print(json.dumps(diag, indent=1), flush=True)
    variants: list[tuple[Variant, dict]] = []
    shared_scorer = None
    if config.scorer and not args.report_only:
        shared_scorer = teacher_scorer(run_dir / "grouped.jsonl.gz", config.teacher)
    if not args.skip_ablations:
        for variant in VARIANTS:
            if args.only and variant.name not in args.only:
                continue
            uses_frames = variant.metric == "dtw-frames" or config.graph.metric == "dtw-frames"
            if uses_frames and not config.decode.save_frames:
                print(f"skipping {variant.name}: decode.save_frames is off", flush=True)
                continue
            slug = variant.name.split(" (")[0].replace(" ", "-").replace("%", "pct")
            if args.report_only:
                report = load_variant(run_dir / "ablations" / slug)
                if report is None:
                    continue
                variants.append((variant, report))
                continue
            report = run_variant(variant, run_dir, config, references, run_dir / "ablations" / slug, shared_scorer)
            mean_acc, delta, over = headline(report)
            print(f"{variant.name}: avg accented reduction {pct(mean_acc)}, majority {100 * delta:+.2f}, "
                  f"overall {pct(over)} ({report['seconds']:.0f} s)", flush=True)
            variants.append((variant, report))
    kept = kept_rows(args.out, {v.name for v, _ in variants}) if args.only else []
    tuned = run_info["params"]
    reach = reach_breakdown(run_dir, references, tuned.get("threshold_scale", 1.0), config.propagate.nearest)
    write_results(args.out, args.config, main_report, run_info, diag, variants,
                  "make accented-benchmark" if args.out == HERE / "RESULTS.md" else " ".join(sys.argv),
                  f"{config.graph.metric}, {'weighted' if config.propagate.weighted_edges else 'binary'} edges, "
                  f"sharing {'on' if config.propagate.share_candidates else 'off'}, {config.propagate.algorithm}, "
                  "10% annotated", reach, kept)
    mean_acc, delta, over = headline(main_report)
    print(f"main: avg accented reduction {pct(mean_acc)}, majority {100 * delta:+.2f} points, "
          f"overall {pct(over)} -> {args.out}")


if __name__ == "__main__":
    main()
