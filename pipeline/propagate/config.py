"""Propagation's parameters: :class:`PropagateConfig`, and the params.yaml that ``choral tune`` writes.

A params.yaml is read through the one strict YAML reader (:mod:`choral.pipeline.config`), bare
or under a ``propagate:`` key, so a typo in a hand-edited file fails naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import check_finite, from_mapping, read_yaml_mapping
from ..errors import ConfigError, InputError
from .calibrate import ANSWER_PRIOR, ERROR_FEATURES, ERROR_PRIOR, FEATURES, PRIOR
from .retrieve import RETRIEVE_FAR_PRIOR, RETRIEVE_PRIOR, RETRIEVE_SCORED_PRIOR, RETRIEVE_UNHEARD_PRIOR


@dataclass(frozen=True)
class PropagateConfig:
    """Propagation and fusion parameters (``choral tune`` writes these to YAML)."""

    algorithm: Literal["spreading", "propagation"] = "spreading"
    alpha: float = 0.9
    fusion_weight: float = 0.3          # λ: weight of the teacher term
    temperature: float = 1.0            # T of the teacher posterior softmax
    threshold_scale: float = 1.0        # edges link pairs with distance <= scale * learned threshold
    weighted_edges: bool = False        # weight edges by exp(-d / threshold) instead of 1
    nearest: int = 0                    # also link each cut to its k nearest same-group cuts (0: threshold only)
    share_candidates: bool = True       # let labels from neighbours compete for a cut
    share_min: float = 1e-3             # minimum normalised support for a shared candidate
    max_borrowed: int = 32              # shared candidates per cut, most supported first (0: no cap)
    borrowed_floor: float = -4.0        # teacher log-posterior of a shared candidate without a scorer
    clamp_confidence: float = 0.95      # propagation: also clamp unannotated cuts this confident
    max_labels: int = 64                # label columns kept per group
    batch_cuts: int = 50_000            # cuts solved together (whole groups; bounds memory)
    calibrate: bool = True              # decide and score confidence with the calibrated model (calibrate.py)
    calibration: tuple[float, ...] = PRIOR  # beta, one per calibrate.FEATURES (tune fits it; default: the prior)
    prior_calibration: tuple[float, ...] = PRIOR  # the beta tune adapted (replace_floor also asks it)
    answer_calibration: tuple[float, ...] = ANSWER_PRIOR  # beta_a: the confidence written (tune rescales it; []: p)
    decision: Literal["errors", "exact"] = "errors"  # replace the 1-best by expected word errors, or exact p
    replace_margin: float = 0.05        # exact: replace only when p(winner) > p(1-best) + this margin
    error_model: tuple[float, ...] = ERROR_PRIOR  # gamma, one per calibrate.ERROR_FEATURES (the Poisson model)
    error_margin: float = 0.5           # errors: replace only when E[errors(winner)] < E[errors(1-best)] - this
    teacher_veto: float = 8.0           # > 0: never replace when log P_teacher(winner) < log P_teacher(1-best) - this
    unheard_confidence: float = 0.5     # a winner the teacher has no veto on (unheard words) needs calibrated p > this
    unheard_anywhere: bool = True       # no veto on unheard words in word groups too (not only groups formed by sound)
    unheard_reach: float = 1.3          # by sound: only with an annotated reading within this x the threshold ...
    unheard_fluency: float = 0.8        # ... or a teacher 1-best below -this nats per word (0: reach alone) ...
    unheard_rival: float = 1.0          # ... with w's annotated reading within this x any other text's (0: off)
    replace_floor: float = 0.1          # never replace the 1-best with a winner whose calibrated p is below this
    correction_edits: int = 0           # word group: no teacher veto on a winner this many word edits away (0: off)
    retrieve_reach: float = 1.5         # a struggling 1-best takes its nearest annotated reading within this x (0: off)
    retrieve_ratio: float = 0.6         # ... when that reading is nearer than this x any reading of another text ...
    retrieve_fluency: float = 0.35      # ... and the teacher scores its 1-best below -this nats per word
    retrieve_calibration: tuple[float, ...] = RETRIEVE_PRIOR  # (c0, c1): p = sigma(c0 + c1 d / threshold)
    retrieve_unheard_reach: float = 2.25  # or any 1-best, within this x, if the reading adds only unheard words
    retrieve_unheard_ratio: float = 0.95  # ... and is nearer than this x any reading of another text
    retrieve_unheard_calibration: tuple[float, ...] = RETRIEVE_UNHEARD_PRIOR  # its (c0, c1)
    retrieve_unheard_known: bool = False  # ... and it drops no 1-best word that a reference of the manifest has
    retrieve_far_reach: float = 2.5     # or a 1-best below -retrieve_far_fluency, within this x (0: off) ...
    retrieve_far_ratio: float = 0.9     # ... nearer than this x any other text's, if the reading has an unheard word
    retrieve_far_fluency: float = 1.0   # nats per word
    retrieve_far_calibration: tuple[float, ...] = RETRIEVE_FAR_PRIOR  # its (c0, c1)
    retrieve_far_hub: float = 4.0       # ... if the reading is the nearest of at most this x its share of cuts (0: off)
    retrieve_unsure_hub: float = 4.0    # the unsure path's hub bound, as retrieve_far_hub's (0: off)
    retrieve_hub_scale: int = 0         # scale readings by their m nearest distances (retrieve.hub_scales; 0: off)
    retrieve_scored_reach: float = 2.5  # or any 1-best, within this x (0: off), with a scorer, when the teacher ...
    retrieve_scored_margin: float = 8.0  # ... scores the reading no more than this many nats below its 1-best
    retrieve_scored_calibration: tuple[float, ...] = RETRIEVE_SCORED_PRIOR  # its (c0, c1)
    retrieve_scored_alone: bool = True  # ... only when no graph neighbour is labelled with the cut's 1-best
    noisy_pair_snr: float = 20.0        # dB: by sound and far, no reading when it and the cut are below this (0: off)
    # issue 12 part 4 (options, measured in benchmarks/generalisation/RESULTS.md's Ablations)
    nearest_only: bool = False          # with nearest > 0: the k nearest edges alone, no threshold edges
    consensus: int = 0                  # word-level combinations of the neighbourhood per cut (0: off)
    consensus_inputs: int = 8           # most supported transcripts a cut's confusion network aligns
    length_norm: bool = False           # compare candidates by teacher log-likelihood per character
    rounds: int = 1                     # propagation rounds; later ones seed confident labels (soft)
    round_confidence: float = 0.9       # a label this confident seeds the next round

    def __post_init__(self) -> None:
        check_finite(self)
        if self.algorithm not in ("spreading", "propagation"):
            raise ConfigError("algorithm", f"must be spreading or propagation, not {self.algorithm!r}")
        if not 0.0 <= self.alpha < 1.0:
            raise ConfigError("alpha", f"must be in [0, 1), not {self.alpha}")
        if not 0.0 <= self.fusion_weight <= 1.0:
            raise ConfigError("fusion_weight", f"must be in [0, 1], not {self.fusion_weight}")
        for name in ("temperature", "threshold_scale", "max_labels", "batch_cuts"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive, not {getattr(self, name)}")
        if self.nearest < 0:
            raise ConfigError("nearest", f"must be 0 (threshold only) or a positive count, not {self.nearest}")
        if len(self.calibration) != len(FEATURES):
            raise ConfigError("calibration", f"needs {len(FEATURES)} coefficients ({', '.join(FEATURES)}), "
                                             f"not {len(self.calibration)}")
        if len(self.prior_calibration) != len(FEATURES):
            raise ConfigError("prior_calibration", f"needs {len(FEATURES)} coefficients ({', '.join(FEATURES)}), "
                                                   f"not {len(self.prior_calibration)}")
        if len(self.answer_calibration) not in (0, len(FEATURES)):
            raise ConfigError("answer_calibration", f"needs {len(FEATURES)} coefficients ({', '.join(FEATURES)}) "
                                                    f"or none, not {len(self.answer_calibration)}")
        if self.decision not in ("errors", "exact"):
            raise ConfigError("decision", f"must be errors or exact, not {self.decision!r}")
        if len(self.error_model) != len(ERROR_FEATURES):
            raise ConfigError("error_model", f"needs {len(ERROR_FEATURES)} coefficients "
                                             f"({', '.join(ERROR_FEATURES)}), not {len(self.error_model)}")
        if self.error_margin < 0:
            raise ConfigError("error_margin", f"must be >= 0 (expected words saved), not {self.error_margin}")
        if self.unheard_reach < 0:
            raise ConfigError("unheard_reach", f"must be 0 (no limit) or positive, not {self.unheard_reach}")
        if self.unheard_fluency < 0:
            raise ConfigError("unheard_fluency", f"must be 0 (off) or positive (nats/word), not {self.unheard_fluency}")
        for name in ("retrieve_reach", "unheard_rival", "retrieve_unheard_reach", "retrieve_far_reach",
                     "retrieve_scored_reach", "retrieve_scored_margin", "retrieve_far_hub",
                     "retrieve_unsure_hub"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be 0 (off) or positive, not {getattr(self, name)}")
        for name in ("retrieve_ratio", "retrieve_unheard_ratio", "retrieve_far_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(name, f"must be in (0, 1], not {getattr(self, name)}")
        for name in ("retrieve_fluency", "retrieve_far_fluency"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be >= 0 (nats per word), not {getattr(self, name)}")
        for name in ("retrieve_calibration", "retrieve_unheard_calibration", "retrieve_far_calibration",
                     "retrieve_scored_calibration"):
            if len(getattr(self, name)) != 2:
                raise ConfigError(name, f"needs 2 coefficients (c0, c1), not {len(getattr(self, name))}")
        if self.noisy_pair_snr < 0:
            raise ConfigError("noisy_pair_snr", f"must be 0 (off) or a level in dB, not {self.noisy_pair_snr}")
        if self.correction_edits < 0:
            raise ConfigError("correction_edits", f"must be 0 (off) or a word count, not {self.correction_edits}")
        if not 0.0 <= self.replace_floor < 1.0:
            raise ConfigError("replace_floor", f"must be in [0, 1), not {self.replace_floor}")
        if not 0.0 <= self.unheard_confidence < 1.0:
            raise ConfigError("unheard_confidence", f"must be in [0, 1), not {self.unheard_confidence}")
        if self.teacher_veto < 0:
            raise ConfigError("teacher_veto", f"must be 0 (off) or positive (nats), not {self.teacher_veto}")
        if not 0.0 <= self.replace_margin < 1.0:
            raise ConfigError("replace_margin", f"must be in [0, 1), not {self.replace_margin}")
        if self.nearest_only and self.nearest == 0:
            raise ConfigError("nearest_only", "needs nearest > 0 (a graph of k-nearest edges)")
        for name in ("consensus", "consensus_inputs"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be 0 or a positive count, not {getattr(self, name)}")
        if self.consensus and self.consensus_inputs < 2:
            raise ConfigError("consensus_inputs", f"must be at least 2 to combine, not {self.consensus_inputs}")
        if self.retrieve_hub_scale < 0:
            raise ConfigError("retrieve_hub_scale", f"must be 0 (off) or a count of distances, not "
                                                    f"{self.retrieve_hub_scale}")
        if self.rounds < 1:
            raise ConfigError("rounds", f"must be at least 1, not {self.rounds}")
        if not 0.0 < self.round_confidence <= 1.0:
            raise ConfigError("round_confidence", f"must be in (0, 1], not {self.round_confidence}")
        if self.max_borrowed < 0:
            raise ConfigError("max_borrowed", f"must be 0 (no cap) or a positive count, not {self.max_borrowed}")


def load_params(path: str | Path, base: PropagateConfig = PropagateConfig()) -> PropagateConfig:
    """Read a YAML of PropagateConfig fields over ``base``, bare or under ``propagate:`` (as ``choral tune``
    writes them); unknown keys, wrong types and out-of-range values are InputErrors naming the key."""
    path = Path(path)
    data = read_yaml_mapping(path)
    if "propagate" not in data:
        return from_mapping(PropagateConfig, data, path, "", base=base)
    for key in data:
        if key != "propagate":
            raise InputError(path, f"unknown key {key!r} (known at the top level: propagate)")
    return from_mapping(PropagateConfig, data["propagate"], path, "propagate", base=base)
