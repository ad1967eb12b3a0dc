"""Choose the calibrated decision's defaults on the protocol's development draw (never on a reported pool).

The development draw is the protocol with prompt seed 13 and cut seed 13 (the reported pools use 12;
``benchmarks/accented`` is never used), both pools, decoded once at 30% annotated:

    .venv/bin/python benchmarks/generalisation/run_protocol.py --prompt-seed 13 --seed 13 \\
        --annotated-fraction 0.3 --no-loco --no-stability --data benchmarks/generalisation/data/dev --out /tmp/dev.md
    .venv/bin/python benchmarks/generalisation/fit_prior.py collect --fractions 0.3 0.1 0.05 0.02
    .venv/bin/python benchmarks/generalisation/fit_prior.py fit

``collect`` re-annotates each development pool's decoded cuts at each fraction (as ``gen_stability.py``
does), runs group -> graph -> tune -> propagate -> eval on them (``--untuned`` also with tune held at
the config's values), and dumps the *decision rows* of every unannotated cut: the features
(:func:`choral.pipeline.propagate.calibrate.candidates`) of its fused winner and teacher 1-best, whether
each equals the reference, and each one's word errors, so that any coefficients, margin or prior
strength can be scored offline (WER, help, harm, ECE) without propagating again.

``fit`` pools the rows of the 10% runs of both pools and fits ``beta_0`` (logistic, weak pull toward 0),
then scores every dumped run for each way tune adapts it to the run's cross-fitted tune rows
(params.json: ``prior`` = not adapted, ``full`` / ``scale`` = ``tune.calibration_fit`` with a strength)
and each replace margin, and prints the ``PRIOR`` line for ``calibrate.py``. An ``-untuned`` run is
scored with ``beta_0`` itself.

What was chosen from it (README.md here): the ``scale`` fit with strength 0.25 (lowest ECE summed over
the dumped runs), margin 0.05 (the smallest with no harmed cut in any run), and ``tune.min_annotated``
10 (the tuned-vs-untuned runs: 12 annotated cuts lowered the WER, 6 did not); ``propagate.decision: errors``
with ``ERROR_PRIOR`` (the error model on both pools at 10%) and ``error_margin``, judged with the model fitted on
one pool and deciding on the other at every dumped fraction: 0.5 for the character teacher (the smallest margin
with no harmed cut), 0.1 for the stateless one (no run harms fewer cuts at a larger margin; ``teacher_veto`` off,
as ``VETOES`` shows no run needs it).
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from choral.pipeline.propagate.calibrate import (  # noqa: E402
    ERROR_FEATURES,
    FEATURES,
    candidates,
    error_rows,
    expected_errors,
    fit_calibration,
    fit_error_model,
    fit_scaling,
    probability,
)

DEV = HERE / "data" / "dev"
MARGINS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
ERROR_MARGINS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5)
VETO = 8.0                                        # propagate.teacher_veto (0: off), the default chosen below
UNHEARD_CONFIDENCE = 0.5                          # propagate.unheard_confidence
VETOES: tuple[float, ...] = (0.0, 11.0, 8.0, 6.0, 4.0, 2.0)
N_BINS = 10


# ------------------------------------------------------------------------------------------------ collect

def decision_rows(out: Path, config_path: Path, scorer, references: dict[str, str]) -> list[dict]:
    """Propagate ``out``'s grouped cuts with its params.yaml and record each unannotated cut's decision row."""
    from choral.pipeline.manifest import iter_cuts
    from choral.pipeline.propagate import load_params, read_grouped_and_graph
    from choral.pipeline.propagate.calibrate import Rule, decide, relative_distances
    from choral.pipeline.propagate.engine import rescore
    from choral.pipeline.run_config import load_run_config
    from choral.pipeline.wer import word_errors

    config = load_run_config(config_path)
    normalizer = config.normalizer
    params = load_params(out / "params.yaml", base=config.propagate) if (out / "params.yaml").is_file() \
        else config.propagate
    entries, graph = read_grouped_and_graph(out / "grouped.jsonl.gz", out / "graph.npz", normalizer)
    accent = {cut.id: (cut.custom or {}).get("accent") for cut in iter_cuts(out / "grouped.jsonl.gz")}
    threshold = graph.threshold * params.threshold_scale
    adjacency = graph.adjacency(threshold, weighted=params.weighted_edges, nearest=params.nearest)
    distances = relative_distances(graph.adjacency(threshold, weighted=True, nearest=params.nearest))
    sound = graph.sound_distances()
    rule = Rule.of(params)
    rows: list[dict] = []

    def record(batch, indices, results):
        index = np.asarray(indices, dtype=np.int64)
        sub_adjacency, sub_distances = adjacency[index][:, index], distances[index][:, index]
        for r, entry in enumerate(batch.entries):
            if entry.reference is not None:
                continue
            found = candidates(batch, sub_adjacency, r, params.fusion_weight, sub_distances,
                               sound=sound[index][:, index])
            if found is None:
                continue
            labels = batch.labels_of[entry.group]
            reference = normalizer(references[entry.cut_id])
            winner, best = labels.texts[found.winner], labels.texts[found.one_best]
            decision = decide(found, rule)   # what the run answered: fit_answer_prior.py reads it
            rows.append({"cut": entry.cut_id, "accent": accent[entry.cut_id],
                         "replaced": decision.replaced, "p": round(decision.confidence, 6),
                         "x_winner": [round(float(v), 5) for v in found.x_winner],
                         "x_one_best": [round(float(v), 5) for v in found.x_one_best],
                         "same": found.winner == found.one_best, "unheard": found.exempt(rule),
                         "y_winner": int(winner == reference), "y_one_best": int(best == reference),
                         "errors_winner": word_errors(reference, winner),
                         "errors_one_best": word_errors(reference, best),
                         "words": len(reference.split()),
                         "words_winner": len(winner.split()), "words_one_best": len(best.split()),
                         "winner": winner, "one_best": best, "reference": reference})
        return results

    rescore(entries, adjacency, params, scorer if params.share_candidates else None, finish=record)
    return rows


def collect(args: argparse.Namespace) -> None:
    """Run each development pool at each fraction and dump its decision rows (``decision_rows.json``)."""
    from gen_conditions import DEFAULT_CONDITIONS, select_conditions
    from gen_pools import annotated_ids, plan_pools
    from gen_stability import write_annotated
    from run_protocol import pool_scorer, run_stages

    from choral.pipeline.references import read_references
    from choral.pipeline.run import RunPaths

    plans = plan_pools(select_conditions(list(DEFAULT_CONDITIONS)), args.prompts, args.unseen_prompts, 0.3,
                       args.seed, args.prompt_seed)
    for plan in plans:
        pool_run = args.data / "runs" / plan.name
        config_path = pool_run / "config.yaml"
        if not RunPaths(pool_run).decoded.is_file():
            raise SystemExit(f"{pool_run}: not decoded; run run_protocol.py on the development draw first")
        references = {k: v.text for k, v in read_references(args.data / plan.name / "references.jsonl.gz").items()}
        texts = {item.cut_id: item.prompt.text for item in plan.items}
        scorer = pool_scorer(pool_run, config_path)
        # tune at every fraction (min_annotated 2): what searching on few annotated cuts does is the question
        data = yaml.safe_load(config_path.read_text())
        data["tune"] = {**(data.get("tune") or {}), "min_annotated": 2}
        tuned_config = pool_run / "dev" / "config-tuned.yaml"
        tuned_config.parent.mkdir(parents=True, exist_ok=True)
        tuned_config.write_text(yaml.safe_dump(data, sort_keys=False))
        for fraction in args.fractions:
            annotated = annotated_ids(list(plan.items), fraction, args.seed)
            for tuned in (True, False) if args.untuned else (True,):
                out = pool_run / "dev" / (f"annotated-{fraction:g}" + ("" if tuned else "-untuned"))
                decoded = out / "decoded.jsonl.gz"
                write_annotated(RunPaths(pool_run).decoded, decoded, texts, annotated)
                run_stages(decoded, out, tuned_config, scorer, tune=tuned)
                rows = decision_rows(out, tuned_config, scorer, references)
                (out / "decision_rows.json").write_text(json.dumps(rows))
                summary = score(rows, *_beta_of(out), 0.0)
                print(f"{plan.name} {fraction:g}{'' if tuned else ' untuned'}: {len(annotated)} annotated, "
                      f"{summary}", flush=True)


def _beta_of(out: Path) -> tuple[np.ndarray]:
    """The coefficients the run decided with (params.json's best, else the prior)."""
    from choral.pipeline.propagate.calibrate import PRIOR

    report = json.loads((out / "params.json").read_text()) if (out / "params.json").is_file() else {}
    return (np.asarray(report.get("best", {}).get("calibration") or PRIOR, dtype=np.float64),)


# ------------------------------------------------------------------------------------------------ score

@dataclass(frozen=True)
class Score:
    """What a decision rule does on a set of decision rows (unannotated cuts)."""

    cuts: int
    teacher_wer: float
    choral_wer: float
    help: float
    harm: float
    ece: float
    replaced: int

    def __str__(self) -> str:
        return (f"{self.cuts} cuts, WER {100 * self.teacher_wer:.2f}% -> {100 * self.choral_wer:.2f}%, help "
                f"{100 * self.help:.2f}%, harm {100 * self.harm:.2f}%, ECE {self.ece:.3f}, {self.replaced} replaced")


def ece(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Expected calibration error over 10 equal-width bins (as ``choral eval`` computes it)."""
    bins = np.minimum((confidence * N_BINS).astype(int), N_BINS - 1)
    total = 0.0
    for b in range(N_BINS):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(confidence[mask].mean() - correct[mask].mean())
    return total / max(len(confidence), 1)


def score(rows: list[dict], beta: np.ndarray, margin: float, gamma: np.ndarray | None = None,
          veto: float = VETO) -> Score:
    """WER, help / harm and ECE of a decision: ``p(w) > p(b) + margin`` with coefficients ``beta`` (exact), or,
    with ``gamma``, ``E[e(w)] < E[e(b)] - margin`` by the error model (errors); confidence is ``p`` either way.
    The teacher's veto (``teacher_veto``) keeps ``b`` when its log-likelihood beats ``w``'s by more than ``veto``
    (not where the row is ``unheard``, as :func:`choral.pipeline.propagate.calibrate.decide`)."""
    if not rows:
        return Score(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    xw = np.asarray([r["x_winner"] for r in rows])
    xb = np.asarray([r["x_one_best"] for r in rows])
    pw, pb = probability(beta, xw), probability(beta, xb)
    same = np.asarray([r["same"] for r in rows])
    teacher = FEATURES.index("teacher")
    unheard = np.asarray([r.get("unheard", False) for r in rows], dtype=bool)
    if veto > 0:  # no veto where the winner has words the teacher never says, in a group formed by sound ...
        same = same | ((xw[:, teacher] < xb[:, teacher] - veto) & ~unheard)
    same = same | (unheard & (pw <= UNHEARD_CONFIDENCE))  # ... but it must be more likely right than not
    if gamma is None:
        replace_ = ~same & (pw > pb + margin)
    else:
        mw = expected_errors(gamma, error_rows(xw, [r["words_winner"] for r in rows]))
        mb = expected_errors(gamma, error_rows(xb, [r["words_one_best"] for r in rows]))
        replace_ = ~same & (mw < mb - margin)
    confidence = np.where(replace_, pw, pb)
    correct = np.where(replace_, [r["y_winner"] for r in rows], [r["y_one_best"] for r in rows])
    ew = np.asarray([r["errors_winner"] for r in rows])
    eb = np.asarray([r["errors_one_best"] for r in rows])
    errors = np.where(replace_, ew, eb)
    words = max(sum(r["words"] for r in rows), 1)
    return Score(len(rows), eb.sum() / words, errors.sum() / words, float(np.mean(errors < eb)),
                 float(np.mean(errors > eb)), ece(confidence, correct.astype(float)), int(replace_.sum()))


def error_matrix(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The error model's rows: each cut's winner, and its 1-best when distinct, with their word errors."""
    z, e = [], []
    for r in rows:
        for which in ("winner",) if r["same"] else ("winner", "one_best"):
            z.append(error_rows(np.asarray(r["x_" + which]), r["words_" + which])[0])
            e.append(r["errors_" + which])
    return np.asarray(z, dtype=np.float64).reshape(-1, len(ERROR_FEATURES)), np.asarray(e, dtype=np.float64)


def training_matrix(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The fit's rows: each cut's winner, and its 1-best when distinct (as ``calibrate.training_rows``)."""
    x, y = [], []
    for r in rows:
        x.append(r["x_winner"])
        y.append(r["y_winner"])
        if not r["same"]:
            x.append(r["x_one_best"])
            y.append(r["y_one_best"])
    return np.asarray(x, dtype=np.float64).reshape(-1, len(FEATURES)), np.asarray(y, dtype=np.float64)


def tune_rows(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The cross-fitted tune rows of a run (params.json), empty when tune did not fit."""
    record = json.loads((out / "params.json").read_text()) if (out / "params.json").is_file() else {}
    data = np.asarray((record.get("calibration") or {}).get("rows") or [], dtype=np.float64)
    data = data.reshape(-1, len(FEATURES) + 1)
    return data[:, :-1], data[:, -1]


FITS: tuple[tuple[str, float], ...] = (("prior", 0.0), ("full", 1.0), ("full", 4.0), ("scale", 0.25), ("scale", 1.0))


def adapted(beta0: np.ndarray, out: Path, fit_name: str, strength: float) -> np.ndarray:
    """The coefficients a run's tune would decide with: ``beta0`` adapted to its cross-fitted tune rows."""
    x, y = tune_rows(out)
    if fit_name == "prior" or not len(y):
        return beta0
    return (fit_scaling if fit_name == "scale" else fit_calibration)(x, y, beta0, strength)


def fit(args: argparse.Namespace) -> None:
    """beta_0 on the pooled rows of ``--run``; every dumped run scored per tune fit and margin; the PRIOR line."""
    pools = sorted(p for p in (args.data / "runs").iterdir() if (p / "dev" / args.run / "decision_rows.json").is_file())
    if not pools:
        raise SystemExit(f"no decision rows under {args.data / 'runs'}/*/dev/{args.run}; run `collect` first")

    def rows_of(out: Path) -> list[dict]:
        return json.loads((out / "decision_rows.json").read_text())

    x, y = training_matrix([r for p in pools for r in rows_of(p / "dev" / args.run)])
    beta0 = fit_calibration(x, y, np.zeros(len(FEATURES)), args.strength)
    print(f"beta_0 on {args.run} of {', '.join(p.name for p in pools)}: {len(y)} rows ({int(y.sum())} right), "
          f"pull {args.strength} toward 0")
    runs = sorted(out for p in pools for out in (p / "dev").iterdir() if (out / "decision_rows.json").is_file())
    for fit_name, strength in FITS:
        for margin in MARGINS:
            print(f"tune fit {fit_name} {strength:g}, margin {margin:.2f}")
            for out in runs:
                rows = rows_of(out)
                beta = adapted(beta0, out, fit_name if "untuned" not in out.name else "prior", strength)
                overall = score(rows, beta, margin)
                worst = max(score([r for r in rows if r["accent"] == c], beta, margin).harm
                            for c in {r["accent"] for r in rows})
                print(f"  {out.parent.parent.name:13s} {out.name:24s} {overall}; worst condition harm "
                      f"{100 * worst:.2f}%")
    print("PRIOR: tuple[float, ...] = (" + ", ".join(f"{b:.3f}" for b in beta0) + ")")
    for name, b in zip(FEATURES, beta0):
        print(f"  {name:16s} {b:+.3f}")
    fit_errors(args, pools, runs, rows_of)


def fit_errors(args: argparse.Namespace, pools: list[Path], runs: list[Path], rows_of) -> None:
    """The error model: fitted on one pool and scored on the other (the margin is chosen there), then on both."""
    def decide_with(gamma: np.ndarray, label: str, targets: list[Path]) -> None:
        for veto in VETOES:
            for margin in ERROR_MARGINS if veto == VETO else (0.5,):
                print(f"errors rule, {label}, margin {margin:g} words, teacher veto {veto:g} nats")
                for out in targets:
                    rows = rows_of(out)
                    beta = adapted(_beta_of(out)[0], out, "prior", 0.0)
                    overall = score(rows, beta, margin, gamma, veto)
                    worst = max(score([r for r in rows if r["accent"] == c], beta, margin, gamma, veto).harm
                                for c in {r["accent"] for r in rows})
                    print(f"  {out.parent.parent.name:13s} {out.name:24s} {overall}; worst condition harm "
                          f"{100 * worst:.2f}%")

    for held_out in pools:
        train = [p for p in pools if p != held_out]
        if not train:
            continue
        z, e = error_matrix([r for p in train for r in rows_of(p / "dev" / args.run)])
        decide_with(fit_error_model(z, e, args.strength), f"fitted on {', '.join(p.name for p in train)}",
                    [out for out in runs if out.parent.parent == held_out])
    z, e = error_matrix([r for p in pools for r in rows_of(p / "dev" / args.run)])
    gamma = fit_error_model(z, e, args.strength)
    decide_with(gamma, "fitted on every pool", runs)
    print(f"ERROR_PRIOR on {args.run}: {len(e)} rows, {int(e.sum())} word errors")
    print("ERROR_PRIOR: tuple[float, ...] = (" + ", ".join(f"{g:.3f}" for g in gamma) + ")")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEV, help="the development draw's data folder")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="run the development pools at each fraction and dump decision rows")
    c.add_argument("--fractions", nargs="+", type=float, default=[0.1])
    c.add_argument("--untuned", action="store_true", help="also run each fraction with tune held at the config")
    c.add_argument("--prompts", type=int, default=50)
    c.add_argument("--unseen-prompts", type=int, default=50)
    c.add_argument("--seed", type=int, default=13)
    c.add_argument("--prompt-seed", type=int, default=13)
    f = sub.add_parser("fit", help="fit beta_0 on the dumped rows and score margins and tune strengths")
    f.add_argument("--run", default="annotated-0.1", help="which dumped run of each pool (dev/<run>)")
    f.add_argument("--strength", type=float, default=1.0, help="pull of beta_0 toward 0")
    args = parser.parse_args(argv)
    if getattr(args, "seed", 13) == 12 or getattr(args, "prompt_seed", 13) in (4, 12):
        parser.error("seed 12 / prompt seed 12 are the reported draw and 4 the corpus': use a development seed")
    args.data = args.data.resolve()
    {"collect": collect, "fit": fit}[args.command](args)


if __name__ == "__main__":
    main()
