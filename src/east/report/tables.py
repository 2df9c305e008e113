"""Tables laid out like the papers' tables, ours (mean ± std over seeds) beside the published.

Which table a group of runs lands in is decided by (dataset, student), as in the papers:

=================================  ===================================  =====================
table                              runs                                 published numbers
=================================  ===================================  =====================
paper 1 Table 1 (OpenMIC / MTAT)   openmic + cp_resnet, mtat + mobile   ding2023 table1
paper 2 Fig. 3 (as a table)        mtat + short_chunk_cnn / harmonic    none (a figure)
paper 2 Table 1 (generalizability) mtat + short_chunk_cnn, eval_openmic ding2024 table1
paper 2 Table 3 (ESC-50 / FMA)     esc50 / fma_small + short_chunk_cnn  ding2024 table3
paper 1 Fig. 2 (as a table)        any train_fraction < 1               none (a figure)
complexity (both Tables 2)         complexity.json / student registry   ding2023/2024 table2
other results                      everything else                      —
=================================  ===================================  =====================

Teachers that are not the papers' (the offline taggers, a bring-your-own teacher) are marked
"(ext.)" — our extension, never compared with a published number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from east.experiments import GENERALIZABILITY, PAPER1, PAPER2, Experiment
from east.report.published import PublishedResults
from east.report.runs import NO_TEACHER, Group, Stat, primary_metrics
from east.systems import SYSTEMS

__all__ = [
    "DATASET_LABELS",
    "SPECS",
    "STUDENT_LABELS",
    "SYSTEM_LABELS",
    "SYSTEM_ORDER",
    "TEACHER_LABELS",
    "Cell",
    "SystemTableSpec",
    "Table",
    "build_complexity_table",
    "build_limited_data_tables",
    "build_other_tables",
    "build_system_table",
    "build_tables",
    "ci_text",
    "dataset_label",
    "is_extension",
    "student_label",
    "support_text",
    "system_label",
    "teacher_label",
]

SYSTEM_ORDER = list(SYSTEMS)  # the papers' order, as east.systems registers them
SYSTEM_LABELS = {
    **{name: info.label for name, info in SYSTEMS.items()},
    # rows that exist only in the papers
    "baseline_reported": "CP ResNet* (reported in [5])",
    "baseline_shake_shake_reported": "SS CP ResNet* (reported in [5])",
    "fcn_reimplementation": "FCN† (re-implementation)",
}
TEACHER_LABELS = {
    NO_TEACHER: "None",
    "vggish": "VGGish",
    "openl3": "OpenL3",
    "passt": "PaSST",
    "panns": "PANNs",
    "mule": "MULE",
    "discogs": "DisCogs",
}
MODEL_LABELS = {
    **TEACHER_LABELS,
    "mobile_fcn": "Mobile FCN",
    "cp_resnet": "CP ResNet",
    "harmonic_cnn": "HCNN",
    "short_chunk_cnn": "SC-CNN",
}
STUDENT_LABELS = {
    k: MODEL_LABELS[k] for k in ("mobile_fcn", "cp_resnet", "harmonic_cnn", "short_chunk_cnn")
}
DATASET_LABELS = {
    "openmic": "OpenMIC",
    "mtat": "MagnaTagATune",
    "esc50": "ESC-50",
    "fma_small": "FMA-small",
}


def system_label(system: str) -> str:
    return SYSTEM_LABELS.get(system, system)


def teacher_label(teacher: str) -> str:
    """Paper teachers by their papers' names; any other teacher is marked as our extension."""
    return TEACHER_LABELS.get(teacher) or f"{teacher} (ext.)"


def is_extension(teacher: str) -> bool:
    return teacher not in TEACHER_LABELS


def dataset_label(dataset: str) -> str:
    return DATASET_LABELS.get(dataset, dataset)


def student_label(student: str) -> str:
    return STUDENT_LABELS.get(student, student)


def support_text(stat: Stat, long: bool = False) -> str:
    """How many seeds and test clips per seed stand behind ``stat``: ``n=3×10`` (``long``:
    ``3 seeds × 10 clips``); the clips are left out where no run recorded them."""
    clips = stat.clips_text
    if long:
        seeds = f"{stat.n} seed{'s' if stat.n != 1 else ''}"
        return seeds if clips is None else f"{seeds} × {clips} clips"
    return f"n={stat.n}" if clips is None else f"n={stat.n}×{clips}"


def ci_text(stat: Stat, digits: int = 3) -> str | None:
    """``0.835–0.849``: the 95 % t interval of the mean, ``None`` below three seeds."""
    ci = stat.ci95
    return None if ci is None else f"{ci[0]:.{digits}f}–{ci[1]:.{digits}f}"


def _order(items: Sequence[str], preferred: Sequence[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(preferred)}
    return sorted(dict.fromkeys(items), key=lambda x: (rank.get(x, len(rank)), x))


# ------------------------------------------------------------------------------ the model


@dataclass
class Cell:
    ours: Stat | None = None
    paper: float | None = None

    @property
    def empty(self) -> bool:
        return self.ours is None and self.paper is None


@dataclass
class Table:
    """A rectangular table: rows × columns of :class:`Cell`; columns are (group, metric)."""

    key: str  # file stem
    title: str
    caption: str
    row_header: str
    rows: list[tuple[str, str]]  # (id, label)
    columns: list[tuple[str, str, str]]  # (group id, group label, metric)
    cells: dict[tuple[str, int], Cell] = field(default_factory=dict)
    digits: int = 3
    has_paper: bool = True
    seeded: bool = True  # cells are means over seeds (the complexity table: one measurement)

    def cell(self, row: str, col: int) -> Cell:
        return self.cells.get((row, col), Cell())

    def column_label(self, col: int) -> str:
        _, group, metric = self.columns[col]
        return f"{group} {metric}".strip()

    def format_value(self, value: float | None) -> str:
        return "—" if value is None else f"{value:.{self.digits}f}"

    def format_cell(self, cell: Cell) -> str:
        if cell.empty:
            return "—"
        text = "—"
        if cell.ours is not None:
            text = self.format_value(cell.ours.mean)
            if cell.ours.std is not None:
                text += f" ± {self.format_value(cell.ours.std)}"
        if cell.paper is not None:
            text += f" [{self.format_value(cell.paper)}]"
        if self.seeded and cell.ours is not None:
            text += f" ({self.support(cell.ours)})"
        return text

    def support(self, stat: Stat, long: bool = False) -> str:
        """Seeds × clips, then the 95 % CI where there is one."""
        ci = ci_text(stat, self.digits)
        sep = " · " if long else "; "
        label = "95 % CI " if long else "CI "
        return support_text(stat, long) + ("" if ci is None else f"{sep}{label}{ci}")

    def prune(self) -> Table:
        """Drop rows and columns without any value."""
        keep_cols = [
            c
            for c in range(len(self.columns))
            if any(not self.cell(r, c).empty for r, _ in self.rows)
        ]
        keep_rows = [
            (r, label)
            for r, label in self.rows
            if any(not self.cell(r, c).empty for c in keep_cols)
        ]
        cells = {
            (r, new): self.cell(r, old) for new, old in enumerate(keep_cols) for r, _ in keep_rows
        }
        self.columns = [self.columns[c] for c in keep_cols]
        self.rows = keep_rows
        self.cells = {k: v for k, v in cells.items() if not v.empty}
        return self

    @property
    def has_ours(self) -> bool:
        return any(c.ours is not None for c in self.cells.values())

    # --------------------------------------------------------------- renderings

    def to_markdown(self) -> str:
        lines = [f"### {self.title}", "", self.caption, ""]
        header = [self.row_header, *(self.column_label(c) for c in range(len(self.columns)))]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row, label in self.rows:
            values = [self.format_cell(self.cell(row, c)) for c in range(len(self.columns))]
            lines.append("| " + " | ".join([label, *values]) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """Wide CSV with the markdown's layout: per column mean, std, n and the paper value."""
        out = io.StringIO()
        writer = csv.writer(out)
        header = [self.row_header]
        for c in range(len(self.columns)):
            name = self.column_label(c)
            header += [name, f"{name} std", f"{name} n"]
            if self.seeded:
                header += [f"{name} clips", f"{name} ci95 low", f"{name} ci95 high"]
            if self.has_paper:
                header.append(f"{name} paper")
        writer.writerow(header)
        for row, label in self.rows:
            line: list[Any] = [label]
            for c in range(len(self.columns)):
                cell = self.cell(row, c)
                ours = cell.ours
                line += [
                    "" if ours is None else repr(round(ours.mean, 6)),
                    "" if ours is None or ours.std is None else repr(round(ours.std, 6)),
                    "" if ours is None else ours.n,
                ]
                if self.seeded:
                    line += _support_columns(ours)
                if self.has_paper:
                    line.append("" if cell.paper is None else cell.paper)
            writer.writerow(line)
        return out.getvalue()


def _support_columns(stat: Stat | None) -> list[Any]:
    """clips per seed, 95 % CI low and high ('' where unknown or under three seeds)."""
    if stat is None:
        return ["", "", ""]
    ci = stat.ci95
    clips = stat.clips_text or ""
    if ci is None:
        return [clips, "", ""]
    return [clips, repr(round(ci[0], 6)), repr(round(ci[1], 6))]


# ------------------------------------------------------------------------------ builders

CAPTION_STATS = (
    "Ours: mean ± sample standard deviation over seeds (no ± with one seed); "
    "[published value] where the paper gives one; — where neither exists. "
    "(n=seeds×test clips per seed; CI = 95 % confidence interval of the mean, Student's t, "
    "shown where there are at least 3 seeds.)"
)


@dataclass(frozen=True)
class SystemTableSpec:
    key: str
    title: str
    dataset: str
    student: str
    metrics: tuple[str, ...]
    systems: tuple[str, ...]
    teachers: tuple[str, ...]
    paper: str | None = None
    table: str | None = None
    published_dataset: str | None = None  # defaults to dataset
    eval_tag: str | None = None  # read metrics from eval_<tag>.json instead of the test split
    paper_rows: tuple[str, ...] = ()  # rows that exist only in the paper
    row_aliases: tuple[tuple[str, str], ...] = ()  # our system → the paper's row for it
    note: str = ""


def _spec(
    exp: Experiment, key: str, title: str, metrics: tuple[str, ...], **kw: Any
) -> SystemTableSpec:
    """The table of one experiment (east.experiments): its systems, its teachers and the
    paper's other teachers as columns."""
    kw.setdefault("teachers", exp.table_teachers)
    return SystemTableSpec(key, title, exp.dataset, exp.student, metrics, exp.systems, **kw)


_OPENMIC, _MTAT = PAPER1
_MTAT_SCCNN, _MTAT_HCNN, _ESC50, _FMA = PAPER2
SPECS: tuple[SystemTableSpec, ...] = (
    _spec(
        _OPENMIC,
        "paper1_table1_openmic",
        "Paper 1 Table 1 — OpenMIC (CP ResNet)",
        ("mAP", "F1"),
        paper="ding2023",
        table="table1",
        paper_rows=("baseline_shake_shake_reported",),
        row_aliases=(("baseline", "baseline_reported"),),
        note="The paper's baseline row is CP ResNet as reported in [5]; F1 is the macro F1 at "
        "0.4 over positive and negative classes.",
    ),
    _spec(
        _MTAT,
        "paper1_table1_mtat",
        "Paper 1 Table 1 — MagnaTagATune (Mobile FCN)",
        ("mAP", "ROC-AUC"),
        paper="ding2023",
        table="table1",
        paper_rows=("fcn_reimplementation",),
    ),
    _spec(
        _MTAT_SCCNN,
        "paper2_fig3_sccnn",
        "Paper 2 Fig. 3 (a) as a table — MagnaTagATune, SC-CNN",
        ("mAP",),
        note="Paper 2 publishes these results only as a bar chart (no numbers).",
    ),
    _spec(
        _MTAT_HCNN,
        "paper2_fig3_hcnn",
        "Paper 2 Fig. 3 (b) as a table — MagnaTagATune, HCNN",
        ("mAP",),
        note="Paper 2 publishes these results only as a bar chart (no numbers).",
    ),
    _spec(
        GENERALIZABILITY.source,
        "paper2_table1_generalizability",
        "Paper 2 Table 1 — generalizability (trained on MagnaTagATune, tested on OpenMIC)",
        ("mAP",),
        teachers=("none", *GENERALIZABILITY.teachers),
        paper="ding2024",
        table="table1",
        published_dataset="mtat_to_openmic",
        eval_tag=GENERALIZABILITY.target,
        note="mAP over the instrument labels shared by the two datasets "
        f"(configs/{GENERALIZABILITY.label_map}), from `east eval --label-map`.",
    ),
    _spec(
        _ESC50,
        "paper2_table3_esc50",
        "Paper 2 Table 3 — ESC-50 (SC-CNN)",
        ("accuracy",),
        paper="ding2024",
        table="table3",
    ),
    _spec(
        _FMA,
        "paper2_table3_fma_small",
        "Paper 2 Table 3 — FMA-small (SC-CNN)",
        ("accuracy",),
        paper="ding2024",
        table="table3",
    ),
)


def build_system_table(
    spec: SystemTableSpec, groups: Sequence[Group], published: PublishedResults
) -> Table | None:
    """Rows = systems, columns = teacher × metric; ``None`` when none of our runs fit."""
    mine = [
        g
        for g in groups
        if g.dataset == spec.dataset and g.student == spec.student and g.train_fraction == 1.0
    ]
    if spec.eval_tag is not None:
        mine = [g for g in mine if any(spec.eval_tag in r.evals for r in g.runs)]
    if not mine:
        return None
    by_key = {(g.system, g.teacher): g for g in mine}
    aliases = dict(spec.row_aliases)
    teachers = _order([*spec.teachers, *(g.teacher for g in mine)], spec.teachers)
    systems = _order([*spec.systems, *(g.system for g in mine)], SYSTEM_ORDER)
    row_ids = [*systems, *spec.paper_rows]
    table = Table(
        key=spec.key,
        title=spec.title,
        caption=" ".join(x for x in (CAPTION_STATS, spec.note) if x),
        row_header="System",
        rows=[(s, system_label(s)) for s in row_ids],
        columns=[(t, teacher_label(t), m) for t in teachers for m in spec.metrics],
        has_paper=spec.paper is not None,
    )
    pub_dataset = spec.published_dataset or spec.dataset
    for row in row_ids:
        for c, (teacher, _, metric) in enumerate(table.columns):
            cell = Cell()
            group = by_key.get((row, teacher))
            if group is not None:
                cell.ours = group.stat(metric, spec.eval_tag)
            if spec.paper is not None and spec.table is not None and not is_extension(teacher):
                cell.paper = published.get(
                    spec.paper, spec.table, pub_dataset, aliases.get(row, row), teacher, metric
                )
            if not cell.empty:
                table.cells[(row, c)] = cell
    return table.prune()


def build_other_tables(groups: Sequence[Group], covered: set[tuple[str, str]]) -> list[Table]:
    """One table per (dataset, student) that no paper table covers (full training data)."""
    out = []
    pairs = sorted({(g.dataset, g.student) for g in groups if g.train_fraction == 1.0} - covered)
    for dataset, student in pairs:
        mine = [
            g
            for g in groups
            if (g.dataset, g.student) == (dataset, student) and g.train_fraction == 1.0
        ]
        task = next((g.task for g in mine if g.task), None)
        metrics = [
            m for m in primary_metrics(dataset, task) if any(g.stat(m) is not None for g in mine)
        ]
        if not metrics:
            continue
        teachers = _order([g.teacher for g in mine], list(TEACHER_LABELS))
        systems = _order([g.system for g in mine], SYSTEM_ORDER)
        table = Table(
            key=f"results_{dataset}_{student}",
            title=f"{dataset_label(dataset)} ({student_label(student)})",
            caption=CAPTION_STATS + " Neither paper reports this dataset/student combination.",
            row_header="System",
            rows=[(s, system_label(s)) for s in systems],
            columns=[(t, teacher_label(t), m) for t in teachers for m in metrics],
            has_paper=False,
        )
        by_key = {(g.system, g.teacher): g for g in mine}
        for row in systems:
            for c, (teacher, _, metric) in enumerate(table.columns):
                group = by_key.get((row, teacher))
                if group is not None and (stat := group.stat(metric)) is not None:
                    table.cells[(row, c)] = Cell(ours=stat)
        out.append(table.prune())
    return out


def build_limited_data_tables(groups: Sequence[Group]) -> list[Table]:
    """Paper 1 Fig. 2 as tables: metric vs fraction of the training data, per system/teacher."""
    out = []
    for dataset, student in sorted(
        {(g.dataset, g.student) for g in groups if g.train_fraction < 1.0}
    ):
        mine = [g for g in groups if (g.dataset, g.student) == (dataset, student)]
        task = next((g.task for g in mine if g.task), None)
        metric = primary_metrics(dataset, task)[0]
        fractions = sorted({g.train_fraction for g in mine})
        pairs = sorted(
            {(g.system, g.teacher) for g in mine if g.train_fraction < 1.0},
            key=lambda p: (SYSTEM_ORDER.index(p[0]) if p[0] in SYSTEM_ORDER else 99, p[1]),
        )
        table = Table(
            key=f"paper1_fig2_{dataset}_{student}",
            title=f"Paper 1 Fig. 2 as a table — limited training data, {dataset_label(dataset)} "
            f"({student_label(student)}), {metric}",
            caption=CAPTION_STATS + " Columns: fraction of the training split used. The paper "
            "publishes these results only as a figure.",
            row_header="System (teacher)",
            rows=[(f"{s}|{t}", f"{system_label(s)} ({teacher_label(t)})") for s, t in pairs],
            columns=[(f"{f:g}", f"{round(f * 100):d} %", metric) for f in fractions],
            has_paper=False,
        )
        by_key = {(g.system, g.teacher, g.train_fraction): g for g in mine}
        for s, t in pairs:
            for c, f in enumerate(fractions):
                group = by_key.get((s, t, f))
                if group is not None and (stat := group.stat(metric)) is not None:
                    table.cells[(f"{s}|{t}", c)] = Cell(ours=stat)
        out.append(table.prune())
    return out


COMPLEXITY_ORDER = [
    "vggish",
    "openl3",
    "passt",
    "panns",
    "mule",
    "discogs",
    "mobile_fcn",
    "cp_resnet",
    "harmonic_cnn",
    "short_chunk_cnn",
]


def build_complexity_table(
    complexity: dict[str, Any] | None,
    published: PublishedResults,
    extra_params: dict[str, int] | None = None,
) -> Table | None:
    """Paper 1 Table 2 and paper 2 Table 2 in one: parameters (M) and iterations/s."""
    ours: dict[str, dict[str, float]] = {}
    for model in (complexity or {}).get("models", []):
        entry = ours.setdefault(str(model.get("name")), {})
        if model.get("params") is not None:
            entry["params_M"] = float(model["params"]) / 1e6
        if model.get("iter_per_s") is not None:
            entry["iter_per_s"] = float(model["iter_per_s"])
    for name, count in (extra_params or {}).items():
        ours.setdefault(name, {}).setdefault("params_M", count / 1e6)
    paper: dict[str, dict[str, float]] = {}
    for row in published.rows:
        if row.table == "table2" and row.dataset == "complexity":
            paper.setdefault(row.system, {})[row.metric] = row.value
    if not ours:
        return None
    names = _order([*ours, *paper], COMPLEXITY_ORDER)
    where = ""
    if complexity:
        where = (
            f" Ours measured on {complexity.get('device_name') or complexity.get('device')}"
            f" ({complexity.get('device')}); the papers on an RTX 2070 Super."
        )
    table = Table(
        key="complexity",
        title="Paper 1 Table 2 / Paper 2 Table 2 — model complexity",
        caption="Parameters in millions (students: backbone without the classification head, "
        "as the papers count) and iterations per second (students: one 128 × 1000 "
        "spectrogram; teachers: one 10 s clip), one measurement each (no seeds). "
        "[published value]." + where,
        row_header="Model",
        rows=[(n, MODEL_LABELS.get(n, n)) for n in names],
        columns=[("params_M", "Parameters (M)", ""), ("iter_per_s", "Iterations / s", "")],
        digits=2,
        seeded=False,
    )
    for n in names:
        for c, (metric, _, _) in enumerate(table.columns):
            cell = Cell(
                ours=Stat(ours[n][metric], None, 1) if metric in ours.get(n, {}) else None,
                paper=paper.get(n, {}).get(metric),
            )
            if not cell.empty:
                table.cells[(n, c)] = cell
    return table.prune()


def build_tables(
    groups: Sequence[Group],
    published: PublishedResults,
    complexity: dict[str, Any] | None = None,
    extra_params: dict[str, int] | None = None,
) -> list[Table]:
    """Every table that our runs (and the complexity measurements) fill."""
    tables: list[Table] = []
    covered: set[tuple[str, str]] = set()
    for spec in SPECS:
        table = build_system_table(spec, groups, published)
        if table is not None and table.has_ours:
            tables.append(table)
            if spec.eval_tag is None:
                covered.add((spec.dataset, spec.student))
    tables += build_other_tables(groups, covered)
    tables += build_limited_data_tables(groups)
    complexity_table = build_complexity_table(complexity, published, extra_params)
    if complexity_table is not None:
        tables.append(complexity_table)
    return tables
