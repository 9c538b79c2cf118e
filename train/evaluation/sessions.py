"""Sessions: several catalog items asked at once (``recommend(items=[...])``), by centroid or by rank fusion.

Sessions are drawn at random from the live catalog, seeded: a label (e.g. channel) is picked in
proportion to its size among labels with more items than the session, then

- ``one label``: every session item from that label;
- ``one label + noise``: all but one from that label, one from another label (sizes of 3 and more).

Relevant = an item of the session's majority label that is not in the session (session items are
never returned). Sessions are asked as served (dedupe on, the default). Each session is asked in every mode with ``SearchConfig.session_fusion`` set to
``centroid`` (one search from the mean of the items' vectors) and to ``rrf`` (reciprocal rank
fusion of one list per item); a session of one item is the item asked alone, the same for both.
The fusion with the better mean precision over sessions of more than one item is recommended.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from recommender.engine import Recommender

from .base import EvaluationContext, EvaluationError, EvaluationResult

SIZES = (1, 3, 5)
SESSION_FUSIONS = ("centroid", "rrf")
KINDS = ("one label", "one label + noise")
MODES = ("image", "text", "hybrid")


@dataclass(frozen=True)
class Session:
    rows: list[int]
    label: int  # the majority label: what is relevant
    kind: str


def draw_sessions(labels: np.ndarray, rows: np.ndarray, size: int, count: int, kind: str,
                  rng: np.random.Generator) -> list[Session]:
    """``count`` sessions of ``size`` live ``rows`` (see the module docstring for ``kind``)."""
    codes, sizes = np.unique(labels[rows][labels[rows] >= 0], return_counts=True)
    eligible = sizes > size  # something of the label is left to find
    if not eligible.any():
        raise EvaluationError(f"No {kind!r} session of {size} items: no label has more than {size} items.")
    codes, weights = codes[eligible], sizes[eligible] / sizes[eligible].sum()
    sessions = []
    for _ in range(count):
        code = int(rng.choice(codes, p=weights))
        members = rows[labels[rows] == code]
        if kind == "one label" or size < 3:
            chosen = rng.choice(members, size=size, replace=False).tolist()
        else:
            others = rows[labels[rows] != code]
            chosen = rng.choice(members, size=size - 1, replace=False).tolist() + [int(rng.choice(others))]
            rng.shuffle(chosen)
        sessions.append(Session([int(row) for row in chosen], code, kind))
    return sessions


def session_precision(recommender: Recommender, sessions: list[Session], labels: np.ndarray, mode: str,
                      k: int) -> tuple[float, float]:
    """Mean P@k of the sessions asked in ``mode`` and the best any ranking could reach."""
    ids = recommender.catalog.item_ids
    live = recommender.catalog.removed.live
    precision, ceiling = [], []
    for session in sessions:
        served = recommender.recommend(items=[ids[row] for row in session.rows], mode=mode, k=k)
        precision.append(np.count_nonzero(labels[served.rows] == session.label) / k)
        findable = np.count_nonzero((labels == session.label) & live) - sum(
            labels[row] == session.label for row in session.rows)
        ceiling.append(min(findable, k) / k)
    return float(np.mean(precision)), float(np.mean(ceiling))


def with_session_fusion(recommender: Recommender, fusion: str) -> Recommender:
    """The same loaded bundle (shared parts) answering sessions by ``fusion``."""
    twin = copy.copy(recommender)
    twin.search = recommender.search.replace(session_fusion=fusion)
    return twin


@dataclass(frozen=True)
class SessionScore:
    size: int
    kind: str
    mode: str
    precision: dict[str, float]  # session fusion -> P@k
    ceiling: float


@dataclass(frozen=True)
class SessionResult(EvaluationResult):
    """P@k per session size, kind and mode for each session fusion, and the recommended fusion."""

    metric: str
    sessions: int  # per size and kind
    label: str
    scores: list[SessionScore]
    recommended: str  # best mean P@k over sessions of more than one item
    means: dict[str, float]  # session fusion -> that mean

    @property
    def primary_metric(self) -> str:
        return f"session {self.metric} ({self.recommended}, sessions of 2+ items, every mode and kind)"

    @property
    def primary(self) -> float:
        return self.means[self.recommended]


@dataclass(frozen=True)
class SessionEvaluator:
    """Ask ``sessions`` seeded sessions per size and kind in every mode, with each session fusion."""

    sessions: int = 150
    sizes: tuple[int, ...] = SIZES
    kinds: tuple[str, ...] = KINDS
    show_progress_bar: bool = False
    name: ClassVar[str] = "sessions"

    def __call__(self, context: EvaluationContext) -> SessionResult:
        recommender, labels, k = context.recommender, context.labels, context.top
        twins = {fusion: with_session_fusion(recommender, fusion) for fusion in SESSION_FUSIONS}
        plan = [(size, kind) for size in sorted(self.sizes) for kind in self.kinds
                if kind == "one label" or size >= 3]
        scores = []
        for size, kind in tqdm(plan, desc="Sessions", disable=not self.show_progress_bar):
            sessions = draw_sessions(labels, context.rows, size, self.sessions, kind, context.rng)
            for mode in MODES:
                measured = {fusion: session_precision(twin, sessions, labels, mode, k) for fusion, twin in twins.items()}
                scores.append(SessionScore(size, kind, mode, {fusion: p for fusion, (p, _) in measured.items()},
                                           measured["centroid"][1]))
        several = [score for score in scores if score.size > 1] or scores
        means = {fusion: float(np.mean([score.precision[fusion] for score in several])) for fusion in SESSION_FUSIONS}
        recommended = max(SESSION_FUSIONS, key=lambda fusion: (round(means[fusion], 9), fusion == "centroid"))
        return SessionResult(context.metric, self.sessions, context.label, scores, recommended, means)
