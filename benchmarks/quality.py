"""Recommendation quality rows of the benchmark table, from :func:`train.evaluation.evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .common import Results, Row

if TYPE_CHECKING:
    from train.evaluation import EvaluationReport


def run(ours: Path, baseline: Path | None, text_model: str | None, results: Results, label: str = "channel",
        reupload_items: int = 250, set_alpha: bool = True, holdout: bool = True, holdout_fraction: float = 0.2,
        holdout_epochs: int | None = None) -> EvaluationReport:
    """Evaluate ``ours`` (and ``baseline``) with :func:`train.evaluation.evaluate` and add the quality rows."""
    from train.evaluation import evaluate

    report = evaluate(ours, text_model=text_model, label=label, baseline_bundle=baseline,
                      reupload_items=reupload_items, set_alpha=set_alpha, holdout=holdout,
                      holdout_fraction=holdout_fraction, holdout_epochs=holdout_epochs)
    rankings, queries = report.rankings, report.info.queries
    original = report.baseline.original_design if report.baseline else None
    names = {"image": "image (original: IndexFlatL2 on raw codes)", "text": "text",
             "hybrid": f"hybrid (ours: weighted, alpha {report.alpha:.2f}; original: set union)"}
    for metric in ("P@10", "nDCG@10", "P@5"):
        for mode in ("image", "text", "hybrid"):
            results.add(Row("quality", f"{metric} {names[mode]}", rankings.modes[mode][metric],
                            original.modes[mode][metric] if original else None, "",
                            f"label '{label}', {queries:,} queries", "higher"))
        results.add(Row("quality", f"{metric} random / ceiling", f"{rankings.reference.random[metric]:.3f} / "
                        f"{rankings.reference.ceiling[metric]:.3f}"))
    margin = lambda m: f"{m['hybrid']['P@10'] - max(m['image']['P@10'], m['text']['P@10']):+.4f}"  # noqa: E731
    results.add(Row("quality", "hybrid P@10 minus best single mode", margin(rankings.modes),
                    margin(original.modes) if original else None, "",
                    "must be > 0: a fusion that loses to its best input is a bug"))
    cv = report.sweep.cross_validated
    if cv:
        results.add(Row("quality", f"hybrid {cv.metric}, alpha chosen on held-out folds", cv.value, None, "",
                        f"{cv.folds}-fold over queries"))
    results.add(Row("quality", "re-upload recall@1 (image mode)", report.reupload.headline.recall_at_1,
                    original.reupload_headline.recall_at_1 if original else None, "",
                    f"{report.reupload.queries} thumbnails x 2: crop 4%, brightness x1.2 or x0.8, JPEG q30", "higher"))
    never_seen = report.never_seen
    if never_seen:
        note = (f"{never_seen.held_out:,} held-out videos uploaded to a bundle built without them "
                f"({never_seen.catalog_items:,} items, {never_seen.epochs} epochs)")
        uploads = {"image": "image (thumbnail)", "text": "text (title)", "hybrid": "hybrid (both)"}
        for metric in ("P@10", "nDCG@10"):
            for mode, upload in uploads.items():
                results.add(Row("quality", f"{metric} never-seen upload, {upload}", never_seen.modes[mode][metric],
                                None, "", note, "higher"))
            results.add(Row("quality", f"{metric} never-seen random / ceiling",
                            f"{never_seen.reference.random[metric]:.3f} / {never_seen.reference.ceiling[metric]:.3f}"))
        results.add(Row("quality", "never-seen bundle build + queries", never_seen.build_seconds +
                        never_seen.query_seconds, None, "s",
                        f"build {never_seen.build_seconds:.0f} s, {3 * never_seen.held_out:,} uploads "
                        f"{never_seen.query_seconds:.0f} s"))
    if original:
        results.add(Row("quality", "dead code dimensions (zero for every item)", None,
                        f"{original.dead_dimensions} of {original.code_dimension}"))
    add_control_rows(report, results)
    results.raw["quality"] = report.to_dict()
    return report


def add_control_rows(report: EvaluationReport, results: Results) -> None:
    """Rows of the recommendation controls: diversity, dedupe calibration, sessions, title -> thumbnails."""
    diversity = report.diversity
    if diversity:
        for setting in (0.0, 0.3, 1.0):
            point = diversity.point("hybrid", setting)
            results.add(Row("quality", f"hybrid {diversity.metric} at diversity {setting:g}", point.precision, None, "",
                            f"intra-list similarity {point.ils:.3f}, {point.distinct:.2f} distinct "
                            f"{diversity.label}s in the top {diversity.k}; {diversity.queries} items by id", "higher"))
    dedupe = report.dedupe
    if dedupe:
        rates = dedupe.at_threshold
        duplicates = "–" if rates.known_duplicates is None else f"{rates.known_duplicates:.3f}"
        results.add(Row("quality", "dedupe threshold (recommended)", dedupe.threshold, None, "",
                        f"re-uploads collapsed {rates.reuploads_all:.3f}, known duplicates {duplicates} "
                        f"({len(dedupe.duplicate_pairs)} pairs), distinct same-{dedupe.label} videos "
                        f"{rates.distinct_same_label:.4f}"))
    sessions = report.sessions
    if sessions:
        for score in sessions.scores:
            if score.mode == "hybrid":
                results.add(Row("quality", f"session {sessions.metric}, {score.size} items, {score.kind} (hybrid)",
                                f"centroid {score.precision['centroid']:.3f} / rrf {score.precision['rrf']:.3f}", None,
                                "", f"{sessions.sessions} sessions; ceiling {score.ceiling:.3f}"))
        results.add(Row("quality", "session fusion (recommended)", sessions.recommended, None, "",
                        ", ".join(f"{fusion} {value:.3f}" for fusion, value in sessions.means.items())
                        + " (mean over 2+ items, every mode and kind)"))
    title = report.title_search
    if title and title.modes:
        for name, metrics in title.modes.items():
            results.add(Row("quality", f"{title.metric} title alone, {name}", metrics[title.metric], None, "",
                            f"{title.queries} titles, the item excluded", "higher"))
