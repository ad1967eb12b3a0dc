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
from typing import Sequence

import numpy as np

from ..grouped import formed_by_sound


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
    snr_db: float | None = None      # energy-percentile SNR of the audio (decode's custom.snr_db; None: unknown)


def noisy_pair(a: CutEntry, b: CutEntry, below: float) -> bool:
    """Whether both readings were measured below ``below`` dB (``propagate.noisy_pair_snr``; 0: never): noise makes
    readings of different prompts sound alike, so one noisy reading is weak evidence about another's words."""
    return (below > 0 and a.snr_db is not None and b.snr_db is not None
            and a.snr_db < below and b.snr_db < below)


def heard_words(entries: Sequence[CutEntry]) -> frozenset[str]:
    """Every word of the entries' n-best hypotheses: the words this teacher says somewhere in the batch.

    A reference word outside it is one the teacher never produces here (a word it never heard in training),
    so its likelihood of a text with that word says nothing about whether the text is right (:mod:`.calibrate`:
    no veto then, in a group formed by sound; :mod:`.retrieve`: a fluent 1-best is no evidence against it)."""
    return frozenset(word for entry in entries for text in entry.hypotheses for word in text.split())


def teacher_weight(entry: CutEntry, fusion_weight: float) -> float:
    """The fusion's teacher weight λ for ``entry``: 0 in a group ``choral group`` formed by sound.

    Such a group holds cuts the teacher could not read (their hypotheses share too few words with any other
    cut's), and its likelihood of a transcript with words it never heard is hundreds of nats below its own
    wrong reading: no evidence about which text is right. There the graph alone decides the winner
    (among the texts :func:`fused_scores` admits)."""
    return 0.0 if formed_by_sound(entry.group) else fusion_weight


def fused_scores(entry: CutEntry, labels: GroupLabels, teacher: np.ndarray, support: np.ndarray,
                 fusion_weight: float) -> np.ndarray:
    """``λ log P_teacher + (1 - λ) log F̂`` over one cut's columns (-inf where the teacher term is: not a candidate).

    In a group formed by sound λ is 0 (:func:`teacher_weight`), and only the cut's own n-best and the group's
    references may win: with the teacher silenced, another unannotated cut's reading is no better evidence
    than the cut's own (on the development draw, such readings won and harmed noisy cuts), while an annotated
    neighbour's reference is the truth about the words it shares."""
    weight = teacher_weight(entry, fusion_weight)
    with np.errstate(divide="ignore", invalid="ignore"):
        fused = weight * teacher + (1 - weight) * np.log(support + 1e-12)
    fused[np.isneginf(teacher)] = -np.inf
    if formed_by_sound(entry.group):
        allowed = np.zeros(fused.shape, dtype=bool)
        allowed[:labels.references] = True
        allowed[[labels.index[h] for h in entry.hypotheses if h in labels.index]] = True
        fused[~allowed] = -np.inf
    return fused


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
    references: int = 0      # the first this many labels are annotated cuts' references


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
    return GroupLabels(texts=kept, originals=[original[t] for t in kept], index={t: k for k, t in enumerate(kept)},
                       references=len(references))


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
