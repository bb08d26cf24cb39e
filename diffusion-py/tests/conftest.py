"""Fixtures shared by the tests."""

import os

# Before anything imports huggingface_hub (it reads this once): tests never download.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from tests.helpers import RunnerProcess  # noqa: E402


@pytest.fixture
def start_runner():
    """Start runners for one test; each is closed at teardown."""
    started: list[RunnerProcess] = []

    def start(*extra_args: str) -> RunnerProcess:
        runner = RunnerProcess(*extra_args)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.close()
