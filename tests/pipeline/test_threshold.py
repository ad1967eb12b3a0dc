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
