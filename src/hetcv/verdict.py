"""``results/summary.md``: a short, plain-language verdict per dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hetcv.metrics import LABEL
from hetcv.profiles import WEAKEST, over_represented
from hetcv.stats import PAPER_CV_GUIDELINE
from hetcv.tables import heterogeneity_reading, select

CORRELATION_LEVELS = {
    "sample_size": "raw CV, over the sample sizes",
    "sample_size_debiased": "debiased CV, over the sample sizes",
    "fold": "raw CV, over the (n, fold) points, permuted within each n",
}


SUMMARY_INTRODUCTION = (
    "# hetcv: heterogeneity verdicts\n\n"
    "CV = coefficient of variation of the per-cluster test metric (%). The raw CV (the "
    "paper's) mixes two things: real differences between the clusters and the sampling "
    "noise of small clusters (for accuracy a and m samples a cluster, about "
    "√((1 − a)/(a·m)) on its own); its interval is for its own expectation, not for the "
    "clusters' true CV. The debiased CV removes the noise (method of moments, as in "
    "meta-analysis); where the data cannot tell it from 0 it is shown as ≤ its one-sided "
    "95 % upper bound. For accuracy the same spread is also given against the error rate "
    "(error-scale CV): near accuracy 1 a CV of accuracy hides an eight-fold spread of "
    "error rates. I² is the share of the spread that is real. p (Holm): permutation test "
    "of the raw CV, adjusted over the sample sizes. p calibrated: are the errors more "
    "uneven over the clusters than the model's own confidence predicts, once each fold's "
    "confidence is recalibrated on that fold (a logistic model of correctness on its "
    "confidence and predicted class)? A model's errors always gather on hard images, so "
    "the first test is nearly always significant with enough data; the second asks "
    "whether a cluster fails beyond what the model knows about it. Clusters are numbered "
    "by size (0 = largest), never by their measured metric. Guide: CV < 10 % very good, "
    "10–20 good, 20–30 acceptable, > 30 not acceptable (clinical chemistry, quoted by "
    "the paper); the paper recommends CV < 5 %.\n"
)


def interval(value: float, low: float, high: float, digits: int = 1) -> str:
    """Format an estimate with its interval as ``"value (low–high)"``.

    Parameters
    ----------
    value : float
        The estimate.
    low, high : float
        Bounds of its confidence interval.
    digits : int, default=1
        Decimals shown for all three numbers.

    Returns
    -------
    text : str
        The formatted estimate, or ``"–"`` if ``value`` is not finite.
    """
    if not np.isfinite(value):
        return "–"
    return f"{value:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def spread_text(value: float, low: float, high: float, upper: float) -> str:
    """A debiased spread with its interval, or ``≤ upper`` where the interval reaches 0.

    Parameters
    ----------
    value, low, high : float
        The estimate and its 95 % interval.
    upper : float
        Its one-sided 95 % upper bound.

    Returns
    -------
    text : str
        ``"2.3 (1.1–4.0)"``, or ``"≤ 3.4 (0–4.6)"`` when the data cannot tell it from 0 (a
        bare positive estimate would read as heterogeneity); ``"–"`` if not finite.
    """
    if not np.isfinite(value):
        return "–"
    if low > 0:
        return interval(value, low, high)
    return f"≤ {upper:.1f} (0–{high:.1f})"


# From this test accuracy on, the verdict reads the spread of errors, not of accuracy.
HIGH_ACCURACY = 0.95


def p_text(value: float) -> str:
    """Format a p-value with three decimals, or ``"–"`` if it is not finite (untested).

    Parameters
    ----------
    value : float
        The p-value, possibly NaN.

    Returns
    -------
    text : str
        E.g. ``"0.012"``.
    """
    return f"{value:.3f}" if np.isfinite(value) else "–"


def correlation_line(row: pd.Series, metric: str) -> str:
    """Describe one correlation of the CV with the test metric as a Markdown bullet.

    Parameters
    ----------
    row : pandas.Series
        One row of the correlation table (see `hetcv.stats.correlation`), with its ``level``
        (a key of ``CORRELATION_LEVELS``).
    metric : str
        Label of the test metric, e.g. ``"accuracy"``.

    Returns
    -------
    line : str
        Pearson r with permutation p and bootstrap CI, and Spearman ρ; or a note that there
        were too few points (or no spread) for a correlation.
    """
    where = CORRELATION_LEVELS[row["level"]]
    if not pd.notna(row["pearson"]):
        return f"- {where} against test {metric}: too few points (or no spread) for a correlation."
    ci = (
        f"95 % CI {row['pearson_ci_low']:.2f} to {row['pearson_ci_high']:.2f}"
        if pd.notna(row["pearson_ci_low"])
        else "no bootstrap CI: too few points"
    )
    return (
        f"- {where} ({row['n_points']} points) against test {metric}: Pearson r = "
        f"{row['pearson']:.2f} (permutation p = {row['pearson_perm_p']:.3g}, {ci}); "
        f"Spearman ρ = {row['spearman']:.2f}."
    )


def dataset_verdict(
    dataset: str,
    metric: str,
    cv: pd.DataFrame,
    clusters: pd.DataFrame,
    correlation: pd.DataFrame,
    subgroups: pd.DataFrame,
    metadata: pd.DataFrame,
    planning: pd.DataFrame,
    slices: pd.DataFrame,
    selected: dict,
    *,
    slice_method: str,
) -> str:
    """Write the Markdown section of ``results/summary.md`` for one dataset.

    A table of the debiased and raw CV per sample size, then bullets on the paper's 5 %
    guideline at the largest n, the correlations, empty clusters, the weakest cluster and
    the subgroups that the worst cluster holds.

    Parameters
    ----------
    dataset : str
        Name of the dataset, used as the heading.
    metric : str
        The metric's name (:data:`hetcv.metrics.METRICS`), for its label.
    cv : pandas.DataFrame
        Per-(algorithm, k, n) summary: CVs with CIs, I², Holm p-values, weakest cluster.
    clusters : pandas.DataFrame
        Per-cluster summary with ``n``, ``cluster``, ``empty_runs`` and ``runs``.
    correlation : pandas.DataFrame
        One row per correlation level; see `correlation_line`.
    subgroups : pandas.DataFrame
        Subgroups with ``n``, ``subgroup``, ``lift``, ``precision`` and ``auroc``; may be empty.
    metadata : pandas.DataFrame
        The metadata profile (:func:`hetcv.profiles.metadata_profiles`); may be empty.
    planning : pandas.DataFrame
        The planning table (:func:`hetcv.plan.planning_table`); one sentence per row.
    slices : pandas.DataFrame
        The slices summary (:func:`hetcv.slices.dataset_slices`); see :func:`slices_lines`.
    selected : dict
        The selected clustering: ``{"algorithm": ..., "k": ...}``.
    slice_method : str
        ``slices.method``, the method whose slices "Where it hurts" names.

    Returns
    -------
    section : str
        Markdown text, ending with a blank line.
    """
    name = metric
    metric = LABEL[metric]
    rows = select(cv, selected).sort_values("n")
    errors = name == "accuracy" and "error_cv" in rows
    lines = [
        f"## {dataset}",
        "",
        f"Selected clustering: {selected['algorithm']} with k = {selected['k']}; metric: {metric}. "
        "The headline is the debiased CV: the spread of the clusters' true metrics, with the "
        "sampling noise of small clusters removed. The paper's raw CV includes that noise.",
        "",
        "| n | test metric | debiased CV % (95 % CI) |"
        + (" error-scale CV % (95 % CI) |" if errors else "")
        + " I² | raw CV % (95 % CI of its expectation) | p (Holm) | p calibrated (Holm) "
        "| reading |",
        "|---|---|---|" + ("---|" if errors else "") + "---|---|---|---|---|",
    ]
    for _, row in rows.iterrows():
        error_cell = f"{_spread_cell(row, 'error_cv')} | " if errors else ""
        lines.append(
            f"| {row['n']} | {row['test_metric']:.3f} | {_spread_cell(row, 'debiased_cv')} | "
            f"{error_cell}{row['i_squared']:.2f} | "
            f"{interval(row['cv'], row['cv_ci_low'], row['cv_ci_high'])} | "
            f"{p_text(row['p_holm'])} | {p_text(row['p_holm_calibrated'])} | "
            f"{heterogeneity_reading(row)} |"
        )
    lines.append("")
    largest = rows.iloc[-1]
    if name == "mean_score":
        lines.append(
            "- No confidence-calibrated test: a score task has no predicted probabilities, so "
            "the permutation test is the test of heterogeneity."
        )
    high_accuracy = errors and largest["test_metric"] > HIGH_ACCURACY
    if high_accuracy:
        lines.append(_error_scale_line(largest))
    for label, column in (("debiased", "debiased_cv"), ("raw", "cv")):
        where = "below" if 0 <= largest[column] < PAPER_CV_GUIDELINE else "not below"
        value = f"{largest[column]:.1f} %"
        if column == "debiased_cv" and not largest["debiased_cv_ci_low"] > 0:
            value = (
                f"at most {largest['debiased_cv_upper']:.1f} % (one-sided 95 % bound; the "
                "data cannot tell it from 0)"
            )
            where = "below" if largest["debiased_cv_upper"] < PAPER_CV_GUIDELINE else where
        caveat = (
            " (at this accuracy the guideline says little: read the error scale above)"
            if high_accuracy
            else ""
        )
        lines.append(
            f"- At n = {largest['n']} the {label} CV is {value}: {where} the "
            f"paper's {PAPER_CV_GUIDELINE:.0f} % guideline{caveat}."
        )
    lines += [correlation_line(row, metric) for _, row in correlation.iterrows()]
    for row in select(clusters, selected).query("empty_runs > 0").itertuples():
        lines.append(
            f"- At n = {row.n}, cluster {row.cluster} was empty (no sample's highest "
            f"membership) in {row.empty_runs} of {row.runs} fold × repeat runs; its metric "
            "averages the other runs, and those runs' CV is over the remaining clusters."
        )
    for row in select(clusters, selected).query("undefined_runs > 0").itertuples():
        lines.append(
            f"- At n = {row.n}, cluster {row.cluster} held one class only in "
            f"{row.undefined_runs} of {row.runs} fold × repeat runs, where its {metric} is "
            "undefined; those runs' CV is over the remaining clusters."
        )
    one_class = select(clusters, selected).query("single_class_runs > 0 and undefined_runs == 0")
    if metric == LABEL["balanced_accuracy"] and len(one_class):
        lines.append(
            f"- {len(one_class)} cluster × sample-size cells held one class only in some runs; "
            "a balanced accuracy there is that class's recall."
        )
    weakest = interval(
        largest["weakest_metric"], largest["weakest_ci_low"], largest["weakest_ci_high"], 3
    )
    ratio = ""
    if np.isfinite(largest.get("weakest_error_ratio", np.nan)):
        ratio = (
            f"; it makes {largest['weakest_error_ratio']:.1f}× the errors of the other "
            f"clusters (95 % CI {largest['weakest_error_ratio_ci_low']:.1f}–"
            f"{largest['weakest_error_ratio_ci_high']:.1f})"
        )
    lines.append(
        f"- Weakest cluster at n = {largest['n']} (cross-fitted: ranked on one half of each "
        f"fold's held-out samples, measured on the other; cluster numbers are per fold): "
        f"{metric} {weakest} against {largest['test_metric']:.3f} overall{ratio}"
        f"{_over_represented(metadata, largest['n'])}."
    )
    if len(subgroups):
        top = subgroups[subgroups["n"] == largest["n"]].sort_values("lift", ascending=False).head(3)
        described = ", ".join(
            f"subgroup {row.subgroup} (lift {row.lift:.1f}, precision "
            f"{row.precision:.2f}, AUROC {row.auroc:.2f})"
            for row in top.itertuples()
        )
        lines.append(f"- What the worst cluster holds at n = {largest['n']}: {described}.")
    lines += [planning_line(row, metric) for _, row in planning.iterrows()]
    lines += ["", *slices_lines(slices, slice_method), ""]
    return "\n".join(lines)


def labels_verdict(dataset: str, labels: pd.DataFrame) -> str:
    """The section of a multi-label dataset: its labels side by side, which are beyond noise.

    Parameters
    ----------
    dataset : str
        The multi-label dataset.
    labels : DataFrame
        :func:`hetcv.labels.labels_summary`.

    Returns
    -------
    section : str
        Markdown: a table of the labels at the largest n, and the labels whose clusters
        differ beyond sampling noise at some size (Holm over every label and size).
    """
    largest = labels["n"].max()
    rows = labels[labels["n"] == largest].sort_values("label")
    lines = [
        f"## {dataset}: {len(rows) - 1} labels",
        "",
        f"One model, one clustering; each label's own section follows (`{dataset}@<label>`), "
        f"and `{dataset}@macro`, the share of labels right at 0.5. p (Holm, labels): the "
        "permutation test, adjusted over every label and sample size.",
        "",
        "| label | test metric | debiased CV % (95 % CI) | raw CV % | p (Holm, labels) |",
        "|---|---|---|---|---|",
    ]
    for _, row in rows.iterrows():
        debiased = interval(
            row["debiased_cv"], row["debiased_cv_ci_low"], row["debiased_cv_ci_high"]
        )
        lines.append(
            f"| {row['label']} | {row['test_metric']:.3f} | {debiased} | {row['cv']:.1f} | "
            f"{p_text(row['p_holm_labels'])} |"
        )
    beyond = sorted(labels.loc[labels["beyond_noise"], "label"].unique())
    lines += [
        "",
        "- Labels whose clusters differ beyond sampling noise (at some n): "
        + (", ".join(beyond) if beyond else "none")
        + ".",
        "",
    ]
    return "\n".join(lines)


def slices_lines(slices: pd.DataFrame, method: str) -> list[str]:
    """The "Where it hurts" paragraph: ``method``'s slices at the largest n, held-out numbers.

    A slice is named when it ``underperforms`` (:func:`hetcv.slices.slice_summary`: for
    classification its excess failure beyond the model's recalibrated confidence is
    significant, for regression its failure gap); otherwise the paragraph says that no slice
    underperforms beyond noise.

    Parameters
    ----------
    slices : DataFrame
        The slices summary: ``method, n, slice, size, metric, rest_failure, gap, gap_low,
        gap_high, p_value, excess_gap, excess_low, excess_high, excess_p_value,
        underperforms, profile``.
    method : str
        ``slices.method``.

    Returns
    -------
    list of str
        Markdown lines, starting with the heading; none without slices.
    """
    if slices.empty:
        return []
    rows = slices[slices["method"] == method]
    largest = rows["n"].max()
    rows = rows[rows["n"] == largest].sort_values("slice")
    lines = [
        f"### Where it hurts (n = {largest}, {method} slices)",
        "",
        "Found on one half of each fold's held-out samples, measured on the other, then "
        "swapped; accuracy (1 − MSE / Var(target) for regression), the failure gap to the "
        "rest in points and, for classification, the excess gap beyond what the model's own "
        "recalibrated confidence predicts (hard images are expected to fail more; a slice is "
        "named when its excess is significant), each with a 95 % CI and a one-sided p-value.",
        "",
    ]
    for _, row in rows[rows["underperforms"]].iterrows():
        profile = f" It holds {row['profile']}." if row["profile"] else ""
        lines.append(
            f"- Slice {row['slice']}: about {row['size']:.0f} held-out samples per fold, metric "
            f"{row['metric']:.3f} against {1 - row['rest_failure']:.3f} for the rest; gap "
            f"{_gaps(row)}.{profile}"
        )
    if not rows["underperforms"].any() and len(rows):
        lines.append(
            "- No slice underperforms beyond noise: the worst one's held-out gap is "
            f"{_gaps(rows.iloc[0])}."
        )
    return lines


SLICE_GAP_COLUMNS = {
    "failure": ("gap", "gap_low", "gap_high", "p_value"),
    "excess": ("excess_gap", "excess_low", "excess_high", "excess_p_value"),
}


def _gaps(row: pd.Series) -> str:
    """``+20.0 points (95 % CI +12.0 to +28.0, p = 0.001)``, then the excess gap if any."""
    texts = []
    for kind, columns in SLICE_GAP_COLUMNS.items():
        gap, low, high, p_value = (row[column] for column in columns)
        if np.isfinite(gap):
            prefix = "; beyond its confidence " if kind == "excess" else ""
            texts.append(
                f"{prefix}{100 * gap:+.1f} points (95 % CI {100 * low:+.1f} to "
                f"{100 * high:+.1f}, p {'< 0.001' if p_value < 0.001 else '= ' + p_text(p_value)})"
            )
    return "".join(texts)


PLANNED = {"raw_cv": "raw CV", "debiased_cv": "debiased CV", "test_metric": "test"}


def planning_line(row: pd.Series, metric: str) -> str:
    """One sentence on how many samples a quantity needs to meet its target.

    Parameters
    ----------
    row : pandas.Series
        A row of the planning table: ``quantity, target, n_star, n_star_low, n_star_high,
        status, lack_of_fit_p, backtest_error``.
    metric : str
        The metric's label, for the test metric's target.

    Returns
    -------
    line : str
        E.g. "about 1,240 samples for raw CV < 5 % (95 %: 900–1,900; predicted; lack of fit
        p = 0.41) …"; where the curve does not fit, no n*, only the range of the curves the
        data allow.
    """
    quantity = row["quantity"]
    goal = (
        f"{metric} ≥ {row['target']:g}"
        if quantity == "test_metric"
        else f"{PLANNED[quantity]} < {row['target']:g} %"
    )
    if row["status"].startswith("not planned"):
        return f"- Planning {goal}: {row['status']}."
    high = "∞" if not np.isfinite(row["n_star_high"]) else f"{row['n_star_high']:,.0f}"
    smallest = row["grid"][0]  # the smallest observed n
    low = f"{row['n_star_low']:,.0f}" if row["n_star_low"] >= smallest else f"< {smallest:,.0f}"
    fit = (
        f"lack of fit p = {p_text(row['lack_of_fit_p'])}"
        if np.isfinite(row.get("lack_of_fit_p", np.nan))
        else "fit not checked"
    )
    backtest = (
        f"; fitted without n = {row['largest_n']:,.0f}, the curve missed it by "
        f"{row['backtest_error']:+.2f}"
        if np.isfinite(row["backtest_error"])
        else ""
    )
    if "no n*" in row["status"]:
        return (
            f"- Planning {goal}: {row['status']} ({fit}); the curves the data allow put it "
            f"between {low} and {high}{backtest}."
        )
    if row["status"] == "not reachable":
        return (
            f"- Planning: {goal} is not reachable: the curve levels off above it ({fit}){backtest}."
        )
    if not np.isfinite(row["n_star"]):
        return (
            f"- Planning: {goal} is not in sight: the fitted curve levels off at "
            f"{row['asymptote']:.3g}; if at all, beyond n ≈ {row['n_star_low']:,.0f} (95 %; "
            f"{fit}){backtest}."
        )
    return (
        f"- Planning: about {row['n_star']:,.0f} samples for {goal} (95 %: "
        f"{low}–{high}; {row['status']}; {fit}){backtest}."
    )


def _spread_cell(row: pd.Series, column: str) -> str:
    """:func:`spread_text` of a spread column (``debiased_cv``, ``error_cv``) of a CV row."""
    return spread_text(
        row[column], row[f"{column}_ci_low"], row[f"{column}_ci_high"], row[f"{column}_upper"]
    )


def _error_scale_line(row: pd.Series) -> str:
    """The high-accuracy reading: the spread of the clusters' error rates."""
    cv = _spread_cell(row, "error_cv")
    return (
        f"- The model is right {100 * row['test_metric']:.1f} % of the time at n = {row['n']}: "
        "there a CV of accuracy cannot show how unevenly it errs (error rates of 0.5 %, 1 %, 2 "
        "% and 4 % are a CV of accuracy of 1.5 %), so this verdict reads the error scale. The "
        f"clusters' true error rates vary with a CV of {cv} % (about "
        f"{100 * (1 - row['test_metric']):.1f} % errors on average)."
    )


def _over_represented(metadata: pd.DataFrame, n: int) -> str:
    """``; it holds 62 % site B against 30 % overall (…)`` of each fold's weakest, or nothing."""
    row = over_represented(metadata, n, WEAKEST)
    if row is None:
        return ""
    return (
        f"; it holds {row['share']:.0f} % {row['column']} {row['level']} against "
        f"{row['overall_share']:.0f} % overall (Cramér's V {row['effect']:.2f}, "
        f"p (Holm) {p_text(row['p_holm'])})"
    )
