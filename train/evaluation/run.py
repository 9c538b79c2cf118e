"""The evaluation run behind ``python -m train evaluate``: every evaluator in turn, then the report and manifest."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from .alpha_sweep import ALPHAS, AlphaSweepEvaluator
from .base import EvaluationContext, EvaluationResult, Evaluator
from .baseline import BaselineEvaluator
from .dedupe import DedupeEvaluator
from .diversity import DiversityEvaluator
from .manifest import store_in_manifest
from .never_seen import DEFAULT_FRACTION, NeverSeenEvaluator
from .rankings import RankingEvaluator
from .report import write_report
from .results import BundleInfo, EvaluationReport
from .reupload import ReuploadEvaluator
from .sessions import SessionEvaluator
from .title_search import TitleSearchEvaluator

REPORT_DIR = "evaluation"
DEFAULT_KS = (5, 10)

Result = TypeVar("Result", bound=EvaluationResult)


def evaluate(bundle: str | Path, *, text_model: str | None = None, label: str = "channel",
             baseline_bundle: str | Path | None = None, output_dir: str | Path | None = None,
             ks: tuple[int, ...] = DEFAULT_KS, alphas: tuple[float, ...] = ALPHAS, reupload_items: int = 250,
             verify_queries: int = 30, folds: int = 5, seed: int = 0, set_alpha: bool = True, examples: int = 3,
             holdout: bool = True, holdout_fraction: float = DEFAULT_FRACTION, holdout_epochs: int | None = None,
             controls: bool = True, control_queries: int = 400, sessions: int = 100,
             show_progress_bar: bool = True) -> EvaluationReport:
    """Evaluate a bundle (and optionally a baseline bundle of the same catalog); write the report.

    Writes ``report.md``, its plots and ``metrics.json`` (everything measured) into ``output_dir``
    (default ``<bundle>/evaluation``); with ``set_alpha`` the best weighted-fusion alpha and a summary
    go into the bundle's manifest. ``holdout``: also ask ``holdout_fraction`` of the catalog as
    never-seen uploads against a bundle built without them (``holdout_epochs`` overrides the recorded
    training epochs; building costs about what building this bundle did, for that share of the catalog).
    ``controls``: also measure the recommendation controls: a diversity sweep and title-only image queries
    (``control_queries`` sampled items each), dedupe calibration (``reupload_items`` re-uploads per variant) and
    sessions (``sessions`` per size and kind).
    """
    started = time.perf_counter()
    bundle = Path(bundle)
    output_dir = Path(output_dir) if output_dir else bundle / REPORT_DIR
    output_dir.mkdir(parents=True, exist_ok=True)
    never_seen = (NeverSeenEvaluator(holdout_fraction, holdout_epochs, show_progress_bar=show_progress_bar)
                  if holdout else None)  # checks its settings before the long work starts
    context = EvaluationContext.load(bundle, text_model=text_model, label=label, ks=ks, seed=seed)
    timings: dict[str, float] = {}

    # Order matters: later evaluators use earlier results, and samplers draw from context.rng in turn.
    sweep = _timed(AlphaSweepEvaluator(alphas, folds=folds), context, timings)
    rankings = _timed(RankingEvaluator(sweep.alpha, sweep.alpha_rrf, verify_queries), context, timings)
    reupload = _timed(ReuploadEvaluator(reupload_items), context, timings)
    baseline = (_timed(BaselineEvaluator(Path(baseline_bundle), reupload.rows, alphas), context, timings)
                if baseline_bundle is not None else None)
    held_out = (_timed(dataclasses.replace(never_seen, alpha=sweep.alpha), context, timings)
                if never_seen is not None else None)

    measured = {}
    if controls:
        measured = {
            "diversity": _timed(DiversityEvaluator(control_queries, show_progress_bar=show_progress_bar), context,
                                timings),
            "dedupe": _timed(DedupeEvaluator(reupload_items), context, timings),
            "sessions": _timed(SessionEvaluator(sessions, show_progress_bar=show_progress_bar), context, timings),
            "title_search": _timed(TitleSearchEvaluator(control_queries), context, timings),
        }

    report = EvaluationReport(_bundle_info(context), sweep, rankings, reupload, held_out, baseline, **measured,
                              timings=timings)
    report.files = write_report(output_dir, report, context, examples)
    timings["total_s"] = time.perf_counter() - started
    (output_dir / "metrics.json").write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    if set_alpha:
        store_in_manifest(bundle, report, output_dir)
    return report


def _timed(evaluator: Evaluator[Result], context: EvaluationContext, timings: dict[str, float]) -> Result:
    started = time.perf_counter()
    result = evaluator(context)
    timings[f"{evaluator.name}_s"] = time.perf_counter() - started
    return result


def _bundle_info(context: EvaluationContext) -> BundleInfo:
    recommender = context.recommender
    manifest, info = recommender.manifest, recommender.info()
    return BundleInfo(
        bundle=str(context.bundle), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        code_commit=_git_commit(), label=context.label, queries=len(context.rows), labels=len(context.label_names),
        ks=list(context.ks),
        image_encoder={key: manifest.get("image_encoder", {}).get(key) for key in ("architecture", "dimension",
                                                                                     "parameters")},
        title_head=manifest.get("title_head"), text_model=manifest.get("text_model", {}).get("name"),
        indexes={"image": info["image_index"], "text": info["text_index"]},
    )


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None
