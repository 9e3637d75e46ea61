"""The partial order of POP (Li et al., CVPR 2019) on NAS-Lung architectures.

``alpha <= beta`` when every stage of ``alpha`` can be made from the same stage of ``beta`` by deleting blocks
and narrowing channels: there is an order-preserving injection ``j`` of alpha's blocks into beta's blocks with
``alpha[i] <= beta[j(i)]``. Stems must be equal (the stem is fixed in the search space).

Two equivalent checks:

- :func:`stage_embeds` matches greedily: each block of alpha takes the earliest unused block of beta that is
  wide enough. This is exact for any sequences (an exchange argument: any embedding can be shifted onto the
  greedy one block by block), and the tests check it against all injections.
- :func:`below_mask` exploits that widths are sorted within a stage (the search space is non-decreasing): then
  the best blocks of beta to keep are its *last* ``len(alpha)`` blocks, so with both stages right-aligned
  the order is an element-wise ``<=`` (padding 0 fails against any real block, which encodes
  ``len(alpha) <= len(beta)``). One vectorised comparison answers "which alphas are <= beta" over 42k specs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from naslung.models.spec import ArchSpec


def stage_embeds(alpha: Sequence[int], beta: Sequence[int]) -> bool:
    """True when ``alpha`` is obtained from ``beta`` by deleting entries and lowering values."""
    j = 0
    for a in alpha:
        while j < len(beta) and beta[j] < a:
            j += 1
        if j == len(beta):
            return False
        j += 1
    return True


def precedes(alpha: ArchSpec, beta: ArchSpec) -> bool:
    """``alpha <= beta`` in POP's partial order (narrower and/or shallower in every stage)."""
    if alpha.stem != beta.stem:
        return False
    return all(stage_embeds(a, b) for a, b in zip(alpha.stages, beta.stages, strict=True))


def below_mask(keys: np.ndarray, beta: int | np.ndarray) -> np.ndarray:
    """Boolean ``(S,)`` mask of the rows ``alpha`` of ``keys`` with ``alpha <= beta``.

    Args:
        keys: ``(S, F)`` right-aligned width ranks, from :meth:`SearchSpace.order_keys`.
        beta: a row index into ``keys`` or a key row of shape ``(F,)``.
    """
    row = keys[int(beta)] if np.ndim(beta) == 0 else np.asarray(beta)
    return np.all(keys <= row, axis=1)


def above_mask(keys: np.ndarray, alpha: int | np.ndarray) -> np.ndarray:
    """Boolean ``(S,)`` mask of the rows ``beta`` with ``alpha <= beta``.

    Padding is 0 and block ranks are >= 1, so every block of ``alpha`` must land on a real block of beta.
    """
    row = keys[int(alpha)] if np.ndim(alpha) == 0 else np.asarray(alpha)
    return np.all(keys >= row, axis=1)
