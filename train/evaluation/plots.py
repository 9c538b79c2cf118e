"""The report's figures (matplotlib, PNG): the alpha sweep, precision per label, example queries, the
diversity sweep and the dedupe calibration."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .base import EvaluationContext
from .dedupe import DedupeResult
from .diversity import DiversityResult
from .results import EvaluationReport


def plot_alpha_sweep(report: EvaluationReport, path: Path) -> None:
    """Hybrid quality against alpha per fusion, next to each single mode, random and the ceiling."""
    import matplotlib.pyplot as plt

    sweep, rankings = report.sweep, report.rankings
    ndcg = f"nDCG@{report.info.ks[-1]}"
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for axis, name in zip(axes, (sweep.metric, ndcg)):
        for fusion, style in (("weighted", "-o"), ("rrf", "--s")):
            per_alpha = sweep.sweep.get(fusion)
            if per_alpha:
                alphas = [float(a) for a in per_alpha]
                axis.plot(alphas, [v[name] for v in per_alpha.values()], style, markersize=3,
                          label=f"hybrid ({fusion})")
        for label, value, colour in (("image only", rankings.modes["image"][name], "tab:orange"),
                                     ("text only", rankings.modes["text"][name], "tab:green"),
                                     ("random", rankings.reference.random[name], "grey"),
                                     ("ceiling", rankings.reference.ceiling[name], "black")):
            axis.axhline(value, color=colour, linestyle=":", linewidth=1.2, label=label)
        axis.axvline(sweep.alpha, color="tab:red", linewidth=0.8, label=f"chosen alpha {sweep.alpha:.2f}")
        axis.set(xlabel="alpha (text weight)", ylabel=name, title=f"Hybrid {name} vs alpha")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower center")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_per_label(report: EvaluationReport, path: Path) -> None:
    """Precision per mode for the largest labels (and the baseline's union hybrid), with each label's ceiling."""
    import matplotlib.pyplot as plt

    metric = report.rankings.metric
    per_label = report.rankings.per_label
    series = {mode: [values[mode] for values in per_label.values()] for mode in ("image", "text", "hybrid")}
    if report.baseline:
        original = report.baseline.original_design.per_label
        series["baseline union"] = [original.get(name, {}).get("hybrid", np.nan) for name in per_label]
    names = [f"{name[:28]} ({values['items']})" for name, values in per_label.items()]
    positions = np.arange(len(names))
    width = 0.8 / len(series)
    figure, axis = plt.subplots(figsize=(8, 0.55 * len(names) * len(series) / 3 + 1.5))
    for offset, (mode, values) in enumerate(series.items()):
        axis.barh(positions + offset * width, values, height=width, label=mode)
    if all("ceiling" in values for values in per_label.values()):
        for position, values in zip(positions, per_label.values()):
            axis.vlines(values["ceiling"], position - width / 2, position + width * (len(series) - 0.5), color="black",
                        linewidth=1.5, label="ceiling" if position == 0 else None)
    axis.set_yticks(positions + width * (len(series) - 1) / 2, names, fontsize=8)
    axis.invert_yaxis()
    axis.set(xlabel=metric, xlim=(0, 1), title=f"{metric} per {report.info.label} (largest labels; items in brackets)")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_examples(context: EvaluationContext, ranked: dict[str, np.ndarray], path: Path, examples: int,
                  shown: int = 5) -> None:
    """Rows of thumbnails: per example query (one of each of the largest labels), one row per mode
    (query first, then its top results framed green when relevant, red when not)."""
    import matplotlib.pyplot as plt

    catalog, labels, rows = context.recommender.catalog, context.labels, context.rows
    rng = np.random.default_rng(context.seed + 1)
    codes, sizes = np.unique(labels[labels >= 0], return_counts=True)
    # Positions among the asked rows (``ranked`` is in their order), one per large label.
    queries = [int(rng.choice(np.flatnonzero(labels[rows] == code))) for code in codes[np.argsort(-sizes)][:examples]]
    modes = ("image", "text", "hybrid")
    figure, axes = plt.subplots(len(queries) * len(modes), shown + 1,
                                figsize=(2.1 * (shown + 1), 1.75 * len(queries) * len(modes)), squeeze=False)
    for q, position in enumerate(queries):
        row = int(rows[position])
        for m, mode in enumerate(modes):
            line = axes[q * len(modes) + m]
            results = [row] + [int(r) for r in ranked[mode][position][:shown]]
            for column, item in enumerate(results):
                axis = line[column]
                axis.set_xticks([])
                axis.set_yticks([])
                if item < 0:
                    axis.axis("off")
                    continue
                axis.imshow(catalog.image(item))
                colour = "black" if column == 0 else ("tab:green" if labels[item] == labels[row] else "tab:red")
                for spine in axis.spines.values():
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(3 if column else 1)
                title = catalog.titles[item]
                axis.set_title(title[:30] + ("…" if len(title) > 30 else ""), fontsize=6)
            label = context.label_names[labels[row]] if labels[row] >= 0 else "?"
            line[0].set_ylabel(f"{mode}\n{label[:18]}", fontsize=7)
    with warnings.catch_warnings():  # titles in scripts the default font lacks draw as boxes; that is fine
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.tight_layout()
        figure.savefig(path, dpi=80)
    plt.close(figure)


def plot_diversity(result: DiversityResult, path: Path) -> None:
    """Precision against the diversity setting, and against what it buys: intra-list similarity and
    distinct labels in the top k (one line per mode, points labelled with their setting)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 4.0), sharey=True)
    for mode, points in result.modes.items():
        precision = [point.precision for point in points]
        for axis, values in zip(axes, ([p.diversity for p in points], [p.ils for p in points],
                                       [p.distinct for p in points])):
            axis.plot(values, precision, "-o", markersize=3, label=mode)
        for point in (point for point in points if point.diversity >= 0.5):  # the low ones overlap
            axes[1].annotate(f"{point.diversity:g}", (point.ils, point.precision), fontsize=6,
                             textcoords="offset points", xytext=(3, 3))
    k, label = result.k, result.label
    axes[0].set(xlabel="diversity (MMR weight)", ylabel=result.metric, title=f"{result.metric} vs diversity")
    axes[1].set(xlabel=f"intra-list similarity of the top {k} (mode's vectors)", title="vs intra-list similarity")
    axes[1].invert_xaxis()  # more diverse to the right
    axes[2].set(xlabel=f"distinct {label} values in the top {k}", title=f"vs distinct {label}s")
    for axis in axes:
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Diversity: {result.queries} catalog items asked by id, relevance = same {label}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_dedupe(result: DedupeResult, path: Path) -> None:
    """Collapse rates against the dedupe threshold: what must collapse (re-uploads, known duplicates) and
    what must not (distinct videos), with the recommended threshold."""
    import matplotlib.pyplot as plt

    thresholds = [rates.threshold for rates in result.rates]
    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    for name in result.rates[0].reuploads:
        axis.plot(thresholds, [rates.reuploads[name] for rates in result.rates], "-o", markersize=3,
                  label=f"re-upload: {name}")
    if result.rates[0].known_duplicates is not None:
        axis.plot(thresholds, [rates.known_duplicates for rates in result.rates], "-s", color="black", markersize=3,
                  label=f"known duplicates ({len(result.duplicate_pairs)} pairs)")
    axis.plot(thresholds, [rates.distinct_same_label for rates in result.rates], "--", color="tab:purple",
              linewidth=2, label=f"distinct videos, same {result.label} (false collapse)")
    axis.plot(thresholds, [rates.distinct_any_label for rates in result.rates], ":", color="tab:purple",
              linewidth=2, label=f"distinct videos, any {result.label} (false collapse)")
    axis.axvline(result.threshold, color="grey", linewidth=0.8, label=f"recommended {result.threshold}")
    axis.set(xlabel="dedupe threshold (cosine of thumbnail features)", ylabel="share collapsed",
             title="Dedupe calibration", ylim=(-0.02, 1.02))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="center left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
