"""Step 5's report: did the generated pictures help? ``report.json``, ``per_class_ap.csv``,
``per_class_ap.png`` and the printed summary, from the metrics of each evaluated run.

Runs: ``before`` (the starting checkpoint), one ``control`` run per seed (fine-tuned on the real
images only: same iterations, sampling rule and seeds) and one ``augmented`` run per seed (real +
generated). Each run's metrics are ``detection_eval.EvalResult.to_json()``: fractions, null where
the validation set has no box to measure. The report is in AP points (0 to 100).

- With several seeds (``--repeats``), a value is the mean over seeds and "±" the sample standard
  deviation (ddof = 1; none with one seed). ``delta`` is augmented minus control per seed (the
  two runs of a seed share it), then averaged; without control runs it is augmented minus before.
- The rare third: of the categories with validation boxes, the third (rounded up) with the fewest
  *real* training boxes — rare in the user's own data, which the generated pictures are meant to
  make up for. Its AP is the mean of its categories' APs. Ties go to the smaller category id.
- The summary's last line is ``augmented vs control: AP +x.x (rare third: +y.y)``, or
  ``augmented vs before: ...`` when there are no control runs.
"""

import io
import math
from pathlib import Path

import numpy as np

from cocoaug.atomic import write_bytes_atomic, write_csv_atomic, write_json_atomic
from cocoaug.detection_eval import SUMMARY_KEYS, EvalResult

REPORT_FILE = "report.json"
CSV_FILE = "per_class_ap.csv"
PLOT_FILE = "per_class_ap.png"
CSV_COLUMNS = ["category_id", "category", "real_boxes", "generated_boxes", "ap_before", "ap_control", "ap_control_std",
               "ap_augmented", "ap_augmented_std", "delta", "delta_std", "rare_third"]


def build_report(before, control_runs: list, augmented_runs: list, categories: dict[int, str], real_boxes: dict[int, int],
                 generated_boxes: dict[int, int], settings: dict) -> dict:
    """The report as a JSON-ready dict (AP points, null for "nothing to measure"); see the module docstring.

    ``before`` and each run: an EvalResult or its ``to_json()`` dict; ``categories``: COCO id -> name;
    ``real_boxes`` / ``generated_boxes``: training boxes per category id (missing: 0).
    """
    if not augmented_runs:
        raise ValueError("the report needs at least one augmented run")
    if control_runs and len(control_runs) != len(augmented_runs):
        raise ValueError(f"{len(control_runs)} control run(s) for {len(augmented_runs)} augmented run(s)")
    before, control, augmented = _result(before), [_result(r) for r in control_runs], [_result(r) for r in augmented_runs]
    baseline = control or [before] * len(augmented)
    category_ids = sorted(categories, key=lambda c: (real_boxes.get(c, 0), c))  # rare first
    measured = [c for c in category_ids if not math.isnan(before.per_class.get(c, math.nan))]
    rare = measured[:math.ceil(len(measured) / 3)]

    def points(runs, get):
        return np.array([100 * get(run) for run in runs], dtype=np.float64)

    def class_ap(category_id):
        return lambda run: run.per_class.get(category_id, math.nan)

    def rare_ap(run):
        return float(np.mean([run.per_class.get(c, math.nan) for c in rare])) if rare else math.nan

    per_class = []
    for category_id in category_ids:
        get = class_ap(category_id)
        row = {"category_id": category_id, "category": categories[category_id],
               "real_boxes": int(real_boxes.get(category_id, 0)), "generated_boxes": int(generated_boxes.get(category_id, 0)),
               "ap_before": _number(100 * get(before)), "rare_third": category_id in rare}
        row.update(_stats("ap_control", points(control, get)) if control else {"ap_control": None, "ap_control_std": None})
        row.update(_stats("ap_augmented", points(augmented, get)))
        row.update(_stats("delta", points(augmented, get) - points(baseline, get)))
        per_class.append(row)

    summary = {}
    for key in SUMMARY_KEYS:
        def get(run, key=key):
            return run.summary[key]
        summary[key] = {"before": _number(100 * get(before)), **_stats("control", points(control, get)),
                        **_stats("augmented", points(augmented, get)),
                        **_stats("delta", points(augmented, get) - points(baseline, get))}
        if not control:
            summary[key].update(control=None, control_std=None)
    rare_third = {"category_ids": rare, "categories": [categories[c] for c in rare], "before": _number(100 * rare_ap(before)),
                  **_stats("augmented", points(augmented, rare_ap)),
                  **_stats("delta", points(augmented, rare_ap) - points(baseline, rare_ap))}
    rare_third.update(_stats("control", points(control, rare_ap)) if control else {"control": None, "control_std": None})
    return {"unit": "AP points (0-100)", "comparison": "augmented vs control" if control else "augmented vs before",
            "seeds": len(augmented), "settings": settings, "summary": summary, "rare_third": rare_third, "per_class": per_class,
            "runs": {"before": before.to_json(), "control": [r.to_json() for r in control],
                     "augmented": [r.to_json() for r in augmented]}}


def write_report(out_dir, report: dict):
    """Write ``report.json``, ``per_class_ap.csv`` and ``per_class_ap.png`` into ``out_dir``, each atomically."""
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / REPORT_FILE, report)
    write_csv_atomic(out_dir / CSV_FILE, [{k: _csv_cell(v) for k, v in row.items()} for row in report["per_class"]], CSV_COLUMNS)
    write_bytes_atomic(out_dir / PLOT_FILE, plot_png(report))


def summary_lines(report: dict) -> list[str]:
    """The printed summary: the COCO metrics of each run, the rare third, and the one line that matters, last."""
    has_control = report["comparison"] == "augmented vs control"
    seeds = report["seeds"]
    columns = ["before"] + (["control"] if has_control else []) + ["augmented", "delta"]
    lines = [f"COCO box AP on the validation set, AP points; {seeds} seed(s)"
             + (", mean ± std over seeds" if seeds > 1 else "") + f"; delta = {report['comparison'].replace(' vs ', ' - ')}",
             f"{'':<12}" + "".join(f"{name:>16}" for name in columns)]
    rare = report["rare_third"]
    rows = [(key, report["summary"][key]) for key in SUMMARY_KEYS] + [("rare third", rare)]
    for name, values in rows:
        cells = [_mean_std(values[c], values.get(f"{c}_std"), signed=c == "delta") for c in columns]
        lines.append(f"{name:<12}" + "".join(f"{cell:>16}" for cell in cells))
    names = ", ".join(rare["categories"]) or "none"
    lines.append(f"rare third: {len(rare['categories'])} of {sum(r['ap_before'] is not None for r in report['per_class'])} "
                 f"measured categories, fewest real training boxes: {names}")
    lines.append(f"{report['comparison']}: AP {_signed(report['summary']['AP']['delta'])} (rare third: {_signed(rare['delta'])})")
    return lines


def plot_png(report: dict) -> bytes:
    """The per-category plot as PNG bytes: AP before / control / augmented per category, rarest at the
    top, the rare third shaded; beside it, the delta per category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["per_class"]
    has_control = report["comparison"] == "augmented vs control"
    series = [("before", "ap_before", None, "#b0b0b0")]
    if has_control:
        series.append(("control", "ap_control", "ap_control_std", "#4c78a8"))
    series.append(("augmented", "ap_augmented", "ap_augmented_std", "#f58518"))
    height = max(3.0, 0.42 * len(rows) + 1.6)
    figure, (ap_axis, delta_axis) = plt.subplots(1, 2, figsize=(11, height), sharey=True, layout="constrained",
                                                 gridspec_kw={"width_ratios": [3, 1.3]})
    positions = np.arange(len(rows))
    bar = 0.8 / len(series)
    for k, (label, key, std_key, color) in enumerate(series):
        values = [_nan(row[key]) for row in rows]
        errors = [_nan(row[std_key]) if std_key and row[std_key] is not None else 0 for row in rows]
        ap_axis.barh(positions + (k - (len(series) - 1) / 2) * bar, values, height=bar, xerr=errors if any(errors) else None,
                     color=color, label=label,
                     error_kw={"elinewidth": 0.8, "capsize": 2})
    deltas = [_nan(row["delta"]) for row in rows]
    delta_errors = [_nan(row["delta_std"]) if row["delta_std"] is not None else 0 for row in rows]
    delta_axis.barh(positions, deltas, height=0.6, color=["#54a24b" if d >= 0 else "#e45756" for d in np.nan_to_num(deltas)],
                    xerr=delta_errors if any(delta_errors) else None,
                    error_kw={"elinewidth": 0.8, "capsize": 2})
    delta_axis.axvline(0, color="black", linewidth=0.8)
    rare = [i for i, row in enumerate(rows) if row["rare_third"]]
    for axis in (ap_axis, delta_axis):
        if rare:
            axis.axhspan(min(rare) - 0.5, max(rare) + 0.5, color="#fff3c4", zorder=0)
        axis.grid(axis="x", linewidth=0.4, alpha=0.6)
    ap_axis.set_yticks(positions, [f"{row['category']}  ({row['real_boxes']} real + {row['generated_boxes']} gen.)"
                                   + ("" if row["ap_before"] is not None else "  no val. boxes") for row in rows])
    ap_axis.set_ylim(len(rows) - 0.5, -0.5)  # rarest at the top, no margin
    ap_axis.set_xlabel("AP@[.5:.95] (points)")
    ap_axis.set_xlim(0, max(1.0, np.nanmax([_nan(row[key]) for row in rows for _, key, _, _ in series] + [0])) * 1.1)
    ap_axis.legend(loc="lower left", bbox_to_anchor=(0, 1), ncol=len(series), frameon=False, fontsize=8)
    delta_axis.set_xlabel(report["comparison"].replace(" vs ", " − ") + " (points)")
    seeds = report["seeds"]
    figure.suptitle("AP per category, fewest real training boxes at the top (rare third shaded)"
                    + (f"; mean ± std over {seeds} seeds" if seeds > 1 else "") + "\n" + summary_lines(report)[-1], fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _result(run) -> EvalResult:
    return run if isinstance(run, EvalResult) else EvalResult.from_json(run)


def _stats(name: str, values: np.ndarray) -> dict:
    """``{name: mean, name_std: sample std}``, null where there is nothing to measure or one value."""
    if not len(values):
        return {name: None, f"{name}_std": None}
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return {name: _number(float(np.mean(values))), f"{name}_std": _number(std)}


def _number(value: float):
    return None if math.isnan(value) else round(value, 4)


def _nan(value):
    return math.nan if value is None else value


def _csv_cell(value):
    if value is None:
        return ""
    return f"{value:.2f}" if isinstance(value, float) else value


def _signed(value) -> str:
    return "n/a" if value is None else f"{value:+.1f}"


def _mean_std(value, std, signed: bool) -> str:
    if value is None:
        return "n/a"
    text = _signed(value) if signed else f"{value:.1f}"
    return text if std is None else f"{text} ± {std:.1f}"
