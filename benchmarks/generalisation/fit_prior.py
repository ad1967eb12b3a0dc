"""Fit the calibration prior ``beta_0`` (``choral.pipeline.propagate.calibrate.PRIOR``) on a development draw.

    .venv/bin/python benchmarks/generalisation/run_protocol.py --prompt-seed 13 --seed 13 \\
        --annotated-fraction 0.3 --no-loco --data benchmarks/generalisation/data/dev --out /tmp/dev.md
    .venv/bin/python benchmarks/generalisation/fit_prior.py benchmarks/generalisation/data/dev/runs/*/params.json

``choral tune`` writes its cross-fitted calibration rows (features of each held-out annotated cut's
fused winner and teacher 1-best, and whether each equals the reference) to ``params.json``. This pools
the rows of the given runs and fits the logistic model with a weak pull (``--strength``) toward 0,
then prints the coefficients, the pooled log-loss and a leave-one-run-out check (each run's rows
scored by the coefficients fitted on the others). The draw must not be a reported pool: the
protocol's reported pools use prompt seed 12 and cut seed 12, ``benchmarks/accented`` is never used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from choral.pipeline.propagate.calibrate import FEATURES, fit_calibration, probability


def read_rows(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The calibration rows of one params.json (features, labels)."""
    record = json.loads(path.read_text())
    rows = (record.get("calibration") or {}).get("rows") or []
    data = np.asarray(rows, dtype=np.float64).reshape(-1, len(FEATURES) + 1)
    return data[:, :-1], data[:, -1]


def log_loss(beta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(probability(beta, x), 1e-9, 1 - 1e-9)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="params.json files of the development runs")
    parser.add_argument("--strength", type=float, default=1.0, help="pull toward 0 (kappa)")
    args = parser.parse_args(argv)
    parts = [read_rows(p) for p in args.reports]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    zero = np.zeros(len(FEATURES))
    beta = fit_calibration(x, y, zero, args.strength)
    print(f"{len(y)} rows ({int(y.sum())} correct) from {len(parts)} runs; log-loss {log_loss(beta, x, y):.4f}")
    for k, (xk, yk) in enumerate(parts):
        others = [p for j, p in enumerate(parts) if j != k]
        if not others or not len(yk):
            continue
        held = fit_calibration(np.concatenate([p[0] for p in others]), np.concatenate([p[1] for p in others]),
                               zero, args.strength)
        rate = min(max(float(yk.mean()), 1e-3), 1 - 1e-3)
        constant = np.eye(len(FEATURES))[0] * np.log(rate / (1 - rate))
        print(f"  {args.reports[k]}: {len(yk)} rows, log-loss held out {log_loss(held, xk, yk):.4f} "
              f"(its own constant rate: {log_loss(constant, xk, yk):.4f})")
    print("PRIOR: tuple[float, ...] = (" + ", ".join(f"{b:.3f}" for b in beta) + ")")
    for name, b in zip(FEATURES, beta):
        print(f"  {name:16s} {b:+.3f}")


if __name__ == "__main__":
    main()
