"""fit_answer_prior.py's fit on dumped answer rows: leave-one-draw-out scores and the ANSWER_PRIOR line; reported
draws are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from choral.pipeline.propagate.calibrate import FEATURES, probability


@pytest.fixture(scope="module")
def fit_answer_prior(protocol_script):
    return protocol_script("fit_answer_prior")


def _draw(root: Path, name: str, rng: np.random.Generator, truth: np.ndarray) -> Path:
    """A fake development draw: each pool's answers (features, the decision's p, exactness drawn from ``truth``)."""
    for pool in ("generator", "unseen-words"):
        run = root / name / "runs" / pool
        run.mkdir(parents=True)
        x = np.column_stack([np.ones(200), rng.normal(size=(200, len(FEATURES) - 1))])
        y = (rng.random(200) < probability(truth, x)).astype(int)
        rows = [{"cut": f"{name}-{pool}-{k}", "accent": "a", "x": list(map(float, x[k])), "p": 0.9, "y": int(y[k])}
                for k in range(200)]
        (run / "answer_rows.json").write_text(json.dumps(rows))
        tune = [list(map(float, x[k])) + [int(y[k])] for k in range(30)]
        (run / "params.json").write_text(json.dumps({"calibration": {"answers": {"rows": tune}}}))
    return root / name


def test_fit_scores_left_out_draws_and_prints_the_prior(fit_answer_prior, tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros(len(FEATURES))
    truth[1] = 2.0
    draws = [str(_draw(tmp_path, f"draw{d}", rng, truth)) for d in (90, 91, 92)]
    fit_answer_prior.main(["fit", *draws])
    out = capsys.readouterr().out
    assert "leave one draw out" in out and out.count("answers: p 0.") == 6
    line = next(row for row in out.splitlines() if row.startswith("ANSWER_PRIOR: tuple"))
    beta = [float(v) for v in line.split("(")[1].rstrip(")").split(",")]
    assert len(beta) == len(FEATURES) and beta[1] > 1.0          # it finds the feature that carries exactness
    # the answer model beats an over-confident constant p of 0.9
    scores = [row for row in out.splitlines() if row.startswith("p ") or row.startswith("prior ")]
    p_mean, prior_mean = (float(row.split("mean ECE ")[1].split(",")[0]) for row in scores)
    assert prior_mean < p_mean


def test_reported_draws_are_refused(fit_answer_prior, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        fit_answer_prior.main(["fit", str(tmp_path / "draw33")])
