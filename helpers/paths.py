"""Where the project keeps generated data, caches and figures."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Folder for generated data and trained models (``$TRUST_AUDIT_CACHE`` or ``.cache/``)."""
    path = Path(os.environ.get("TRUST_AUDIT_CACHE", PROJECT_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir() -> Path:
    """Folder that ``plots.save_figure`` writes to (``$TRUST_AUDIT_FIGURES`` or ``figures/``)."""
    path = Path(os.environ.get("TRUST_AUDIT_FIGURES", PROJECT_ROOT / "figures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def params_key(params: dict) -> str:
    """A short stable hash of a JSON-able parameter dict, used to name cache folders."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def reports_dir() -> Path:
    """Folder for exported reports (the trust report's HTML and CSV): ``$TRUST_AUDIT_REPORTS``
    or ``reports/``."""
    path = Path(os.environ.get("TRUST_AUDIT_REPORTS", PROJECT_ROOT / "reports"))
    path.mkdir(parents=True, exist_ok=True)
    return path
