import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    """Tests run single-threaded (CI has 2 cores) and from a fixed global seed."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
