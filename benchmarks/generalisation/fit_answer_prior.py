"""Fit the answer model's prior (``calibrate.ANSWER_PRIOR``) on development draws: the confidence written for a label.

The decision's calibration (``PRIOR``, adapted per pool by ``choral tune``) is fitted on every candidate a cut weighs
and only rescaled per pool, so that a handful of annotated cuts cannot turn a decision around; the confidence it gives
the *answers* of unannotated cuts is what ``choral eval``'s ECE judges, and on generator pools it was under-confident
(a right, certain teacher reading without an annotated neighbour at p 0.01-0.05). This script fits a second logistic
model over the same features on the answers alone, on development draws only:

    # development draws (never a reported pool: seeds 12, draws 32-34, the large pools, benchmarks/accented)
    for d in 35 36 37 38 39 40; do .venv/bin/python benchmarks/generalisation/run_protocol.py --prompt-seed $d \\
        --seed $d --jobs 1 --no-loco --no-stability --data benchmarks/generalisation/data/draw$d --out /tmp/d$d.md; done
    .venv/bin/python benchmarks/generalisation/fit_answer_prior.py collect benchmarks/generalisation/data/draw3[5-9] \\
        benchmarks/generalisation/data/draw40
    .venv/bin/python benchmarks/generalisation/fit_answer_prior.py fit benchmarks/generalisation/data/draw3[5-9] \\
        benchmarks/generalisation/data/draw40

``collect`` propagates each pool's run with its params.yaml and dumps, for every unannotated cut the decision
answered, its answer's features, the decision's p and whether the answer equals the reference
(``<run>/answer_rows.json``). ``fit`` scores, leaving one draw out at a time (fitted on the others' rows), the ECE of
the decision's p against the answer model's, with and without the per-pool ``scale`` adaptation on the pool's
held-out tune answers (params.json), and prints the ``ANSWER_PRIOR`` line fitted on every draw.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fit_prior import decision_rows, ece  # noqa: E402

from choral.pipeline.propagate.calibrate import FEATURES, fit_calibration, fit_scaling, probability  # noqa: E402

POOLS: tuple[str, ...] = ("generator", "unseen-words")
STRENGTHS: tuple[float, ...] = (0.25, 1.0, 4.0)


def answer_rows(out: Path) -> list[dict]:
    """Each decided unannotated cut of ``out`` (a pool's run directory, propagated with its params.yaml): its answer's
    features, the decision's p and whether the answer is the reference (from ``fit_prior.decision_rows``)."""
    from run_protocol import pool_scorer

    from choral.pipeline.references import read_references
    from choral.pipeline.run_config import load_run_config

    config_path = out / "config.yaml"
    references = {k: v.text for k, v in read_references(load_run_config(config_path).eval.references).items()}
    rows = decision_rows(out, config_path, pool_scorer(out, config_path), references)
    return [{"cut": r["cut"], "accent": r["accent"], "p": r["p"],
             "x": r["x_winner"] if r["replaced"] else r["x_one_best"],
             "y": r["y_winner"] if r["replaced"] else r["y_one_best"]} for r in rows]


def collect(args: argparse.Namespace) -> None:
    for draw in args.draws:
        for pool in POOLS:
            out = draw / "runs" / pool
            rows = answer_rows(out)
            (out / "answer_rows.json").write_text(json.dumps(rows))
            y = np.array([r["y"] for r in rows], dtype=np.float64)
            p = np.array([r["p"] for r in rows])
            print(f"{draw.name}/{pool}: {len(rows)} answers, {int(y.sum())} right, ECE of p {ece(p, y):.3f}",
                  flush=True)


def tune_answers(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """The pool's held-out tune answers (params.json ``calibration.answers``): feature rows and exactness."""
    record = json.loads((out / "params.json").read_text())
    data = np.asarray(((record.get("calibration") or {}).get("answers") or {}).get("rows") or [], dtype=np.float64)
    data = data.reshape(-1, len(FEATURES) + 1)
    return data[:, :-1], data[:, -1]


def fit(args: argparse.Namespace) -> None:
    rows = {(d.name, pool): json.loads((d / "runs" / pool / "answer_rows.json").read_text())
            for d in args.draws for pool in POOLS}
    names = sorted({d for d, _ in rows})

    def matrix(keys) -> tuple[np.ndarray, np.ndarray]:
        chosen = [r for k in keys for r in rows[k]]
        return (np.asarray([r["x"] for r in chosen], dtype=np.float64).reshape(-1, len(FEATURES)),
                np.asarray([r["y"] for r in chosen], dtype=np.float64))

    columns = ["p"] + ["prior"] + [f"scale {s:g}" for s in STRENGTHS]
    scores: dict[str, list[float]] = {c: [] for c in columns}
    print("leave one draw out: ECE of the answers' confidence per pool (" + ", ".join(columns) + ")")
    for held in names:
        beta_a = fit_calibration(*matrix([k for k in rows if k[0] != held]), np.zeros(len(FEATURES)), args.strength)
        for pool in POOLS:
            x, y = matrix([(held, pool)])
            p = np.asarray([r["p"] for r in rows[(held, pool)]])
            values = {"p": ece(p, y), "prior": ece(probability(beta_a, x), y)}
            tx, ty = tune_answers(next(d for d in args.draws if d.name == held) / "runs" / pool)
            for s in STRENGTHS:
                adapted = fit_scaling(tx, ty, beta_a, s) if len(ty) else beta_a
                values[f"scale {s:g}"] = ece(probability(adapted, x), y)
            for c in columns:
                scores[c].append(values[c])
            print(f"  {held}/{pool:13s} {len(y):4d} answers: " + "  ".join(f"{c} {values[c]:.3f}" for c in columns))
    for c in columns:
        v = np.asarray(scores[c])
        print(f"{c:10s} mean ECE {v.mean():.4f}, median {np.median(v):.4f}, worst {v.max():.3f}, "
              f"pools over 0.05: {int((v > 0.05).sum())}/{len(v)}")
    x, y = matrix(list(rows))
    beta_a = fit_calibration(x, y, np.zeros(len(FEATURES)), args.strength)
    print(f"ANSWER_PRIOR on {', '.join(names)}: {len(y)} answers ({int(y.sum())} right), pull {args.strength} toward 0")
    print("ANSWER_PRIOR: tuple[float, ...] = (" + ", ".join(f"{b:.3f}" for b in beta_a) + ")")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("collect", "fit"):
        p = sub.add_parser(name)
        p.add_argument("draws", nargs="+", type=Path, help="development draws' data folders (run_protocol --data)")
        if name == "fit":
            p.add_argument("--strength", type=float, default=1.0, help="pull of the answer prior toward 0")
    args = parser.parse_args(argv)
    args.draws = [d.resolve() for d in args.draws]
    for d in args.draws:
        if d.name in ("data", "large") or d.name in ("draw32", "draw33", "draw34"):
            parser.error(f"{d}: a reported draw; fit on development draws only")
    {"collect": collect, "fit": fit}[args.command](args)


if __name__ == "__main__":
    main()
