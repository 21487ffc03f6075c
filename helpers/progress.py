"""Progress bars: live in JupyterLab and terminals, off in unattended runs.

Every helper that shows progress uses :func:`tqdm` from here. It is ``tqdm.auto`` (a live
widget in Jupyter, text in a terminal) unless the environment variable ``TQDM_DISABLE`` is set
to a true value: ``make report`` and ``make test`` set it, so notebooks executed by papermill or
nbval never store a half-drawn bar (``0%|...``) or a widget placeholder in their outputs.
Set it yourself when you run papermill by hand.
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm as _auto_tqdm


def progress_disabled() -> bool:
    """True when ``$TQDM_DISABLE`` asks for no progress bars (anything but '', 0, false, no)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def tqdm(*args, disable: bool = False, **kwargs):
    """``tqdm.auto.tqdm`` that is also off when :func:`progress_disabled`."""
    return _auto_tqdm(*args, disable=disable or progress_disabled(), **kwargs)


def trange(n: int, **kwargs):
    """``tqdm(range(n), **kwargs)``."""
    return tqdm(range(int(n)), **kwargs)
