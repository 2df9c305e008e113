"""PNG figures (matplotlib, Agg backend): limited-data curves (paper 1 Fig. 2), per-teacher
bars (paper 2 Fig. 3) and cost vs accuracy. Missing values are skipped, never invented."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from east.report.runs import CI_MIN_SEEDS, NO_TEACHER, Group, Stat, primary_metrics
from east.report.tables import (
    SYSTEM_ORDER,
    dataset_label,
    student_label,
    system_label,
    teacher_label,
)

__all__ = [
    "CostPoint",
    "build_cost_figure",
    "build_limited_data_figure",
    "build_teacher_bars_figure",
    "cost_figure",
    "figure_caption",
    "limited_data_figure",
    "teacher_bars_figure",
]

# paper 2 Fig. 3: grey Teacher_LR, orange FitNet, green distance correlation, hatched = +Linear
BAR_STYLE = {
    "teacher_lr": ("#9e9e9e", ""),
    "east_fitnet": ("#f28e2b", ""),
    "east_fitnet_linear": ("#f28e2b", "//"),
    "east_dc": ("#59a14f", ""),
    "east_dc_linear": ("#59a14f", "//"),
}


CAPTIONS = {
    "teachers_": "Paper 2 Fig. 3 style. Bars start at 0 and show the mean over seeds (value and "
    "n printed on each bar); black dots are single seeds; whiskers the 95 % CI of the mean "
    "(Student's t) where there are at least 3 seeds; the red dashed line is the baseline (its "
    "95 % CI shaded). The paper zooms its axis; we do not, so the gaps look as large as "
    "they are.",
    "limited_data_": "Paper 1 Fig. 2 style: a trend, so the y axis is zoomed to the data "
    "(it does not start at 0). Points: mean over seeds (n in the legend); faint dots: single "
    "seeds; whiskers: 95 % CI (Student's t) where there are at least 3 seeds.",
    "cost_vs_": "The test metric (mean over seeds; whiskers: 95 % CI where at least 3 seeds; "
    "n beside each point) against four costs; a cost that was not recorded is not drawn.",
}


def figure_caption(stem: str) -> str:
    """The caption that says how to read a figure (by its file stem)."""
    return next((text for prefix, text in CAPTIONS.items() if stem.startswith(prefix)), "")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _system_rank(system: str) -> int:
    return SYSTEM_ORDER.index(system) if system in SYSTEM_ORDER else len(SYSTEM_ORDER)


def _metric_for(groups: Sequence[Group]) -> str | None:
    """The first of the dataset's table metrics that the groups have."""
    if not groups:
        return None
    g0 = groups[0]
    for metric in primary_metrics(g0.dataset, g0.task):
        if any(g.stat(metric) is not None for g in groups):
            return metric
    return None


def _clips_note(stats: Sequence[Stat]) -> str:
    counts = sorted({c for s in stats for c in s.clips})
    if not counts:
        return "test clips per seed not recorded"
    text = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"
    return f"{text} test clips per seed"


def _seeds_range(stats: Sequence[Stat]) -> str:
    low, high = min(s.n for s in stats), max(s.n for s in stats)
    return f"n={low}" if low == high else f"n={low}–{high}"


def _footer(fig: Any, stats: Sequence[Stat], what: str, dots: bool = True) -> float:
    """Say on the figure itself how many seeds and clips stand behind each mark, wrapped to
    the figure's width; returns the share of the figure's height the text takes."""
    text = (
        f"{what} mean over n seeds ({_seeds_range(stats)}; {_clips_note(stats)}); "
        + ("dots: single seeds; " if dots else "")
        + f"whiskers: 95 % CI (Student's t) where n ≥ {CI_MIN_SEEDS}."
    )
    width_in, height_in = fig.get_size_inches()
    lines = textwrap.wrap(text, max(40, int(width_in * 17)))  # ~17 characters/inch at 7 pt
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, color="#444", ha="left", va="bottom")
    return (len(lines) * 7 * 1.35 / 72 + 0.12) / height_in


def _ci_err(stats: Sequence[Stat]) -> list[list[float]]:
    """Asymmetric-form error bars from the CIs (0 where a stat has none)."""
    lows, highs = [], []
    for s in stats:
        ci = s.ci95
        lows.append(0.0 if ci is None else s.mean - ci[0])
        highs.append(0.0 if ci is None else ci[1] - s.mean)
    return [lows, highs]


def _save(fig: Any, path: Path) -> None:
    plt = _pyplot()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def limited_data_figure(groups: Sequence[Group], dataset: str, student: str, path: Path) -> bool:
    """Write :func:`build_limited_data_figure` to ``path``; ``False`` when it has nothing."""
    fig = build_limited_data_figure(groups, dataset, student)
    if fig is None:
        return False
    _save(fig, path)
    return True


def build_limited_data_figure(groups: Sequence[Group], dataset: str, student: str) -> Any:
    """Metric vs fraction of the training data, one panel per teacher, one line per system
    (the baseline, which has no teacher, is drawn in every panel). A line plot of a trend,
    so its y axis need not start at zero; every seed is drawn as a dot."""
    mine = [g for g in groups if (g.dataset, g.student) == (dataset, student)]
    if not any(g.train_fraction < 1.0 for g in mine):
        return None
    metric = _metric_for(mine)
    if metric is None:
        return None
    limited = {(g.system, g.teacher) for g in mine if g.train_fraction < 1.0}
    teachers = sorted({t for _, t in limited if t != NO_TEACHER}) or [NO_TEACHER]
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(teachers), figsize=(max(6.0, 4.6 * len(teachers)), 4.2), sharey=True, squeeze=False
    )
    shown: list[Stat] = []
    for ax, teacher in zip(axes[0], teachers, strict=True):
        systems = sorted({s for s, t in limited if t in (teacher, NO_TEACHER)}, key=_system_rank)
        for system in systems:
            t = NO_TEACHER if system == "baseline" else teacher
            points = sorted(
                (g.train_fraction, stat)
                for g in mine
                if (g.system, g.teacher) == (system, t) and (stat := g.stat(metric)) is not None
            )
            if not points:
                continue
            stats = [s for _, s in points]
            shown += stats
            xs = [100 * f for f, _ in points]
            line = ax.errorbar(
                xs,
                [s.mean for s in stats],
                yerr=_ci_err(stats),
                marker="o",
                linestyle="--" if system == "baseline" else "-",
                capsize=3,
                label=f"{system_label(system)} ({_seeds_range(stats)})",
            )
            color = line[0].get_color()
            for x, s in zip(xs, stats, strict=True):
                # beside the point, not on it: the whisker would hide them
                ax.scatter(
                    [x + 1.5] * len(s.values), s.values, s=8, color=color, alpha=0.5, zorder=3
                )
        ax.set_title(teacher_label(teacher))
        ax.set_xlabel("training data (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(metric)
    fig.suptitle(
        f"Limited training data — {dataset_label(dataset)} ({student_label(student)})",
        fontsize=10,
    )
    bottom = _footer(fig, shown, "Each point:")
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def teacher_bars_figure(groups: Sequence[Group], dataset: str, student: str, path: Path) -> bool:
    """Write :func:`build_teacher_bars_figure` to ``path``; ``False`` when it has nothing."""
    fig = build_teacher_bars_figure(groups, dataset, student)
    if fig is None:
        return False
    _save(fig, path)
    return True


def _bar_stats(
    groups: Sequence[Group], systems: Sequence[str], teachers: Sequence[str], metric: str
) -> dict[tuple[str, str], Stat]:
    out = {}
    for g in groups:
        if g.system in systems and g.teacher in teachers and (s := g.stat(metric)) is not None:
            out[(g.system, g.teacher)] = s
    return out


def build_teacher_bars_figure(groups: Sequence[Group], dataset: str, student: str) -> Any:
    """Paper 2 Fig. 3 style: per teacher, one bar per system, the baseline as a dashed line.

    Unlike the paper, the bars start at zero (a zoomed axis makes a 1-point gain look like
    a doubling); the small differences stay readable from the value printed on every bar,
    the seeds drawn as dots and the 95 % CI whiskers."""
    mine = [
        g
        for g in groups
        if (g.dataset, g.student) == (dataset, student) and g.train_fraction == 1.0
    ]
    metric = _metric_for(mine)
    with_teacher = [g for g in mine if g.teacher != NO_TEACHER and g.stat(metric or "")]
    if metric is None or not with_teacher:
        return None
    teachers = sorted({g.teacher for g in with_teacher})
    systems = sorted({g.system for g in with_teacher}, key=_system_rank)
    stats = _bar_stats(with_teacher, systems, teachers, metric)
    plt = _pyplot()
    width = 0.8 / max(len(systems), 2)  # a lone bar as wide as one of two, not a wall
    start = -width * len(systems) / 2
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(teachers) * max(1, len(systems) / 3)), 4.6))
    for i, system in enumerate(systems):
        placed = [
            (j + start + width * (i + 0.5), stats[(system, t)])
            for j, t in enumerate(teachers)
            if (system, t) in stats
        ]
        if not placed:
            continue
        xs, bar_stats = [x for x, _ in placed], [s for _, s in placed]
        color, hatch = BAR_STYLE.get(system, (None, ""))
        bars = ax.bar(
            xs,
            [s.mean for s in bar_stats],
            width=width * 0.95,
            yerr=_ci_err(bar_stats),
            capsize=2,
            color=color,
            hatch=hatch,
            edgecolor="black",
            linewidth=0.5,
            label=system_label(system),
        )
        for x, s, bar in zip(xs, bar_stats, bars, strict=True):
            ax.scatter([x] * len(s.values), s.values, s=7, color="black", zorder=3)
            top = s.ci95[1] if s.ci95 is not None else max(s.values)
            ax.annotate(
                f"{s.mean:.3f}\nn={s.n}",
                (bar.get_x() + bar.get_width() / 2, top),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=6,
            )
    shown = list(stats.values())
    baseline = next((g for g in mine if g.system == "baseline"), None)
    base_stat = baseline.stat(metric) if baseline is not None else None
    if base_stat is not None:
        shown.append(base_stat)
        ax.axhline(
            base_stat.mean,
            color="red",
            linestyle="--",
            linewidth=1.2,
            label=f"Baseline {base_stat.mean:.3f} (n={base_stat.n})",
        )
        if base_stat.ci95 is not None:
            ax.axhspan(*base_stat.ci95, color="red", alpha=0.1, linewidth=0)
    ax.set_xticks(range(len(teachers)), [teacher_label(t) for t in teachers])
    values = [v for s in shown for v in (*s.values, *(s.ci95 or ()))]
    top = max([0.0, *values])
    ax.set_ylim(min([0.0, *values]), top * 1.18 if top > 0 else 1.0)  # room for the labels
    ax.set_ylabel(metric)
    ax.set_title(f"{dataset_label(dataset)} — {student_label(student)}", fontsize=10)
    # outside the axes: inside, the legend hides the tops of the bars
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(axis="y", alpha=0.3)
    bottom = _footer(fig, shown, "Bars from 0:")
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


@dataclass
class CostPoint:
    system: str
    teacher: str
    metric: float
    extraction_s: float | None = None
    cache_bytes: float | None = None
    student_params: float | None = None
    it_per_s: float | None = None
    stat: Stat | None = None  # the seeds behind ``metric`` (n, clips, CI)


COST_AXES = (
    ("extraction_s", "teacher extraction time (s)", True),
    ("cache_bytes", "teacher cache size (bytes)", True),
    ("student_params", "student parameters", True),
    ("it_per_s", "training iterations / s", False),
)


def cost_figure(points: Sequence[CostPoint], metric: str, title: str, path: Path) -> bool:
    """Write :func:`build_cost_figure` to ``path``; ``False`` when there are no points."""
    fig = build_cost_figure(points, metric, title)
    if fig is None:
        return False
    _save(fig, path)
    return True


def _point_label(p: CostPoint) -> str:
    name = "" if p.teacher == NO_TEACHER else teacher_label(p.teacher)
    n = f"n={p.stat.n}" if p.stat is not None else ""
    return ", ".join(x for x in (name, n) if x)


def build_cost_figure(points: Sequence[CostPoint], metric: str, title: str) -> Any:
    """The test metric against four costs; a panel with no known values says so."""
    if not points:
        return None
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter

    systems = sorted({p.system for p in points}, key=_system_rank)
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(systems)}
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4), sharey=True)
    for ax, (attr, label, log) in zip(axes, COST_AXES, strict=True):
        known = [(getattr(p, attr), p) for p in points if getattr(p, attr) is not None]
        for x, p in known:  # colour = system, text = teacher and seeds
            err = _ci_err([p.stat]) if p.stat is not None and p.stat.ci95 else None
            ax.errorbar([x], [p.metric], yerr=err, fmt="o", ms=5, capsize=2, color=colors[p.system])
            if text := _point_label(p):
                ax.annotate(
                    text, (x, p.metric), fontsize=6, xytext=(3, 3), textcoords="offset points"
                )
        values = [x for x, _ in known]
        # log only where the values span a decade: below that matplotlib labels every minor
        # tick (1.05×10², 1.1×10², …) and the labels run into each other
        if values and log and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useOffset=False)
        if not known:
            ax.text(
                0.5,
                0.5,
                "not recorded",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=colors[s], label=system_label(s))
        for s in systems
    ]
    fig.suptitle(title)
    stats = [p.stat for p in points if p.stat is not None]
    bottom = _footer(fig, stats, "Each point:", dots=False) if stats else 0.0
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 6),
        fontsize=7,
        bbox_to_anchor=(0.5, bottom),
    )
    fig.tight_layout(rect=(0, bottom + 0.08, 1, 1))
    return fig
