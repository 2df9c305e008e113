"""PNG figures (matplotlib, Agg backend): limited-data curves (paper 1 Fig. 2), per-teacher
bars (paper 2 Fig. 3) and cost vs accuracy. Missing values are skipped, never invented."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from east.report.runs import NO_TEACHER, Group, primary_metrics
from east.report.tables import (
    SYSTEM_ORDER,
    dataset_label,
    student_label,
    system_label,
    teacher_label,
)

__all__ = [
    "CostPoint",
    "cost_figure",
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


def limited_data_figure(groups: Sequence[Group], dataset: str, student: str, path: Path) -> bool:
    """Metric vs fraction of the training data, one panel per teacher, one line per system
    (the baseline, which has no teacher, is drawn in every panel)."""
    mine = [g for g in groups if (g.dataset, g.student) == (dataset, student)]
    if not any(g.train_fraction < 1.0 for g in mine):
        return False
    metric = _metric_for(mine)
    if metric is None:
        return False
    limited = {(g.system, g.teacher) for g in mine if g.train_fraction < 1.0}
    teachers = sorted({t for _, t in limited if t != NO_TEACHER}) or [NO_TEACHER]
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(teachers), figsize=(4.2 * len(teachers), 3.6), sharey=True, squeeze=False
    )
    for ax, teacher in zip(axes[0], teachers, strict=True):
        systems = sorted({s for s, t in limited if t in (teacher, NO_TEACHER)}, key=_system_rank)
        for system in systems:
            t = NO_TEACHER if system == "baseline" else teacher
            points = sorted(
                (g.train_fraction, g.stat(metric))
                for g in mine
                if (g.system, g.teacher) == (system, t) and g.stat(metric) is not None
            )
            if not points:
                continue
            xs = [100 * f for f, _ in points]
            ys = [s.mean for _, s in points]
            errs = [s.std or 0.0 for _, s in points]
            style = "--" if system == "baseline" else "-"
            ax.errorbar(
                xs,
                ys,
                yerr=errs,
                marker="o",
                linestyle=style,
                capsize=3,
                label=system_label(system),
            )
        ax.set_title(teacher_label(teacher))
        ax.set_xlabel("training data (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(metric)
    fig.suptitle(f"Limited training data — {dataset_label(dataset)} ({student_label(student)})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def teacher_bars_figure(groups: Sequence[Group], dataset: str, student: str, path: Path) -> bool:
    """Paper 2 Fig. 3 style: per teacher, one bar per system (± std), the baseline as a
    dashed line."""
    mine = [
        g
        for g in groups
        if (g.dataset, g.student) == (dataset, student) and g.train_fraction == 1.0
    ]
    metric = _metric_for(mine)
    with_teacher = [g for g in mine if g.teacher != NO_TEACHER and g.stat(metric or "")]
    if metric is None or not with_teacher:
        return False
    teachers = sorted({g.teacher for g in with_teacher})
    systems = sorted({g.system for g in with_teacher}, key=_system_rank)
    plt = _pyplot()
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(teachers) * max(1, len(systems) / 3)), 3.8))
    lows = []
    for i, system in enumerate(systems):
        xs, ys, errs = [], [], []
        for j, teacher in enumerate(teachers):
            group = next(
                (g for g in with_teacher if (g.system, g.teacher) == (system, teacher)), None
            )
            stat = group.stat(metric) if group is not None else None
            if stat is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(stat.mean)
            errs.append(stat.std or 0.0)
            lows.append(stat.mean - (stat.std or 0.0))
        color, hatch = BAR_STYLE.get(system, (None, ""))
        ax.bar(
            xs,
            ys,
            width=width * 0.95,
            yerr=errs,
            capsize=2,
            color=color,
            hatch=hatch,
            edgecolor="black",
            linewidth=0.5,
            label=system_label(system),
        )
    baseline = next((g for g in mine if g.system == "baseline"), None)
    base_stat = baseline.stat(metric) if baseline is not None else None
    if base_stat is not None:
        ax.axhline(base_stat.mean, color="red", linestyle="--", linewidth=1.2, label="Baseline")
        lows.append(base_stat.mean)
    ax.set_xticks(range(len(teachers)), [teacher_label(t) for t in teachers])
    if lows:  # zoom in like the paper: differences are a few points
        top = max(ax.get_ylim()[1], 0.0)
        ax.set_ylim(max(0.0, min(lows) - 0.05 * max(abs(top), 1e-3)), top)
    ax.set_ylabel(metric)
    ax.set_title(f"{dataset_label(dataset)} — {student_label(student)}")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


@dataclass
class CostPoint:
    system: str
    teacher: str
    metric: float
    extraction_s: float | None = None
    cache_bytes: float | None = None
    student_params: float | None = None
    it_per_s: float | None = None


COST_AXES = (
    ("extraction_s", "teacher extraction time (s)", True),
    ("cache_bytes", "teacher cache size (bytes)", True),
    ("student_params", "student parameters", True),
    ("it_per_s", "training iterations / s", False),
)


def cost_figure(points: Sequence[CostPoint], metric: str, title: str, path: Path) -> bool:
    """The test metric against four costs; a panel with no known values says so."""
    if not points:
        return False
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter

    systems = sorted({p.system for p in points}, key=_system_rank)
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(systems)}
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2), sharey=True)
    for ax, (attr, label, log) in zip(axes, COST_AXES, strict=True):
        known = [(getattr(p, attr), p) for p in points if getattr(p, attr) is not None]
        for x, p in known:  # colour = system, text = teacher
            ax.scatter([x], [p.metric], s=24, color=colors[p.system])
            if p.teacher != NO_TEACHER:
                ax.annotate(
                    teacher_label(p.teacher),
                    (x, p.metric),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
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
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
