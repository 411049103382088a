"""Fixtures shared by the training tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    # 2 shared CPU cores: a second intra-op thread that is not scheduled stalls every
    # parallel region (seconds per iteration instead of tens of milliseconds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh model registry home for the test."""
    monkeypatch.setenv("EMPANADA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
