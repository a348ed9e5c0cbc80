"""hklflow.steps._run.run_step: a step runs its BLAS/OpenMP libraries and numba's parallel
loops on its --threads (1 without the option), not on every core, and puts the settings
back after."""
from __future__ import annotations

import numba
import pytest
import scipy.sparse.linalg  # noqa: F401 - scipy's OpenBLAS loaded, as in delta_pdf
from threadpoolctl import threadpool_info

from hklflow.steps._run import StepParser, run_step


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def _threads() -> tuple[list[int], int]:
    return _blas_threads(), numba.get_num_threads()


def _probe(with_threads: bool, seen: list):
    parser = StepParser("probe", "records the BLAS threads it runs on")
    if with_threads:
        parser.add_threads()
    return parser, lambda args, log: seen.append(_threads())


@pytest.mark.parametrize("with_threads, argv", [(True, []), (True, ["--threads", "1"]),
                                                (False, [])])
def test_step_runs_blas_on_one_thread_and_puts_the_setting_back(with_threads, argv):
    before = _threads()
    if not before[0] or max(before[0]) < 2 or before[1] < 2:
        pytest.skip("BLAS or numba run on one thread here anyway: nothing to tell apart")
    seen = []
    assert run_step(*_probe(with_threads, seen), argv) == 0
    assert seen == [([1] * len(before[0]), 1)]
    assert _threads() == before


def test_step_given_two_threads_runs_blas_and_numba_on_two():
    before = _threads()
    if not before[0] or max(before[0]) < 2 or before[1] < 2:
        pytest.skip("fewer than 2 threads possible here")
    seen = []
    assert run_step(*_probe(True, seen), ["--threads", "2"]) == 0
    assert seen == [([min(2, n) for n in before[0]], 2)]
