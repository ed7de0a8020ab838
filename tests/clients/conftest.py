"""Fixtures for the client tests: the URL and data directory of the demo server that
scripts/test-all starts (ASTER_TEST_URL, ASTER_TEST_DATA)."""
import os

import pytest


def _env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/test-all")
    return value


@pytest.fixture(scope="session")
def base_url():
    return _env("ASTER_TEST_URL")


@pytest.fixture(scope="session")
def tap_url(base_url):
    return base_url + "/tap"


@pytest.fixture(scope="session")
def data_dir():
    return _env("ASTER_TEST_DATA")
