"""Label sets and priors for propagation: which transcripts compete, and how likely each starts.

Within a group the *labels* are the distinct normalised texts of all its cuts'
n-best hypotheses plus the references of its annotated cuts. Every cut gets a
prior row over its group's labels:

- annotated cut: one-hot on its reference (it is a clamped seed);
- unannotated cut: the teacher posterior over its own n-best,
  ``P(h | i) = softmax(score_h / T)`` with temperature ``T`` (hypotheses that
  normalise to the same text pool their mass).

Label columns are *local to a group*: column ``k`` of a cut means label ``k``
of that cut's group. Because graph edges never cross groups, one propagation
over many groups at once is exact with this layout, and the prior matrix has
only as many columns as the largest group has labels (capped by
``max_labels``, beyond the references and every cut's own 1-best, which are
always kept, by prior mass).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CutEntry:
    """What propagation needs to know about one cut."""

    cut_id: str
    group: str
    hypotheses: list[str]            # normalised n-best texts, best first
    originals: list[str]             # the same hypotheses as the teacher wrote them
    scores: np.ndarray               # teacher log-probabilities of the n-best
    reference: str | None = None     # normalised reference (annotated cuts only)
    reference_original: str | None = None


def log_posterior(scores: np.ndarray, temperature: float) -> np.ndarray:
    """``log softmax(scores / T)``: the teacher's posterior over its own n-best."""
    scaled = np.asarray(scores, dtype=np.float64) / temperature
    shifted = scaled - scaled.max()
    return shifted - np.log(np.exp(shifted).sum())


@dataclass
class GroupLabels:
    """The competing transcripts of one group, with a readable original form of each."""

    texts: list[str] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)


def build_group_labels(entries: list[CutEntry], temperature: float, max_labels: int) -> GroupLabels:
    """Labels of one group: references, every cut's own 1-best, then other hypotheses by total prior mass.

    References and 1-bests are always kept (a cut must be able to keep its teacher's answer);
    the remaining hypotheses fill up to ``max_labels`` columns.
    """
    mass: dict[str, float] = {}
    original: dict[str, str] = {}
    references: dict[str, None] = {}  # insertion-ordered set
    for entry in entries:
        if entry.reference is not None:
            references.setdefault(entry.reference)
            original.setdefault(entry.reference, entry.reference_original or entry.reference)
        posterior = np.exp(log_posterior(entry.scores, temperature))
        for text, raw, p in zip(entry.hypotheses, entry.originals, posterior):
            mass[text] = mass.get(text, 0.0) + float(p)
            original.setdefault(text, raw)
    required = dict(references)
    for entry in entries:
        if entry.hypotheses:
            required.setdefault(entry.hypotheses[0])
    ranked = list(required) + sorted((t for t in mass if t not in required), key=lambda t: (-mass[t], t))
    kept = ranked[: max(max_labels, len(required))]
    return GroupLabels(texts=kept, originals=[original[t] for t in kept], index={t: k for k, t in enumerate(kept)})


def own_log_posteriors(entry: CutEntry, labels: GroupLabels, temperature: float) -> dict[int, float]:
    """The cut's teacher log-posterior per label column it proposed (duplicates pooled)."""
    pooled: dict[int, float] = {}
    for text, logp in zip(entry.hypotheses, log_posterior(entry.scores, temperature)):
        column = labels.index.get(text)
        if column is None:
            continue
        pooled[column] = float(np.logaddexp(pooled[column], logp)) if column in pooled else float(logp)
    return pooled


def prior_row(entry: CutEntry, labels: GroupLabels, own: dict[int, float], width: int) -> np.ndarray:
    """One row of the prior matrix Y: one-hot reference, or the teacher posterior."""
    row = np.zeros(width)
    if entry.reference is not None:
        row[labels.index[entry.reference]] = 1.0
        return row
    for column, logp in own.items():
        row[column] = np.exp(logp)
    total = row.sum()
    return row / total if total > 0 else row
