"""Fixtures and helpers shared by several test modules."""

import os

import pytest


def requires(available: bool, reason: str) -> None:
    """Skip the calling test or fixture with `reason` when its dependency is not `available`; under
    CI (``CI=true``, as ``.ci/run`` and most CI services set it) fail instead, since the README says
    CI runs these tests (real SLURM, Fashion-MNIST) and a skip would let it pass without them."""
    __tracebackhide__ = True  # report the caller's line, not this one
    if available:
        return
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(f"CI=true, yet {reason}: CI must run this test, not skip it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads and lose a lot to contention on shared cores."""
    import torch  # here, so that the helpers above load without torch (tests/test_ci_requirements.py)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
