"""Adversarial attacks in pixel space, the smallest flipping epsilon per image, and regions.

Every image is float in [0, 1], NCHW; the model normalises inside (its first layer), so the
attacks clip to [0, 1] honestly. One signature per family, hyperparameters keyword-only.

=====================  ======================================================================
module                 what it holds
=====================  ======================================================================
``fixed_budget``       attacks with a fixed budget: :func:`fgsm`, :func:`pgd`,
                       :func:`fgsm_direction`, :func:`iterative_targeted` (the targeted
                       iterative attack stopped at its target, behind
                       :func:`helpers.synthesis.fool`); :data:`ATTACKS` by name and
                       :func:`epsilon_sweep` (robust accuracy per epsilon) over it
``search``             :func:`minimal_epsilon`: the smallest flipping L-inf epsilon along the
                       FGSM direction or a PGD radius, a coarse grid then a root search
``minimum_norm``       :func:`minimum_norm_epsilon` (foolbox's FMN + fp32 line searches) and
                       :func:`fmn_reference`
``results``            :func:`result_frame`: the one table every minimisation returns
``minimization``       :data:`MINIMIZERS`: the minimisation attacks by name ("fgsm", "pgd",
                       "fmn"), one function each; :func:`minimizer` looks one up
``regions``            masks (:func:`top_fraction_mask`, :func:`complement`,
                       :func:`equal_area`), :func:`fragility_by_region`, and for a fine-tuned
                       run :func:`region_masks` and :func:`fragility` (cached)
``tables``             :func:`per_class_fragility`, :func:`robust_accuracy_from_epsilons`,
                       :func:`whole_image_table`, :func:`region_table` (09's tables)
=====================  ======================================================================

::

    fgsm(model, x, y, *, eps, targeted=False, mask=None) -> x_adv
    pgd(model, x, y, *, eps, norm="linf", steps=10, step_size=None, random_start=True,
        seed=None, targeted=False, mask=None, loss="ce") -> x_adv

``mask`` ([N, 1, H, W], [N, H, W] or [H, W]; bool or float in {0, 1}) confines the perturbation:
pixels outside it never change. Targeted attacks read ``y`` as the target class.
"""

from ..plumbing import eval_mode  # importable from here as before
from .fixed_budget import (
    ATTACKS,
    FoolingResult,
    epsilon_sweep,
    fgsm,
    fgsm_direction,
    iterative_targeted,
    pgd,
)
from .minimization import MINIMIZERS, minimizer
from .minimum_norm import fmn_reference, minimum_norm_epsilon
from .regions import (
    SEARCH_VERSION,
    complement,
    equal_area,
    fragility,
    fragility_by_region,
    region_masks,
    top_fraction_mask,
)
from .results import RESULT_COLUMNS, result_frame
from .search import epsilon_grid, minimal_epsilon
from .tables import (
    per_class_fragility,
    region_table,
    robust_accuracy_from_epsilons,
    whole_image_table,
)

__all__ = [
    "ATTACKS",
    "MINIMIZERS",
    "RESULT_COLUMNS",
    "SEARCH_VERSION",
    "FoolingResult",
    "eval_mode",
    "fgsm",
    "pgd",
    "fgsm_direction",
    "iterative_targeted",
    "epsilon_sweep",
    "epsilon_grid",
    "minimal_epsilon",
    "minimum_norm_epsilon",
    "minimizer",
    "fmn_reference",
    "result_frame",
    "robust_accuracy_from_epsilons",
    "top_fraction_mask",
    "complement",
    "equal_area",
    "fragility_by_region",
    "region_masks",
    "fragility",
    "per_class_fragility",
    "whole_image_table",
    "region_table",
]
