"""Fixtures for the client tests: the URL and data directory of the demo server that
scripts/test-all starts (ASTER_TEST_URL, ASTER_TEST_DATA)."""
import os

import pytest


@pytest.fixture(scope="session")
def base_url():
    url = os.environ.get("ASTER_TEST_URL")
    if not url:
        pytest.fail("ASTER_TEST_URL is not set: run scripts/test-all")
    return url


@pytest.fixture(scope="session")
def tap_url(base_url):
    return base_url + "/tap"


@pytest.fixture(scope="session")
def data_dir():
    d = os.environ.get("ASTER_TEST_DATA")
    if not d:
        pytest.fail("ASTER_TEST_DATA is not set: run scripts/test-all")
    return d
