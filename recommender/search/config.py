"""How a bundle is searched: one small object instead of module constants.

``train build`` records a :class:`SearchConfig` in the manifest's ``search`` section,
``train evaluate`` writes the tuned ``alpha`` back there, and :meth:`Recommender.load
<recommender.Recommender.load>` reads it (its ``search=`` argument overrides fields for one
process). ``alpha`` and ``fusion`` can also be overridden per call of ``recommend``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass

FUSION_METHODS = ("weighted", "rrf")
#: How a session of several items becomes one query: see :mod:`recommender.search.sessions`.
SESSION_FUSIONS = ("centroid", "rrf")


@dataclass(frozen=True)
class SearchConfig:
    """Search settings of a bundle.

    - ``alpha``, ``fusion``: hybrid mode's default text weight and fusion method (``"weighted"`` min-max
      scores, or ``"rrf"``, reciprocal rank fusion with constant ``rrf_k``).
    - ``candidate_factor``, ``min_candidates``: hybrid mode re-scores the top
      ``max(candidate_factor * k, min_candidates)`` items of each index exactly, on both modalities.
    - ``hnsw_ef_search``: HNSW's search breadth; it must stay above the hybrid candidate depth.
    - ``ivf_nprobe``: inverted lists an IVF index visits; ``None`` visits ``max(8, nlist // 32)``. A large
      catalog's build tunes it (the smallest value reaching recall@10 >= 0.95 against exact search).
    - ``refine_k_factor``: candidates per result that a re-ranking index (``IndexRefine``) re-scores exactly;
      ``None`` keeps the index's own.
    - ``dedupe_threshold``: a result whose thumbnail features have at least this cosine with a
      higher-ranked result's is folded into it (``recommend(dedupe=True)``, the default). The default
      stays above the dev catalog's calibrated 0.995 because thumbnails made from one template can be
      that alike; ``train evaluate`` calibrates it on the bundle's own catalog and records it.
    - ``session_fusion``: how a session's items become one ranking: ``"centroid"`` searches from
      their mean vector, ``"rrf"`` fuses each item's ranked list; rrf is the measured default (an
      off-topic item in a session costs it less; docs/results.md), ``train evaluate`` records its choice.
    """

    alpha: float = 0.65
    fusion: str = "weighted"
    rrf_k: int = 60
    candidate_factor: int = 10
    min_candidates: int = 100
    hnsw_ef_search: int = 128
    ivf_nprobe: int | None = None
    refine_k_factor: int | None = None
    dedupe_threshold: float = 0.997
    session_fusion: str = "rrf"

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            problems.append(f"alpha must be a number from 0 to 1, got {self.alpha!r}")
        if self.fusion not in FUSION_METHODS:
            problems.append(f"fusion must be one of {', '.join(FUSION_METHODS)}, got {self.fusion!r}")
        for name in ("rrf_k", "candidate_factor", "min_candidates", "hnsw_ef_search"):
            if not _positive_int(getattr(self, name)):
                problems.append(f"{name} must be a whole number of at least 1, got {getattr(self, name)!r}")
        for name in ("ivf_nprobe", "refine_k_factor"):
            if getattr(self, name) is not None and not _positive_int(getattr(self, name)):
                problems.append(f"{name} must be a whole number of at least 1 or null, got {getattr(self, name)!r}")
        threshold = self.dedupe_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
            problems.append(f"dedupe_threshold must be a number above 0 and at most 1, got {threshold!r}")
        if self.session_fusion not in SESSION_FUSIONS:
            problems.append(f"session_fusion must be one of {', '.join(SESSION_FUSIONS)}, got {self.session_fusion!r}")
        if problems:
            raise ValueError("; ".join(problems) + ".")

    def candidate_depth(self, k: int, count: int) -> int:
        """How deep hybrid mode searches each index for ``k`` results in a catalog of ``count`` items
        (one more than it keeps, since a catalog item asked by id finds itself first)."""
        return min(count, max(self.candidate_factor * k, self.min_candidates) + 1)

    def replace(self, **changes: object) -> "SearchConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "SearchConfig":
        """Read a manifest's ``search`` section; unknown keys and bad values raise ``ValueError``."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown search setting(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(sorted(known))}.")
        return cls(**values)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
