"""Cross-validation of ``choral tune``: choose α, λ, temperature and threshold scale on annotated cuts.

Only annotated cuts are used: the annotated cuts are split into ``folds``;
for each fold its references are hidden (those cuts become unannotated),
propagation runs with every parameter combination of the grid, and the
rescored transcripts of the hidden cuts are scored against their references.
The combination with the lowest pooled WER over all folds wins and is written
as a YAML that ``choral propagate --params`` accepts (:mod:`.params`). References of unannotated
cuts are never read here.

Only the groups of a fold's held-out cuts matter for them, so each fold
searches that sub-graph. Priors depend only on the temperature and serve every
(threshold scale, α); the solve depends on (threshold scale, α, temperature);
λ only changes the fusion, so one solve serves every λ.

With a ``scorer`` (the teacher), candidates a held-out cut borrows from its
neighbours are scored by the teacher exactly as ``choral propagate --teacher``
will score them, so the chosen λ and T fit the propagation that follows.

Confidence check: for the winning parameters the held-out cuts' confidences
are binned, and the report shows the WER of the cuts kept at each confidence
threshold (it should fall as the threshold rises).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..manifest import check_readable
from ..progress import NullProgress, Progress
from ..propagate import PropagateConfig, batch_priors, fuse, propagate_batch, read_grouped_and_graph
from ..teacher.contracts import Scorer
from ..text import TextNormalizer
from ..wer import pooled_word_errors
from .grid import TuneConfig
from .params import write_params

CONFIDENCE_LEVELS: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass
class TuneSummary:
    """The cross-validation's result: the winning parameters, their held-out WER and where they were written."""

    params_file: Path
    report_file: Path
    best: PropagateConfig
    best_wer: float
    teacher_wer: float
    n_annotated: int
    folds: int
    n_combinations: int
    confidence_curve: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % folds
    return fold


def tune_params(
    grouped: str | Path,
    graph_file: str | Path,
    output: str | Path,
    *,
    base: PropagateConfig = PropagateConfig(),
    grid: TuneConfig = TuneConfig(),
    folds: int = 5,
    seed: int = 0,
    normalizer: TextNormalizer = TextNormalizer(),
    scorer: Scorer | None = None,
    progress: Progress = NullProgress(),
) -> TuneSummary:
    """Cross-validate the grid on annotated cuts; write the best parameters (YAML) and a report (JSON)."""
    grouped, graph_file, output = check_readable(grouped), check_readable(graph_file), Path(output)
    started = time.perf_counter()
    entries, graph = read_grouped_and_graph(grouped, graph_file, normalizer, progress)
    annotated_groups = {e.group for e in entries if e.reference is not None}
    rows = np.array([i for i, e in enumerate(entries) if e.group in annotated_groups], dtype=np.int64)
    sub_entries = [entries[i] for i in rows]
    annotated_rows = np.array([k for k, e in enumerate(sub_entries) if e.reference is not None], dtype=np.int64)
    folds = min(folds, len(annotated_rows))
    if folds < 2:
        raise InputError(grouped, f"tuning needs at least 2 annotated cuts, found {len(annotated_rows)}")
    fold = _fold_of(len(annotated_rows), folds, seed)
    references = [sub_entries[k].reference or "" for k in annotated_rows]

    solves = list(itertools.product(grid.threshold_scale, grid.alpha, grid.temperature))
    progress.task(f"cross-validating {grid.size} combinations x {folds} folds", len(solves) * folds)
    # errors[(scale, alpha, temperature, lambda)] = edits pooled over folds
    edits: dict[tuple[float, float, float, float], int] = {}
    hypotheses: dict[tuple[float, float, float, float], list[tuple[int, str, float]]] = {}
    teacher_edits, total_words = pooled_word_errors(references, [sub_entries[k].hypotheses[0] for k in annotated_rows])
    adjacency_of = {scale: graph.adjacency(graph.threshold * scale * base.threshold_scale,
                                           weighted=base.weighted_edges, nearest=base.nearest,
                                           threshold_edges=not base.nearest_only)[rows][:, rows]
                    for scale in grid.threshold_scale}
    for f in range(folds):
        held_out = annotated_rows[fold == f]
        hidden = list(sub_entries)
        for k in held_out:
            hidden[k] = replace(sub_entries[k], reference=None, reference_original=None)
        fold_refs = [sub_entries[k].reference or "" for k in held_out]
        # only the groups of this fold's held-out cuts influence them
        fold_groups = {sub_entries[k].group for k in held_out}
        local = np.array([k for k, e in enumerate(sub_entries) if e.group in fold_groups], dtype=np.int64)
        position = {int(k): i for i, k in enumerate(local)}
        local_entries = [hidden[k] for k in local]
        local_held_out = [position[int(k)] for k in held_out]
        for temperature in grid.temperature:
            priors = batch_priors(local_entries, replace(base, temperature=temperature))  # shared by scales, α
            for scale, alpha in itertools.product(grid.threshold_scale, grid.alpha):
                local_adjacency = adjacency_of[scale][local][:, local]
                degree = np.diff(local_adjacency.indptr)
                config = replace(base, alpha=alpha, temperature=temperature)
                batch = propagate_batch(local_entries, local_adjacency, degree, config, scorer=scorer,
                                        priors=priors, score_rows=local_held_out)
                for weight in grid.fusion_weight:
                    results = fuse(batch, local_held_out, weight, config)
                    texts = [normalizer(r.text) for r in results]
                    key = (scale, alpha, temperature, weight)
                    edits[key] = edits.get(key, 0) + pooled_word_errors(fold_refs, texts)[0]
                    hypotheses.setdefault(key, []).extend(
                        (int(k), text, r.confidence) for k, text, r in zip(held_out, texts, results))
                progress.advance()

    default_key = (1.0, base.alpha, base.temperature, base.fusion_weight)
    best_key = min(edits, key=lambda k: (edits[k], k != default_key))
    scale, alpha, temperature, weight = best_key
    best = replace(base, alpha=alpha, temperature=temperature, fusion_weight=weight,
                   threshold_scale=base.threshold_scale * scale)
    curve = _confidence_curve(hypotheses[best_key], {int(k): r for k, r in zip(annotated_rows, references)})
    best_wer, teacher_wer = edits[best_key] / max(total_words, 1), teacher_edits / max(total_words, 1)
    header = (f"# choral propagate parameters chosen by `choral tune` on {grouped}\n"
              f"# {folds}-fold cross-validation over annotated cuts; held-out WER {best_wer:.4f}\n")
    report_file = write_params(best, output, header, {
        "best": asdict(best),
        "best_wer": best_wer,
        "teacher_wer": teacher_wer,
        "n_annotated": int(len(annotated_rows)),
        "n_words": int(total_words),
        "folds": folds,
        "confidence_curve": curve,
        "grid": [{"threshold_scale": k[0], "alpha": k[1], "temperature": k[2], "fusion_weight": k[3],
                  "wer": v / max(total_words, 1)} for k, v in sorted(edits.items(), key=lambda kv: kv[1])],
    })
    return TuneSummary(params_file=output, report_file=report_file, best=best, best_wer=best_wer,
                       teacher_wer=teacher_wer, n_annotated=int(len(annotated_rows)), folds=folds,
                       n_combinations=grid.size, confidence_curve=curve, seconds=time.perf_counter() - started)


def _confidence_curve(held_out: list[tuple[int, str, float]], references: dict[int, str]) -> list[dict]:
    """WER and kept fraction of held-out cuts at rising confidence thresholds."""
    curve = []
    for level in CONFIDENCE_LEVELS:
        kept = [(references[k], text) for k, text, confidence in held_out if confidence >= level]
        errors, words = pooled_word_errors([r for r, _ in kept], [t for _, t in kept])
        curve.append({"min_confidence": level, "kept_cuts": len(kept),
                      "kept_fraction": len(kept) / max(len(held_out), 1),
                      "wer": errors / words if words else None})
    return curve
