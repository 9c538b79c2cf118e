"""Writes an evaluation into the bundle's manifest: the tuned alpha, dedupe threshold and session fusion as its
defaults (each measured on this catalog), and a summary for the model card."""

from __future__ import annotations

from pathlib import Path

from recommender.data.bundle import read_manifest, read_search_config, write_manifest

from .base import to_plain
from .report import summary_markdown
from .results import EvaluationReport


def store_in_manifest(bundle: Path, report: EvaluationReport, output_dir: Path) -> None:
    """Set ``search.alpha`` (weighted fusion) to the tuned alpha and, where the controls were measured,
    ``dedupe_threshold`` and ``session_fusion`` to this catalog's calibrated ones; add the ``evaluation``
    section (checksums rewritten)."""
    manifest = read_manifest(bundle, verify=True)
    calibrated = {}
    if report.dedupe is not None:
        calibrated["dedupe_threshold"] = report.dedupe.threshold
    if report.sessions is not None:
        calibrated["session_fusion"] = report.sessions.recommended
    search = read_search_config(manifest, bundle).replace(alpha=report.alpha, fusion="weighted", **calibrated)
    manifest.pop("fusion", None)  # where bundles before the search section kept alpha
    manifest["search"] = search.to_dict()
    try:
        report_path = str(output_dir.resolve().relative_to(bundle.resolve()) / "report.md")
    except ValueError:
        report_path = str(output_dir / "report.md")
    alphas = list(report.sweep.sweep["weighted"])
    never_seen = report.never_seen
    manifest["evaluation"] = {
        "alpha_source": f"train.evaluation: best {report.sweep.metric} (label {report.info.label!r}) "
                        f"over alpha {alphas[0]}..{alphas[-1]}",
        "summary": summary_markdown(report),
        "created": report.info.created,
        "label": report.info.label,
        "queries": report.info.queries,
        "modes": report.rankings.modes,
        "reference": to_plain(report.rankings.reference),
        "reupload": to_plain(report.reupload),
        "never_seen": None if never_seen is None else {"held_out": never_seen.held_out, "modes": never_seen.modes,
                                                       "reference": to_plain(never_seen.reference)},
        "alpha": report.alpha,
        **calibrated,
        "report": report_path,
    }
    manifest.pop("files", None)
    write_manifest(Path(bundle), manifest)
