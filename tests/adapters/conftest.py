import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The models here are tiny: thread start-up and contention cost more than they save.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
