"""Plotly figures for the explorer (no computation beyond laying out given numbers)."""
from __future__ import annotations

import textwrap

import numpy as np
import plotly.graph_objects as go


def _layout(fig: go.Figure, title: str, height: int = 280) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=40, r=10, t=40, b=40), template="plotly_white")
    return fig


def score_histogram(scores: np.ndarray, title: str = "Scores over the training set") -> go.Figure:
    return _layout(go.Figure(go.Histogram(x=scores, nbinsx=60, marker_color="#4c78a8")), title)


def class_mix(counts: np.ndarray, classes: list[str], title: str, groups: list[str] | None = None) -> go.Figure:
    """Bars per class; with ``groups`` (counts of shape (groups, classes)) stacked by group."""
    if groups is None:
        return _layout(go.Figure(go.Bar(x=classes, y=counts, marker_color="#f58518")), title)
    fig = go.Figure([go.Bar(name=g, x=classes, y=c, marker_color=color)
                     for g, c, color in zip(groups, counts, ("#f58518", "#4c78a8", "#54a24b", "#b279a2"))])
    fig.update_layout(barmode="stack", legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    fig = _layout(fig, title, 300)
    fig.update_layout(margin=dict(l=40, r=10, t=70, b=40))
    return fig


def credit_bars(groups: list[str], credit: np.ndarray, share: np.ndarray, title: str) -> go.Figure:
    """Each contributor's share of the credit for one output beside its share of the training set (%)."""
    fig = go.Figure([go.Bar(name="share of the credit", y=groups, x=100 * np.asarray(credit), orientation="h",
                            marker_color="#f58518"),
                     go.Bar(name="share of the training set", y=groups, x=100 * np.asarray(share), orientation="h",
                            marker_color="#9d9d9d")])
    fig.update_layout(barmode="group", xaxis=dict(ticksuffix=" %"), yaxis=dict(automargin=True),
                      legend=dict(orientation="h", y=-0.22, yanchor="top", x=0, xanchor="left"))
    lines = title.count("<br>")  # one line per credited contributor: the names never run off a phone's width
    fig = _layout(fig, title, 320 + 14 * lines)
    fig.update_layout(margin=dict(l=10, r=10, t=64 + 22 * lines, b=80))
    return fig


def lds_bars(rows: list[dict], split: str, labels: dict[str, str]) -> go.Figure:
    """LDS (%) per method × S as horizontal bars (one readable label per method, at any width) with the
    bootstrap 95 % interval as error bars; ``labels`` are the methods' display names, in the order every
    chart lists the methods (top to bottom)."""
    fig = go.Figure()
    present = {r["method"] for r in rows if r["split"] == split}
    order = [labels[m] for m in labels if m in present] + sorted(m for m in present if m not in labels)
    for S in sorted({r["S"] for r in rows if r["split"] == split}, key=lambda s: (s is None, s or 0)):
        sel = [r for r in rows if r["split"] == split and r["S"] == S]
        fig.add_bar(name="no timesteps" if S is None else f"S = {S}", orientation="h",
                    y=[labels.get(r["method"], r["method"]) for r in sel], x=[100 * r["lds"] for r in sel],
                    error_x=dict(type="data", symmetric=False, array=[100 * (r["ci"][1] - r["lds"]) for r in sel],
                                 arrayminus=[100 * (r["lds"] - r["ci"][0]) for r in sel]))
    fig.update_layout(barmode="group", xaxis_title="LDS (%)", bargap=0.25,
                      yaxis=dict(categoryorder="array", categoryarray=order[::-1], dtick=1, automargin=True),
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0, xanchor="left"))
    fig = _layout(fig, f"LDS, {split} images", 120 + 26 * len(order))
    fig.update_layout(margin=dict(l=10, r=10, t=110, b=50),  # the title below the page's block label
                      title=dict(yref="container", y=1, yanchor="top", pad=dict(t=36), x=0.98, xanchor="right"))
    return fig


def message(text: str) -> go.Figure:
    """An empty figure that says why there is nothing to plot, in short lines (a phone's plot is 340 px wide)."""
    fig = go.Figure()
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "<br>".join(textwrap.wrap(text, 30)), 200)


def lds_scatter(pred: np.ndarray, actual: np.ndarray, rho: float, title: str) -> go.Figure:
    fig = go.Figure(go.Scatter(x=pred, y=actual, mode="markers", marker=dict(size=7, color="#54a24b")))
    fig.update_layout(xaxis_title="predicted loss (Σ −score over the half)", yaxis_title="measured loss of the retrained model")
    fig = _layout(fig, f"{title}<br>Spearman ρ = {rho:.2f}", 360)
    fig.update_layout(margin=dict(l=60, r=10, t=60, b=50))
    return fig


def removal_order(methods, labels: dict[str, str], reference: str = "random") -> list[str]:
    """The removals in the methods' display order, the ``reference`` removal last (plot and image rows alike)."""
    return [m for m in labels if m in methods and m != reference] + [reference] * (reference in methods)


def counterfactual_points(methods: dict[str, dict], labels: dict[str, str], reference: str = "random") -> go.Figure:
    """The counterfactual per removal: each generated image's change after retraining without the removed
    images, as one point per image, in pixel L2 (higher: moved more) and embedding cosine (lower: moved
    more), with each removal's median as a bar mark and the ``reference`` removal's median as a dashed
    line across. ``methods``: removal key → {"l2": [...], "cosine": [...]}; ``labels`` as in ``lds_bars``."""
    from plotly.subplots import make_subplots
    order = removal_order(methods, labels, reference)
    names = [labels.get(m, m) for m in order]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("pixel L2 (↑ moved more)",
                                                        "cosine (↓ moved more)"), horizontal_spacing=0.14)
    for col, key in enumerate(("l2", "cosine"), start=1):
        for m, name in zip(order, names):
            v = np.asarray(methods[m][key], float)
            color = "#9d9d9d" if m == reference else "#4c78a8"
            fig.add_trace(go.Scatter(x=[name] * len(v), y=v, mode="markers", showlegend=False,
                                     marker=dict(size=7, color=color, opacity=0.7),
                                     hovertemplate=f"{name}<br>{key} %{{y:.3f}}<extra></extra>"), row=1, col=col)
            fig.add_trace(go.Scatter(x=[name], y=[float(np.median(v))], mode="markers", showlegend=False,
                                     marker=dict(symbol="line-ew-open", size=26, color="#e45756",
                                                 line=dict(width=3, color="#e45756")),
                                     hovertemplate=f"{name}<br>median %{{y:.3f}}<extra></extra>"), row=1, col=col)
        if reference in methods:
            fig.add_hline(y=float(np.median(methods[reference][key])), line_dash="dash", line_color="#9d9d9d",
                          row=1, col=col)
        fig.update_xaxes(categoryorder="array", categoryarray=names, tickangle=-40, row=1, col=col)
    fig = _layout(fig, "Change after removal<br><sup>red: median · dashed: random removal</sup>", 440)
    fig.update_layout(margin=dict(l=50, r=10, t=90, b=130))
    fig.update_annotations(font_size=12)
    return fig
