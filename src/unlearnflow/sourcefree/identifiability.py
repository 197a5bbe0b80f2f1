"""Whether the source-free fit can identify the retain Hessian at all (issue 23).

Eq. (3) fits a symmetric p x p block X to m loss differences ``1/2 u_i^T X u_i``: p(p+1)/2 unknowns
(:func:`perturbations_needed`). With fewer perturbations the least-squares problem has a whole
affine space of solutions, the fit returns one of them, and the Newton step built on it is
arbitrary: on 28x28 images pooled 2x2 (p = 196, 19,306 unknowns) the default m = 500 gives test
accuracy 0.35 while nothing in the run looks wrong. The block is p = d, the feature width, for
the squared and the one-vs-rest logistic losses, p = K d for the multinomial loss, whose one
block couples the K classes (:mod:`unlearnflow.sourcefree.hessian`), and p = P, the linearised
parameters, for a mixed-linear model.

:func:`check_configurations` is the source-free method's input check, run before any fit: a
method none of whose configurations can identify its block is refused in one line that gives the
counts and what fixes them; one whose grid only partly can (Table 2's sweep over m) runs, and each
configuration that cannot gets a warning line here and ``hessian_identified`` 0 in the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from unlearnflow.errors import UserError

#: losses whose Hessian is one K d x K d block (the others: one d x d block per row of W)
FULL_BLOCK_LOSSES = ("multinomial",)


def block_size(loss: str, parameter_shape: tuple[int, int]) -> int:
    """p, the side of one Hessian block of parameters of `parameter_shape` (rows, d): d, or rows x d
    for a loss of :data:`FULL_BLOCK_LOSSES` (K d for the multinomial loss; P for a mixed-linear
    model's (1, P) parameters)."""
    rows, width = parameter_shape
    return rows * width if loss in FULL_BLOCK_LOSSES else width


def perturbations_needed(block: int) -> int:
    """p(p+1)/2: the unknowns of a symmetric p x p block, the fewest perturbations that identify it."""
    return block * (block + 1) // 2


def largest_identified_block(m: int) -> int:
    """The largest p with p(p+1)/2 <= m."""
    return (math.isqrt(8 * m + 1) - 1) // 2


def check_configurations(configurations: Sequence[tuple[str, Mapping, tuple[int, int]]], width: int) -> list[str]:
    """One warning line per configuration (label, hyper-parameters with ``m`` and ``loss``, the
    shape of its parameters) whose m cannot identify its block; a UserError, with the counts and
    the fix, when none can. `width` is the feature rows' width."""
    short = []
    for label, hp, shape in configurations:
        block = block_size(hp["loss"], shape)
        if hp["m"] < perturbations_needed(block):
            short.append((label, hp["m"], block))
    if not short:
        return []
    lines = [f"newton_source_free [{label}]: m = {m} perturbations cannot identify the {block} x {block} Hessian "
             f"block (it needs p(p+1)/2 = {perturbations_needed(block):,}); the fit and its Newton step are arbitrary"
             for label, m, block in short]
    if len(short) == len(configurations):
        label, m, block = max(short, key=lambda entry: entry[1])
        fix = (f", or reduce the features to at most {largest_identified_block(m)} (a larger features.pool)"
               if block == width else "")
        raise UserError(f"newton_source_free: m = {m} perturbations cannot identify the {block} x {block} Hessian "
                        f"block of {width} features (it needs p(p+1)/2 = {perturbations_needed(block):,}) in any "
                        f"configuration; set hyperparameters.m >= {perturbations_needed(block)}{fix}")
    return lines
