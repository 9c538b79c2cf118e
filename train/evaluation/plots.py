"""The report's figures (matplotlib, PNG): the alpha sweep, precision per label, example queries."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .base import EvaluationContext
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
