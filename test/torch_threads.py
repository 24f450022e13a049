"""A module fixture for tests of small tensors: torch on one thread for the module, restored
after. On the shared 2-core machine under load a second thread only added contention: the batch
executor's calibration took 58 s with two threads and 7 s with one, the preprocessing checks
100 s and 13 s. Use: `from torch_threads import one_torch_thread  # noqa: F401`."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
