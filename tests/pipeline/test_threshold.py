import numpy as np
import pytest

from choral.pipeline.graph import evaluate_threshold, fit_f1_threshold, quantile_threshold


def brute_force_best_f1(distances: np.ndarray, positive: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(distances):
        linked = distances <= t
        tp = np.sum(linked & positive)
        fp = np.sum(linked & ~positive)
        fn = np.sum(~linked & positive)
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def test_separable_pairs_get_perfect_f1_and_a_threshold_between_classes() -> None:
    distances = np.array([0.1, 0.2, 0.3, 1.0, 1.2, 2.0])
    positive = np.array([True, True, True, False, False, False])
    fit = fit_f1_threshold(distances, positive, "annotated")
    assert fit.f1 == pytest.approx(1.0)
    assert 0.3 < fit.threshold < 1.0
    assert (fit.n_positive, fit.n_negative) == (3, 3)


@pytest.mark.parametrize("seed", range(5))
def test_f1_matches_brute_force_on_noisy_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    positive = rng.random(200) < 0.4
    distances = np.where(positive, rng.normal(1.0, 0.5, 200), rng.normal(2.0, 0.5, 200)).round(1)  # many ties
    fit = fit_f1_threshold(distances, positive, "annotated")
    assert fit.f1 == pytest.approx(brute_force_best_f1(distances, positive))
    again = evaluate_threshold(distances, positive, fit.threshold, "user")
    assert again.f1 == pytest.approx(fit.f1)


def test_infinite_distances_are_never_linked() -> None:
    fit = fit_f1_threshold(np.array([0.5, np.inf]), np.array([True, True]), "annotated")
    assert np.isfinite(fit.threshold)
    assert fit.recall == pytest.approx(0.5)


def test_needs_a_positive_pair() -> None:
    with pytest.raises(ValueError):
        fit_f1_threshold(np.array([1.0, 2.0]), np.array([False, False]), "annotated")


def test_quantile_rule() -> None:
    fit = quantile_threshold(np.arange(11, dtype=float), 0.2)
    assert fit.threshold == pytest.approx(2.0)
    assert fit.rule == "quantile"


def test_learn_threshold_few_annotated_positives_join_confident_pairs() -> None:
    from choral.pipeline.graph.threshold import learn_threshold

    # 3 annotated pairs (one positive at 1.0, negatives at 2.0 and 9.0); confident pairs agree up to 5.0
    distances = np.array([1.0, 2.0, 9.0, 3.0, 4.0, 5.0, 8.0, 10.0])
    annotated = np.array([True, True, True, False, False, False, False, False])
    positive = np.array([True, False, False, False, False, False, False, False])
    confident = np.array([False, False, False, True, True, True, True, True])
    agree = np.array([False, False, False, True, True, True, False, False])
    alone = learn_threshold(distances, annotated, positive, confident, agree, 0.2, min_positive=1)
    assert alone.rule == "annotated" and alone.threshold == 1.5
    joined = learn_threshold(distances, annotated, positive, confident, agree, 0.2)
    assert joined.rule == "annotated+confident-teacher"
    assert joined.n_annotated_pairs == 3 and joined.n_annotated_positive == 1
    assert joined.n_pairs == 8 and joined.n_positive == 4
    assert 5.0 < joined.threshold < 8.0
    teacher_only = learn_threshold(distances, np.zeros(8, bool), positive, confident, agree, 0.2)
    assert teacher_only.rule == "confident-teacher" and teacher_only.n_annotated_pairs == 0
    fallback = learn_threshold(distances, np.zeros(8, bool), positive, np.zeros(8, bool), agree, 0.5)
    assert fallback.rule == "quantile"


def test_a_fit_on_few_positive_pairs_is_shrunk_toward_the_split_of_the_distances() -> None:
    from choral.pipeline.graph.threshold import bimodal_split, learn_threshold

    # one annotated positive pair, very close (0.5); the group pairs part into ~1-2 (same sentence) and ~10-20
    distances = np.array([0.5, 1.0, 1.5, 2.0, 10.0, 12.0, 15.0, 20.0])
    annotated = np.array([True] + [False] * 7)
    positive = np.array([True] + [False] * 7)
    nothing = np.zeros(8, dtype=bool)
    as_learned = learn_threshold(distances, annotated, positive, nothing, nothing, 0.2)
    assert as_learned.rule == "annotated" and as_learned.threshold == 0.5 and as_learned.fitted is None
    shrunk = learn_threshold(distances, annotated, positive, nothing, nothing, 0.2, prior="split")
    split = bimodal_split(distances, min_separation=0.0, min_pairs=2)
    assert split is not None and 2.0 < split < 10.0
    assert shrunk.fitted == 0.5 and shrunk.split == split
    assert shrunk.threshold == pytest.approx(0.1 * 0.5 + 0.9 * split)   # 1 of min_positive 10 positive pairs
    enough = learn_threshold(distances, annotated, positive, nothing, nothing, 0.2, min_positive=1, prior="split")
    assert enough.threshold == 0.5 and enough.fitted is None                # enough positive pairs: as learned
    far = np.array([True] + [False] * 4 + [True] + [False] * 2)            # positive pairs at 0.5 and 12: F1 at 12
    above = learn_threshold(distances, annotated | far, positive | far, nothing, nothing, 0.2, prior="split")
    assert above.threshold > split and above.fitted is None                 # above the split: kept as learned


def test_an_unknown_threshold_prior_names_the_key() -> None:
    from choral.pipeline.errors import ConfigError
    from choral.pipeline.graph import GraphConfig

    with pytest.raises(ConfigError, match="threshold_prior"):
        GraphConfig(threshold_prior="median")  # type: ignore[arg-type]
