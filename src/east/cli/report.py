"""CLI: ``east report RUNS… --out DIR`` — the papers' tables and figures from run directories."""

from __future__ import annotations

from pathlib import Path

import typer

from east.cli.common import console, err_line


def report_command(
    runs: list[Path] = typer.Argument(..., help="Run directories or folders holding them."),
    out: Path = typer.Option(Path("reports"), "--out", "-o", help="Report folder to write."),
    fmt: str = typer.Option("md,csv,html", "--format", help="Comma-separated: md, csv, html."),
    paper_results: Path = typer.Option(
        None, "--paper-results", help="Published numbers CSV (default docs/paper_results.csv)."
    ),
    no_figures: bool = typer.Option(False, "--no-figures", help="Tables only."),
    count_params: bool = typer.Option(
        True,
        "--count-params/--no-count-params",
        help="Without a complexity.json, count student parameters by building the students.",
    ),
) -> None:
    """Collect finished runs (recursively), average over seeds and write tables laid out like
    the papers' (published numbers beside ours), PNG figures and an index.html."""
    from east.report import build_report

    formats = [f.strip() for f in fmt.split(",") if f.strip()]
    # refuses (one line, nothing written) a bad --out, --format or no finished runs
    report = build_report(
        runs,
        out,
        formats,
        published_path=paper_results,
        figures=not no_figures,
        count_params=count_params,
    )
    for table in results_tables(report.groups):
        console.print(table)
    for note in report.notes:
        err_line("note:", "yellow", note)
    console.print(
        f"wrote {len(report.tables)} tables, {len(report.figures)} figures to {out}"
        + (f" — open {out / 'index.html'}" if "html" in formats else ""),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def results_tables(groups: list) -> list:
    """Rich tables, one per dataset, with that dataset's metrics (as in the papers' tables)."""
    from rich import box
    from rich.table import Table

    from east.report.runs import primary_metrics
    from east.report.tables import SYSTEM_ORDER, dataset_label, student_label, teacher_label
    from east.systems import is_probe

    def rank(g: object) -> tuple:
        s = g.system  # type: ignore[attr-defined]
        return (
            g.student,
            -g.train_fraction,  # type: ignore[attr-defined]
            SYSTEM_ORDER.index(s) if s in SYSTEM_ORDER else 99,
            g.teacher,
        )  # type: ignore[attr-defined]

    out = []
    for dataset in sorted({g.dataset for g in groups}):
        mine = sorted((g for g in groups if g.dataset == dataset), key=rank)
        task = next((g.task for g in mine if g.task), None)
        metrics = [
            m for m in primary_metrics(dataset, task) if any(g.stat(m) is not None for g in mine)
        ]
        evals = sorted({t for g in mine for r in g.runs for t in r.evals})
        table = Table(
            title=f"{dataset_label(dataset)} — test split, mean ± std over seeds "
            "(clips: test clips per seed)",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        limited = any(g.train_fraction < 1.0 for g in mine)
        columns = ("student", "system", "teacher", *(["data"] if limited else []), "seeds", "clips")
        for name in columns:  # system names are identifiers: never cut them in two
            table.add_column(name, overflow="fold", no_wrap=name == "system")
        for m in metrics:
            table.add_column(m, justify="right", no_wrap=True)
        for tag in evals:
            table.add_column(f"{tag} mAP", justify="right", no_wrap=True)
        for g in mine:
            cells = []
            for m in metrics:
                s = g.stat(m)
                cells.append(
                    "—"
                    if s is None
                    else f"{s.mean:.3f}" + ("" if s.std is None else f"±{s.std:.3f}")
                )
            for tag in evals:
                s = g.stat("mAP", tag)
                cells.append("—" if s is None else f"{s.mean:.3f}")
            table.add_row(
                "—" if is_probe(g.system) else student_label(g.student),
                g.system,
                teacher_label(g.teacher),
                *([f"{round(g.train_fraction * 100)}%"] if limited else []),
                str(len(g.runs)),
                _clips(g),
                *cells,
            )
        out.append(table)
    return out


def _clips(group: object) -> str:
    """Test clips per seed ("10", "10–12"), "—" where no run recorded them."""
    counts = sorted({r.clips for r in group.runs if r.clips})  # type: ignore[attr-defined]
    if not counts:
        return "—"
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}–{counts[-1]}"


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("report")(report_command)
