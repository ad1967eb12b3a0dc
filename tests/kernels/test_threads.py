"""One thread budget per process: the flag/config value, else OMP_NUM_THREADS, else the CPU affinity."""

import os

import pytest
import torch

from choral.kernels import dtw, threads


@pytest.fixture(autouse=True)
def restore():
    before = torch.get_num_threads()
    yield
    threads.set_budget(None)
    torch.set_num_threads(before)


def test_the_budget_follows_omp_num_threads_then_the_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    threads.set_budget(None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.budget() == 3
    for ignored in ("", "0", "-2", "two"):
        monkeypatch.setenv("OMP_NUM_THREADS", ignored)
        assert threads.budget() == threads.available_cores() == len(os.sched_getaffinity(0))


def test_a_chosen_budget_wins_and_sizes_torch_and_dtw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.set_budget(1) == 1 and threads.chosen() == 1
    assert torch.get_num_threads() == 1
    assert dtw._n_threads(None) == 1 and dtw._n_threads(2) == 2
    assert dtw._n_threads(-1) == threads.available_cores()
    threads.set_budget(None)
    assert threads.chosen() is None and threads.budget() == 3


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_a_bad_budget_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        threads.set_budget(bad)  # type: ignore[arg-type]


def test_the_command_line_sets_the_budget(tmp_path) -> None:
    from typer.testing import CliRunner

    from choral.cli.app import app

    result = CliRunner().invoke(app, ["--threads", "1", "synth", str(tmp_path), "--cuts", "20"])
    assert result.exit_code == 0, result.output
    assert threads.chosen() == 1 and torch.get_num_threads() == 1
    bad = CliRunner().invoke(app, ["--threads", "0", "synth", str(tmp_path / "x")])
    assert bad.exit_code == 2
