"""One ranking for every page: candidate pools in fixed tiers, each continuing the picks of the last.

A page ``[offset, offset + k)`` needs ``offset + k`` results. Tier ``t`` is trusted for the first
``base * 2**t`` of them and ranks a pool of ``depth(base * 2**t)`` candidates (the depth a query
for that many results searched before paging existed). Its picks are kept, and the next, deeper
tier continues after them (:meth:`~recommender.search.rerank.Selection.extend`), so the ranking
never depends on ``k`` or ``offset``: page 2 continues page 1 with no repeats and no gaps, and a
page past one pool gets a deeper pool instead of coming back short. The first tier is the pool a
query of up to ``base`` results has always ranked, so such queries keep their answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .candidates import Pool
from .rerank import Selection

#: Rows left over checked at a time for being copies of a result, to tell whether a next page exists.
_COPY_CHECK_ROWS = 64


@dataclass(frozen=True)
class Tiers:
    """``base``: results the first pool is trusted for; ``depth(n)``: pool depth for ``n`` results;
    ``admitted``: how many rows the search can return at all (a pool this deep holds all of them)."""

    base: int
    depth: Callable[[int], int]
    admitted: int


def rank(selection: Selection, pool_at: Callable[[int], Pool], need: int, tiers: Tiers) -> None:
    """Extend ``selection`` to ``need`` results (fewer only when every admitted row is used up)."""
    size = max(1, tiers.base)
    while len(selection.picked) < need:
        depth = tiers.depth(size)
        whole = depth >= tiers.admitted
        selection.extend(pool_at(depth), need if whole else min(size, need))
        if whole:
            return
        size *= 2


def anything_left(selection: Selection, admitted: np.ndarray) -> bool:
    """Whether some admitted row is neither picked, folded, capped out nor a copy of a result: a next page exists."""
    left = admitted & ~selection.taken()
    for codes, full in selection.capped():
        if full.any():
            left &= ~full[codes]
    rows = np.flatnonzero(left)
    for start in range(0, len(rows), _COPY_CHECK_ROWS):  # copies are rare: the first rows settle it
        if not selection.copies_a_result(rows[start:start + _COPY_CHECK_ROWS]).all():
            return True
    return False
