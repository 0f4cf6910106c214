import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: over ~3 s (reproductions, distributed, benchmarks, Hugging Face); "
        "`pytest -m 'not slow'` leaves them out, CI runs everything")


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    """Tests run single-threaded (CI has 2 cores) and from a fixed global seed."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _grad_mode_is_restored(request):
    """A test (or the code under it) must not leave autograd disabled for the next one."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail(f"{request.node.nodeid} left torch grad mode disabled")
