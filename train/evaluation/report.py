"""The report writer: ``report.md`` with its plots, and the short summary for the manifest and model card."""

from __future__ import annotations

from pathlib import Path

from .base import EvaluationContext, Metrics
from .dedupe import DedupeResult
from .diversity import DiversityResult
from .plots import plot_alpha_sweep, plot_dedupe, plot_diversity, plot_examples, plot_per_label
from .results import EvaluationReport
from .reupload import DUPLICATE_COSINE, Recall
from .sessions import SessionResult
from .title_search import TitleSearchResult

#: (system, mode, metrics) rows of the main quality table.
QualityRow = tuple[str, str, Metrics]


def write_report(output_dir: Path, report: EvaluationReport, context: EvaluationContext, examples: int) -> list[str]:
    """``report.md`` and its plots in ``output_dir``; returns the names of the files written (with ``metrics.json``,
    which the caller writes last)."""
    import matplotlib

    matplotlib.use("Agg")
    files = ["alpha_sweep.png", "per_label_precision.png"]
    plot_alpha_sweep(report, output_dir / files[0])
    plot_per_label(report, output_dir / files[1])
    if examples > 0:
        plot_examples(context, report.rankings.ranked, output_dir / "examples.png", examples)
        files.append("examples.png")
    if report.diversity:
        plot_diversity(report.diversity, output_dir / "diversity.png")
        files.append("diversity.png")
    if report.dedupe:
        plot_dedupe(report.dedupe, output_dir / "dedupe.png")
        files.append("dedupe.png")
    (output_dir / "report.md").write_text(report_markdown(report, "examples.png" in files))
    return ["report.md", "metrics.json", *files]


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and value != value) else f"{value:.3f}"


def quality_rows(report: EvaluationReport) -> list[QualityRow]:
    """(system, mode, metrics) rows of the main table, references first."""
    rankings = report.rankings
    rows = [("random", "–", rankings.reference.random), ("ceiling", "–", rankings.reference.ceiling)]
    image = "image (features + title head)" if report.info.title_head else "image"
    rows += [("this bundle", image, rankings.modes["image"]), ("this bundle", "text", rankings.modes["text"]),
             ("this bundle", f"hybrid (weighted, alpha={rankings.alpha:.2f})", rankings.modes["hybrid"]),
             ("this bundle", f"hybrid (RRF, alpha={rankings.alpha_rrf:.2f})", rankings.hybrid_rrf)]
    baseline = report.baseline
    if baseline:
        original = baseline.original_design.modes
        rows += [("baseline, original design", "image (IndexFlatL2, raw codes)", original["image"]),
                 ("baseline, original design", "text (IndexFlatL2)", original["text"]),
                 ("baseline, original design", "hybrid (set union of top-k lists)", original["hybrid"])]
        through = baseline.through_engine
        rows += [("baseline encoder, this engine", "image (cosine)", through.modes["image"]),
                 ("baseline encoder, this engine", f"hybrid (weighted, alpha={through.alpha:.2f})",
                  through.modes["hybrid"])]
    return rows


def _quality_table(ks: list[int], rows: list[QualityRow]) -> list[str]:
    metrics = [f"{name}@{k}" for name in ("P", "nDCG") for k in ks]
    lines = ["| system | mode | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
    for system, mode, values in rows:
        lines.append(f"| {system} | {mode} | " + " | ".join(_fmt(values.get(m)) for m in metrics) + " |")
    return lines


def summary_markdown(report: EvaluationReport) -> str:
    """The short version for the model card: main table, never-seen uploads, re-upload recall, chosen alpha."""
    info = report.info
    rows = [row for row in quality_rows(report) if "RRF" not in row[1] and row[0] != "baseline encoder, this engine"]
    lines = [f"Label `{info.label}` as relevance (same label = relevant; the query item excluded), every one of "
             f"the {info.queries:,} catalog items asked as a query.", ""]
    lines += _quality_table(info.ks, rows)
    never_seen = report.never_seen
    if never_seen:
        metric = never_seen.metric
        lines += ["", f"Never-seen uploads ({never_seen.held_out:,} videos held out, asked as uploads against a bundle "
                  f"built without them the same way): {metric} image **{_fmt(never_seen.modes['image'][metric])}**, "
                  f"text **{_fmt(never_seen.modes['text'][metric])}**, hybrid "
                  f"**{_fmt(never_seen.modes['hybrid'][metric])}** "
                  f"(ceiling {_fmt(never_seen.reference.ceiling[metric])})."]
    headline = report.reupload.headline
    baseline = (f" (baseline {report.baseline.original_design.reupload_headline.recall_at_1:.3f})"
                if report.baseline else "")
    lines += ["",
              f"Re-upload robustness (image mode, {report.reupload.queries} thumbnails cropped 4%, brightened "
              f"or darkened, saved as JPEG q30): recall@1 **{headline.recall_at_1:.3f}**"
              + baseline + _duplicate_note(headline) + ".",
              f"Default hybrid weight alpha = {report.alpha:.2f} (best {report.sweep.metric} of the sweep)."]
    return "\n".join(lines)


def _duplicate_note(recall: Recall) -> str:
    duplicates = recall.misses_on_duplicates or 0
    return (f"; {duplicates} of its {recall.misses} misses returned the same picture filed under another item"
            if duplicates else "")


def report_markdown(report: EvaluationReport, with_examples: bool = True) -> str:
    info = report.info
    encoder = info.image_encoder
    lines = [
        f"# Quality report: `{info.bundle}`", "",
        f"{info.queries:,} catalog items, label `{info.label}` ({info.labels} distinct) as relevance: a "
        "recommendation is relevant when it shares the query's label; every item is asked as a query and never "
        "recommends itself. Queries whose label has no other item count too (the ceiling shows what is reachable).", "",
        f"Measured {info.created} on code `{info.code_commit}`; image encoder `{encoder.get('architecture')}` "
        f"(dim {encoder.get('dimension')}, {encoder.get('parameters') or 0:,} parameters), text model "
        f"`{info.text_model}`, indexes: image {info.indexes['image']}, text {info.indexes['text']}.", "",
    ]
    head = info.title_head
    if head:
        settings = head.get("config") or head  # older manifests kept the settings beside file and dimension
        lines += [f"Image vectors join the encoder's features with a title head's prediction ({head['dimension']}-d): "
                  f"kernel ridge regression from features to title vectors ({head['random_features']:,} random "
                  f"Fourier features, ridge {settings['ridge']}), cross-fitted over {head['folds']} folds, so no "
                  "catalog item's vector was fitted on its own title.", ""]
    lines += ["## Ranking quality", ""]
    lines += _quality_table(info.ks, quality_rows(report))
    lines += _alpha_lines(report)
    if report.baseline:
        lines += _baseline_lines(report)
    if report.never_seen:
        lines += _never_seen_lines(report)
    lines += _reupload_lines(report)
    lines += control_lines(report)
    lines += _sweep_lines(report)
    lines += _per_label_lines(report)
    if with_examples:
        lines += ["", "## Example queries", "",
                  "Query thumbnail first, then the top 5 per mode; green frame = same label, red = not.", "",
                  "![examples](examples.png)"]
    lines += _check_lines(report)
    return "\n".join(lines) + "\n"


def _alpha_lines(report: EvaluationReport) -> list[str]:
    sweep = report.sweep
    cv = sweep.cross_validated
    lines = ["", f"Hybrid alpha (text weight) = **{sweep.alpha:.2f}**, the best {sweep.metric} of the sweep below "
             f"(ties: nDCG, then closest to 0.5); written into the bundle's manifest as the default."]
    if cv:
        lines += [f"Tuned on the same queries it is scored on; choosing alpha on {cv.folds - 1} of {cv.folds} "
                  f"folds of queries and scoring the held-out fold gives hybrid {cv.metric} **{cv.value:.3f}** "
                  f"(alphas chosen per fold: {', '.join(f'{a:.2f}' for a in cv.alphas)})."]
    return lines


def _baseline_lines(report: EvaluationReport) -> list[str]:
    baseline = report.baseline
    original = baseline.original_design
    return ["", f"Baseline = the original design ({baseline.image_encoder.get('parameters') or 0:,} encoder "
            f"parameters), bundle `{baseline.bundle}`: {original.dead_dimensions} of its "
            f"{original.code_dimension} code dimensions are zero for every catalog item (dead ReLU units). "
            "'original design' scores it as it was served (IndexFlatL2 over raw codes; hybrid = the set union "
            "of the image and text top-k lists, cut to k in set order); 'this engine' runs the same encoder "
            "through this project's cosine indexes and weighted fusion."]


def _never_seen_lines(report: EvaluationReport) -> list[str]:
    never_seen, rankings = report.never_seen, report.rankings
    metric, ndcg = never_seen.metric, f"nDCG@{report.info.ks[-1]}"
    metrics = [f"{name}@{k}" for name in ("P", "nDCG") for k in report.info.ks]
    lines = ["", f"## Never-seen uploads ({never_seen.held_out:,} held-out videos)", "",
             f"{never_seen.fraction:.0%} of the catalog (seed {never_seen.seed}) held out; a bundle built from the "
             f"other {never_seen.catalog_items:,} items with this bundle's settings ({never_seen.epochs} training "
             "epochs); each held-out video uploaded through `Recommender.recommend`: its thumbnail alone (image "
             f"mode), its title alone (text mode), both (hybrid, weighted, alpha={never_seen.alpha:.2f}). Relevant = "
             "a catalog item with the query's label. Unlike the table above, no query is a catalog item: neither the "
             "encoder nor the title head has seen them. In-catalog columns repeat the table above.", "",
             "| mode | " + " | ".join(metrics) + f" | in-catalog {metric} | in-catalog {ndcg} |",
             "|---|" + "---:|" * (len(metrics) + 2)]
    rows = [("random", never_seen.reference.random, rankings.reference.random),
            ("ceiling", never_seen.reference.ceiling, rankings.reference.ceiling),
            ("image (thumbnail upload)", never_seen.modes["image"], rankings.modes["image"]),
            ("text (title)", never_seen.modes["text"], rankings.modes["text"]),
            ("hybrid (both)", never_seen.modes["hybrid"], rankings.modes["hybrid"])]
    for name, values, in_catalog in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(values.get(m)) for m in metrics)
                     + f" | {_fmt(in_catalog.get(metric))} | {_fmt(in_catalog.get(ndcg))} |")
    return lines


def _reupload_lines(report: EvaluationReport) -> list[str]:
    reupload, baseline = report.reupload, report.baseline
    lines = ["", f"## Re-upload robustness (image mode, {reupload.queries} catalog thumbnails)", "",
             "Each thumbnail altered, uploaded as a query; recall@1 = the original comes back first. 'Misses on "
             "duplicates' counts rank-1 misses that returned another catalog item with the same thumbnail "
             f"(encoder features at cosine >= {DUPLICATE_COSINE}): the catalog holds the picture twice.", "",
             "| alteration | recall@1 | recall@5 | misses on duplicates |"
             + (" baseline recall@1 |" if baseline else ""),
             "|---|---:|---:|---:|" + ("---:|" if baseline else "")]
    original = baseline.original_design if baseline else None
    rows = [*reupload.variants.items(), ("re-upload (all headline variants)", reupload.headline)]
    for name, recall in rows:
        bold = recall is reupload.headline
        line = (f"| {'**' + name + '**' if bold else name} | {_fmt(recall.recall_at_1)} | {_fmt(recall.recall_at_5)} "
                f"| {'–' if recall.misses_on_duplicates is None else recall.misses_on_duplicates} |")
        if original:
            theirs = original.reupload_headline if bold else original.reupload.get(name)
            line += f" {_fmt(theirs.recall_at_1 if theirs else None)} |"
        lines.append(line)
    return lines


def _sweep_lines(report: EvaluationReport) -> list[str]:
    sweep = report.sweep
    metric, ndcg = sweep.metric, f"nDCG@{report.info.ks[-1]}"
    lines = ["", "## Hybrid weight sweep", "", "![alpha sweep](alpha_sweep.png)", "",
             f"| alpha | weighted {metric} | weighted {ndcg} | RRF {metric} |", "|---:|---:|---:|---:|"]
    for alpha, values in sweep.sweep["weighted"].items():
        rrf = sweep.sweep.get("rrf", {}).get(alpha, {})
        lines.append(f"| {float(alpha):.2f} | {_fmt(values[metric])} | {_fmt(values[ndcg])} "
                     f"| {_fmt(rrf.get(metric))} |")
    return lines


def _per_label_lines(report: EvaluationReport) -> list[str]:
    per_label = report.rankings.per_label
    modes = list(next(iter(per_label.values())))[1:]
    lines = ["", f"## {report.rankings.metric} per label", "", "![per-label precision](per_label_precision.png)", "",
             "| label | items | " + " | ".join(modes) + " |", "|---|---:|" + "---:|" * len(modes)]
    for name, values in per_label.items():
        lines.append(f"| {name} | {values['items']} | " + " | ".join(_fmt(values[m]) for m in modes) + " |")
    return lines


def _check_lines(report: EvaluationReport) -> list[str]:
    verification = report.rankings.verification
    lines = ["", "## Checks", "",
             f"Bulk rankings compared with `Recommender.recommend` on {verification.queries} sampled queries per "
             f"mode and fusion: {verification.identical} identical, {verification.tie} equal up to tied scores, "
             f"{verification.different} different. Timings: "
             + ", ".join(f"{name} {seconds:.1f}" for name, seconds in report.timings.items()) + ".",
             "", "| evaluator | primary metric | value |", "|---|---|---:|"]
    lines += [f"| {name} | {result.primary_metric} | {_fmt(result.primary)} |"
              for name, result in report.results().items()]
    return lines


def control_lines(report: EvaluationReport) -> list[str]:
    """The recommendation controls' sections (those measured): diversity, dedupe, sessions, title -> thumbnails."""
    lines = []
    if report.diversity:
        lines += diversity_lines(report.diversity)
    if report.dedupe:
        lines += dedupe_lines(report.dedupe)
    if report.sessions:
        lines += session_lines(report.sessions)
    if report.title_search:
        lines += title_search_lines(report.title_search)
    return lines


def diversity_lines(result: DiversityResult) -> list[str]:
    k = result.k
    lines = ["", f"## Diversity (MMR), {result.queries} catalog items asked by id", "",
             f"`recommend(item_id=..., diversity=d, dedupe=False)`: {result.metric} (same {result.label} = relevant), "
             f"intra-list similarity (ILS: mean pairwise cosine of the top {k}, on the mode's vectors; hybrid: mean of "
             f"image and text) and distinct {result.label} values in the top {k}.", "", "![diversity](diversity.png)",
             "", "| diversity | " + " | ".join(f"{mode} {result.metric} | {mode} ILS | {mode} distinct"
                                               for mode in result.modes) + " |",
             "|---:|" + "---:|---:|---:|" * len(result.modes)]
    for position, point in enumerate(next(iter(result.modes.values()))):
        cells = [f"{_fmt(points[position].precision)} | {_fmt(points[position].ils)} | {points[position].distinct:.2f}"
                 for points in result.modes.values()]
        lines.append(f"| {point.diversity:g} | " + " | ".join(cells) + " |")
    return lines


def dedupe_lines(result: DedupeResult) -> list[str]:
    variants = list(result.rates[0].reuploads)
    current = "" if result.current is None else f" The bundle's current `dedupe_threshold` is {result.current}."
    lines = ["", "## Dedupe calibration", "",
             f"Share of pairs whose thumbnail features (autoencoder part of the image vectors) reach each cosine "
             f"threshold. Must collapse: {result.reupload_items} live thumbnails re-uploaded per variant, against "
             f"their original; {len(result.duplicate_pairs)} known duplicate pairs of the catalog (identical bytes or "
             "the same pixels). Must not: each of the "
             f"{result.live_items:,} live items' most similar other video of the same {result.label}, and of any "
             f"{result.label}. Recommended: the lowest threshold with at most {result.tolerance:.1%} same-"
             f"{result.label} false collapses: **{result.threshold}**.{current}", "", "![dedupe](dedupe.png)", "",
             "| threshold | " + " | ".join(f"re-upload: {name}" for name in variants)
             + f" | known duplicates | distinct, same {result.label} | distinct, any |",
             "|---:|" + "---:|" * (len(variants) + 3)]
    for rates in result.rates:
        bold = "**" if rates.threshold == result.threshold else ""
        lines.append(f"| {bold}{rates.threshold}{bold} | " + " | ".join(_fmt(rates.reuploads[name]) for name in variants)
                     + f" | {_fmt(rates.known_duplicates)} | {rates.distinct_same_label:.4f} | "
                     f"{rates.distinct_any_label:.4f} |")
    return lines


def session_lines(result: SessionResult) -> list[str]:
    lines = ["", f"## Sessions ({result.sessions} seeded sessions per size and kind)", "",
             f"`recommend(items=[...])`, relevance = the session's majority {result.label}, session items never "
             f"returned. 'one label': every item from one {result.label} (picked in proportion to its size); '+ noise': "
             f"one item from another {result.label}. Mean {result.metric} over sessions of 2+ items: "
             + ", ".join(f"{fusion} {_fmt(value)}" for fusion, value in result.means.items())
             + f"; recommended `session_fusion` = **{result.recommended}**.", "",
             f"| items | kind | mode | centroid {result.metric} | rrf {result.metric} | ceiling |",
             "|---:|---|---|---:|---:|---:|"]
    for score in result.scores:
        lines.append(f"| {score.size} | {score.kind} | {score.mode} | {_fmt(score.precision['centroid'])} | "
                     f"{_fmt(score.precision['rrf'])} | {_fmt(score.ceiling)} |")
    return lines


def title_search_lines(result: TitleSearchResult) -> list[str]:
    lines = ["", "## Title -> thumbnails", ""]
    if result.modes is None:
        return lines + ["This bundle has no title head: image mode cannot be asked with a title alone."]
    metrics = list(next(iter(result.modes.values())))
    lines += [f"{result.queries} live items' titles asked alone (`recommend(title=..., mode=..., exclude=[the item])`); "
              f"relevance = same {result.label}. Image mode ranks thumbnails by the title head's predicted-title half.",
              "", "| mode | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    rows = [("random", result.random), ("ceiling", result.ceiling), *result.modes.items()]
    for name, values in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(values[m]) for m in metrics) + " |")
    return lines
