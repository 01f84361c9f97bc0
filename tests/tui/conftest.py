import pytest


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh directory: relative session paths render the same in every test run."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
