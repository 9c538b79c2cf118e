"""Recommendation quality rows of the benchmark table, from :func:`train.evaluate.evaluate`."""

from __future__ import annotations

from pathlib import Path

from .common import Results, Row


def run(ours: Path, baseline: Path | None, text_model: str | None, results: Results, label: str = "channel",
        reupload_items: int = 250, set_alpha: bool = True) -> dict:
    from train.evaluate import evaluate

    report = evaluate(ours, text_model=text_model, label=label, baseline_bundle=baseline,
                      reupload_items=reupload_items, set_alpha=set_alpha)
    original = (report.get("baseline") or {}).get("original_design")
    modes = report["modes"]
    names = {"image": "image (original: IndexFlatL2 on raw codes)", "text": "text",
             "hybrid": f"hybrid (ours: weighted, alpha {report['alpha']:.2f}; original: set union)"}
    for metric in ("P@10", "nDCG@10", "P@5"):
        for mode in ("image", "text", "hybrid"):
            results.add(Row("quality", f"{metric} {names[mode]}", modes[mode][metric],
                            original["modes"][mode][metric] if original else None, "",
                            f"label '{label}', {report['queries']:,} queries", "higher"))
        results.add(Row("quality", f"{metric} random / ceiling", f"{report['reference']['random'][metric]:.3f} / "
                        f"{report['reference']['ceiling'][metric]:.3f}"))
    margin = lambda m: f"{m['hybrid']['P@10'] - max(m['image']['P@10'], m['text']['P@10']):+.4f}"  # noqa: E731
    results.add(Row("quality", "hybrid P@10 minus best single mode", margin(modes),
                    margin(original["modes"]) if original else None, "",
                    "must be > 0: a fusion that loses to its best input is a bug"))
    cv = report["alpha_selection"]["cross_validated"]
    if cv:
        results.add(Row("quality", "hybrid P@10, alpha chosen on held-out folds", cv["P@10"], None, "",
                        f"{cv['folds']}-fold over queries"))
    headline = "re-upload (all headline variants)"
    results.add(Row("quality", "re-upload recall@1 (image mode)", report["reupload"][headline]["recall@1"],
                    original["reupload"][headline]["recall@1"] if original else None, "",
                    f"{report['reupload_queries']} thumbnails x 2: crop 4%, brightness x1.2 or x0.8, JPEG q30", "higher"))
    if original:
        results.add(Row("quality", "dead code dimensions (zero for every item)", None,
                        f"{original['dead_dimensions']} of {original['code_dimension']}"))
    results.raw["quality"] = report
    return report
