"""Minimisation attacks by name: each finds, per image, the smallest flipping L-inf epsilon.

Every entry of :data:`MINIMIZERS` is one function
``f(model, x, y, *, mask=None, batch_size=64, return_adversarial=False, **kw)`` returning the
table of :func:`helpers.attacks.results.result_frame` (and the adversarial images with
``return_adversarial``). A new minimum-norm attack (DeepFool, say) is one such function and
one entry here; :func:`helpers.attacks.fragility_by_region` and :func:`minimizer` find it.
"""

from __future__ import annotations

from .minimum_norm import minimum_norm_epsilon
from .search import minimal_epsilon


def along_fgsm(model, x, y, **kw):
    """:func:`minimal_epsilon` along the FGSM direction (one gradient, then forwards only)."""
    return minimal_epsilon(model, x, y, direction="fgsm", **kw)


def along_pgd(model, x, y, **kw):
    """:func:`minimal_epsilon` over the radius of an L-inf PGD attack (``pgd_kw``)."""
    return minimal_epsilon(model, x, y, direction="pgd", **kw)


MINIMIZERS = {"fgsm": along_fgsm, "pgd": along_pgd, "fmn": minimum_norm_epsilon}


def minimizer(name: str):
    """The minimisation function registered as ``name``; an unknown name is refused."""
    try:
        return MINIMIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown minimisation attack {name!r}; expected one of {', '.join(MINIMIZERS)}"
        ) from None
