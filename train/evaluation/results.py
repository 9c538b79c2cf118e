"""Everything one evaluation run measured, typed: what :func:`~train.evaluation.run.evaluate` returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .alpha_sweep import AlphaSweepResult
from .base import EvaluationResult, to_plain
from .baseline import BaselineResult
from .dedupe import DedupeResult
from .diversity import DiversityResult
from .never_seen import NeverSeenResult
from .rankings import RankingResult
from .reupload import ReuploadResult
from .sessions import SessionResult
from .title_search import TitleSearchResult


@dataclass(frozen=True)
class BundleInfo:
    """Which bundle was evaluated, when, on what code, and with which relevance label."""

    bundle: str
    created: str
    code_commit: str | None
    label: str
    queries: int  # catalog items, each asked as a query
    labels: int  # distinct label values
    ks: list[int]
    image_encoder: dict  # architecture, dimension, parameters
    title_head: dict | None  # the manifest's title_head section
    text_model: str | None
    indexes: dict[str, str]  # modality -> index type


@dataclass
class EvaluationReport:
    """The evaluators' typed results; ``None`` for those not run. ``timings``: seconds per evaluator."""

    info: BundleInfo
    sweep: AlphaSweepResult
    rankings: RankingResult
    reupload: ReuploadResult
    never_seen: NeverSeenResult | None = None
    baseline: BaselineResult | None = None
    # The recommendation controls (recommend's diversity, dedupe, items, title-only image mode):
    diversity: DiversityResult | None = None
    dedupe: DedupeResult | None = None
    sessions: SessionResult | None = None
    title_search: TitleSearchResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # written into the report folder

    @property
    def alpha(self) -> float:
        """The tuned default hybrid weight (weighted fusion)."""
        return self.sweep.alpha

    def results(self) -> dict[str, EvaluationResult]:
        """Field name -> result of every evaluator that ran, in report order."""
        return {item.name: value for item in dataclasses.fields(self)
                if isinstance(value := getattr(self, item.name), EvaluationResult)}

    def to_dict(self) -> dict:
        """JSON-ready, as ``metrics.json`` holds it."""
        return {item.name: to_plain(getattr(self, item.name)) for item in dataclasses.fields(self)}
