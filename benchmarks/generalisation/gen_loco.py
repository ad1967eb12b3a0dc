"""Leave-one-condition-out (LOCO): choose defaults without a condition, then evaluate them on it.

For each held-out condition ``c`` and each candidate set of defaults ``k``, choral runs (group -> graph ->
tune -> propagate -> eval, on the pool's decoded cuts) on every pool with ``c``'s cuts removed; those
*selection runs* see nothing of ``c``. The selection rule (:func:`select`) picks one candidate from the
selection runs alone; the LOCO figure for ``c`` is that candidate's result on ``c``'s cuts in its run on the
whole pool (where ``c``'s own annotated cuts seed propagation and ``tune`` sees only that pool's annotated
cuts, as a user's run would).

Selection rule, over the rows (pool, condition != c) of a candidate's selection runs:

1. a candidate is *safe* when no row has choral WER above teacher WER + 0.2 points (the issue's bound);
2. among safe candidates, the highest mean relative WER reduction over the rows of non-control conditions wins;
3. when no candidate is safe, the smallest worst excess (choral - teacher) wins;
4. ties (within 1e-9) go to the earlier candidate: the first is the run config as given (today's defaults).

The candidates vary one thing at a time: whether ``tune`` runs, the range of the fusion weight it searches,
or (the methods of issue 12 part 4, :data:`ABLATIONS`) one propagate option and the k-nearest counts tune tries.
``--ablations`` runs each method on the whole pools and compares it with ``config`` (:func:`ablation_verdict`);
``--candidates config <method>`` puts it through the LOCO rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from gen_results import MAX_EXCESS, Slice, mean_reduction, total

TIE = 1e-9


@dataclass(frozen=True)
class Candidate:
    """A set of defaults: tune on or off, and (when on) the fusion weights its grid searches (None: the config's)."""

    name: str
    tune: bool = True
    fusion_weight: tuple[float, ...] | None = None
    description: str = ""
    propagate: tuple[tuple[str, object], ...] = ()    # PropagateConfig fields set over the config's
    nearest: tuple[int, ...] = ()                     # k-nearest counts tune tries (empty: the config's)
    group: tuple[tuple[str, object], ...] = ()        # GroupingConfig fields set over the config's
    graph: tuple[tuple[str, object], ...] = ()        # GraphConfig fields set over the config's

    def __post_init__(self) -> None:
        if not self.tune and self.fusion_weight is not None:
            raise ValueError(f"candidate {self.name}: a fusion-weight range needs tune on")
        if self.fusion_weight is not None and not self.fusion_weight:
            raise ValueError(f"candidate {self.name}: an empty fusion-weight range")


CANDIDATES: dict[str, Candidate] = {c.name: c for c in (
    Candidate("config", description="the run config as given (tune over its grid)"),
    Candidate("no-tune", tune=False, description="tune off: propagate with the config's own values"),
    Candidate("low-fusion", fusion_weight=(0.0, 0.05, 0.1), description="tune, fusion weight limited to <= 0.1"),
)}
DEFAULT_CANDIDATES: tuple[str, ...] = tuple(CANDIDATES)

# Issue 12 part 4: one method each, over the config as given (tune on); `--ablations` measures them.
CANDIDATES.update({c.name: c for c in (
    Candidate("consensus", propagate=(("consensus", 4),),
              description="word-level consensus: 4 confusion-network paths per cut, scored by the teacher"),
    Candidate("knn", nearest=(0, 2, 4), description="k-nearest edges added to the threshold graph, k in 0, 2, 4 "
                                                     "chosen by tune"),
    Candidate("knn-only", propagate=(("nearest", 4), ("nearest_only", True)), nearest=(2, 4, 8),
              description="k-nearest edges alone (no threshold edges), k in 2, 4, 8 chosen by tune"),
    Candidate("rounds", propagate=(("rounds", 3),),
              description="3 propagation rounds, labels with confidence >= 0.9 soft seeds of the next"),
    Candidate("length-norm", propagate=(("length_norm", True),),
              description="teacher log-likelihoods per character when candidates are compared"),
)})
CANDIDATES["no-sound"] = Candidate("no-sound", group=(("acoustic_neighbours", 0),),
                                   description="no grouping by sound: cuts word overlap leaves alone stay alone")
# The do-no-harm and robustness choices of the latest round, each switched off (or, for the split, on).
CANDIDATES.update({c.name: c for c in (
    Candidate("no-isolated", graph=(("isolated_reach", 0.0),),
              description="no link from a word-group cut without edges to its nearest"),
    Candidate("sound-split", graph=(("sound_scale", "split"), ("sound_reach", 1.5)),
              propagate=(("unheard_reach", 0.9),),
              description="sound reaches in the split of the sound pairs' two modes (reach 1.5, unheard 0.9)"),
    Candidate("no-fluency", propagate=(("unheard_fluency", 0.0),),
              description="beyond the reach, no exemption for a teacher unsure of its reading"),
    Candidate("no-floor", propagate=(("replace_floor", 0.0),), description="no floor on the winner's p"),
    Candidate("correction", propagate=(("correction_edits", 1),),
              description="no teacher veto on one-word corrections in word groups (on until session 15)"),
    Candidate("session-14", propagate=(("retrieve_ratio", 0.75), ("error_margin", 0.1), ("correction_edits", 1)),
              description="session 14's decision: unsure ratio 0.75, error margin 0.1, one-word corrections"),
    Candidate("no-noisy-pairs", propagate=(("noisy_pair_snr", 0.0),),
              description="a noisy reading may lend its text by sound to a noisy cut (no 20 dB bound; session 16)"),
    Candidate("unheard-known", propagate=(("retrieve_unheard_known", True),),
              description="the unheard path drops no 1-best word that an annotated reference says (session 16)"),
    Candidate("no-retrieve", propagate=(("retrieve_reach", 0.0), ("retrieve_unheard_reach", 0.0),
                                        ("retrieve_far_reach", 0.0), ("retrieve_scored_reach", 0.0)),
              description="no retrieval of a struggling cut's nearest annotated reading from another group"),
    Candidate("no-unheard-retrieve", propagate=(("retrieve_unheard_reach", 0.0),),
              description="retrieval only for 1-bests the teacher is unsure of, not sure ones missing unheard words"),
    Candidate("no-far-retrieve", propagate=(("retrieve_far_reach", 0.0),),
              description="no far retrieval path for the teacher's worst readings (session 11)"),
    Candidate("far-hub", propagate=(("retrieve_far_hub", 2.0),),
              description="the far path skips a hub reading (the nearest of over 2x its share of cuts; session 12)"),
    Candidate("no-hub-bound", propagate=(("retrieve_unsure_hub", 0.0), ("retrieve_far_hub", 0.0)),
              description="the unsure and far paths take hub readings too (no bound 4 on them; session 14)"),
    Candidate("hub-scale", propagate=(("retrieve_hub_scale", 60),),
              description="retrieval reads hub-scaled distances (each reading's 60 nearest; session 14)"),
    Candidate("no-scored-retrieve", propagate=(("retrieve_scored_reach", 0.0),),
              description="no scored retrieval: the teacher never checks a nearest annotated reading (session 12)"),
    Candidate("no-split-prior", graph=(("threshold_prior", "none"),),
              description="a threshold learned from fewer than 10 positive pairs is used as learned, not shrunk"),
    Candidate("no-rival", propagate=(("unheard_rival", 0.0),),
              description="beyond the reach, an unsure teacher loses its veto whoever's reading is nearer"),
)})
ABLATIONS: tuple[str, ...] = ("consensus", "knn", "knn-only", "rounds", "length-norm", "no-sound", "no-isolated",
                              "sound-split", "no-fluency", "no-floor", "correction", "session-14", "no-noisy-pairs",
                              "unheard-known", "no-retrieve", "no-unheard-retrieve", "no-far-retrieve", "far-hub",
                              "no-hub-bound", "hub-scale", "no-scored-retrieve",
                              "no-split-prior", "no-rival")


def select_candidates(names: Sequence[str]) -> tuple[Candidate, ...]:
    """The named candidates in order; unknown names are a ValueError."""
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(CANDIDATES)}")
    if not names:
        raise ValueError("no candidate selected")
    return tuple(CANDIDATES[n] for n in dict.fromkeys(names))


@dataclass(frozen=True)
class RunKey:
    """One choral run of the LOCO loop: a pool, a candidate and the condition left out (None: the whole pool)."""

    pool: str
    candidate: str
    excluded: str | None

    @property
    def slug(self) -> str:
        return f"{self.candidate}/{'all' if self.excluded is None else 'without-' + self.excluded}"


def loco_runs(pools: Sequence[str], conditions: Sequence[str], candidates: Sequence[str]) -> Iterator[RunKey]:
    """Every run the loop needs: per pool and candidate, the whole pool and the pool without each condition."""
    for pool in pools:
        for candidate in candidates:
            yield RunKey(pool, candidate, None)
            for condition in conditions:
                yield RunKey(pool, candidate, condition)


@dataclass(frozen=True)
class Score:
    """A candidate's standing on the selection runs of one held-out condition."""

    candidate: str
    safe: bool
    mean_reduction: float
    worst_excess: float
    n_rows: int


def score(candidate: str, rows: Sequence[tuple[str, Slice]], control: str) -> Score:
    """Score one candidate from its selection rows ``(condition, slice)``."""
    if not rows:
        raise ValueError(f"candidate {candidate}: no selection rows")
    worst = max(s.excess for _, s in rows)
    reductions = [s.reduction for name, s in rows if name != control]
    mean = sum(reductions) / len(reductions) if reductions else 0.0
    return Score(candidate, worst <= MAX_EXCESS, mean, worst, len(rows))


def select(scores: Sequence[Score]) -> Score:
    """The rule of the module docstring: safe first, then mean reduction (or least excess), ties to the first."""
    if not scores:
        raise ValueError("no candidate to select from")
    best = scores[0]
    for s in scores[1:]:
        if s.safe and not best.safe:
            best = s
        elif s.safe and best.safe and s.mean_reduction > best.mean_reduction + TIE:
            best = s
        elif not s.safe and not best.safe and s.worst_excess < best.worst_excess - TIE:
            best = s
    return best


def selection_rows(results: Mapping[RunKey, Mapping[str, Slice]], candidate: str, held_out: str
                   ) -> list[tuple[str, Slice]]:
    """The rows (condition, slice) of ``candidate``'s runs without ``held_out``, over every pool."""
    rows = []
    for key, slices in sorted(results.items(), key=lambda kv: kv[0].pool):
        if key.candidate == candidate and key.excluded == held_out:
            if held_out in slices:
                raise ValueError(f"run {key.pool}/{key.slug} still holds the held-out condition {held_out}")
            rows.extend(sorted(slices.items()))
    return rows


@dataclass(frozen=True)
class LocoOutcome:
    """For one held-out condition: the scores, the chosen candidate, and the held-out slice per pool under it."""

    held_out: str
    scores: tuple[Score, ...]
    chosen: str
    evaluated: dict[str, Slice]       # pool -> the held-out condition's slice in the chosen candidate's full run
    default: dict[str, Slice]         # pool -> the same slice under the first candidate (today's defaults)


def leave_one_out(results: Mapping[RunKey, Mapping[str, Slice]], conditions: Sequence[str],
                  candidates: Sequence[str], control: str) -> list[LocoOutcome]:
    """Select per held-out condition on the selection runs, then read its slice from the chosen full runs."""
    pools = sorted({key.pool for key in results})
    outcomes = []
    for held_out in conditions:
        scores = tuple(score(c, selection_rows(results, c, held_out), control) for c in candidates)
        chosen = select(scores).candidate
        evaluated = {pool: results[RunKey(pool, chosen, None)][held_out] for pool in pools}
        default = {pool: results[RunKey(pool, candidates[0], None)][held_out] for pool in pools}
        outcomes.append(LocoOutcome(held_out, scores, chosen, evaluated, default))
    return outcomes


@dataclass(frozen=True)
class Verdict:
    """A method against the baseline on the same pools: all pools' figures and whether it may become a default."""

    method: str
    mean_reduction: float
    baseline_reduction: float
    harm_rate: float
    baseline_harm_rate: float
    worst_excess: float
    helps: bool

    @property
    def reason(self) -> str:
        if self.worst_excess > MAX_EXCESS:
            return f"unsafe: a condition {100 * self.worst_excess:+.2f} points over the teacher"
        if self.harm_rate > self.baseline_harm_rate:
            return "raises the harm rate"
        if self.mean_reduction <= self.baseline_reduction + TIE:
            return "no gain in mean reduction"
        return "helps without raising harm"


def ablation_verdict(method: str, runs: Mapping[str, Mapping[str, Slice]], baseline: Mapping[str, Mapping[str, Slice]],
                     control: str) -> Verdict:
    """The LOCO rule's criteria applied to whole-pool runs (pool -> condition -> slice) of a method and of the
    baseline: safe on every (pool, condition), a higher mean reduction over the non-control conditions of all
    pools together, and no higher harm rate over all their unannotated cuts."""
    def merged(by_pool: Mapping[str, Mapping[str, Slice]]) -> dict[str, Slice]:
        names = list(dict.fromkeys(n for slices in by_pool.values() for n in slices))
        return {n: total([slices[n] for slices in by_pool.values() if n in slices]) for n in names}

    mine, base = merged(runs), merged(baseline)
    worst = max(s.excess for slices in runs.values() for s in slices.values())
    harm = total(list(mine.values())).harm_rate
    base_harm = total(list(base.values())).harm_rate
    reduction, base_reduction = mean_reduction(mine, control), mean_reduction(base, control)
    helps = worst <= MAX_EXCESS and harm <= base_harm and reduction > base_reduction + TIE
    return Verdict(method, reduction, base_reduction, harm, base_harm, worst, helps)
