import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Point the project's cache and figure folders at a temporary folder."""
    monkeypatch.setenv("TRUST_AUDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TRUST_AUDIT_FIGURES", str(tmp_path / "figures"))
    return tmp_path
