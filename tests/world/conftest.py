"""A tiny Othello-GPT trained once per session (seconds), shared by the world-model tests."""
import pytest
import torch

from uncover.representations.world.model import named_config, train_othello


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("othello") / "run"
        return train_othello(named_config("tiny"), out_dir=out)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
