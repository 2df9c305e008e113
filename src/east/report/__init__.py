"""Tables and figures from run directories (``east report RUNS… --out DIR``).

:func:`build_report` collects every finished run under the given folders
(:mod:`east.report.runs`), groups them by (dataset, student, system, teacher, train fraction),
and writes into ``out``::

    report.md            every table, then every figure
    results.csv          one row per group and metric: mean, std, n, seeds (tidy)
    tables/<key>.md|csv  each table on its own (laid out like the papers' tables)
    figures/*.png        limited-data curves, per-teacher bars, cost vs accuracy
    index.html           tables and figures on one page, offline (figures embedded)
    .east_report.json    the files above, so the next report clears only what east wrote

It works on any subset of runs: a table or figure is written only when some run fills it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from east.errors import EastError
from east.report.published import PublishedResults
from east.report.runs import (
    NO_TEACHER,
    Group,
    RunRecord,
    Scan,
    find_runs,
    group_runs,
    primary_metrics,
)
from east.report.tables import Table, build_tables
from east.systems import is_probe

FORMATS = ("md", "csv", "html")
REPRODUCE_LOG = "reproduce_log.jsonl"
WRITTEN_FILE = ".east_report.json"  # what the last report wrote into --out
EXTRACTION_TIME_KEYS = ("extract_seconds", "extraction_seconds", "seconds_total")

__all__ = ["FORMATS", "Report", "RunRecord", "build_report", "find_runs", "group_runs"]


@dataclass
class Report:
    out: Path
    scan: Scan
    groups: list[Group]
    tables: list[Table]
    figures: list[Path]
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ costs


def _store_attrs(store: Path) -> dict[str, Any]:
    """The provenance attrs of a local Zarr v3 store (read from its zarr.json, no zarr import)."""
    meta = store / "zarr.json"
    try:
        attrs = json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return {}
    east_attrs = attrs.get("east", {})
    return east_attrs if isinstance(east_attrs, dict) else {}


def _folder_bytes(path: Path) -> int | None:
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _extraction_log(folders: Sequence[Path]) -> dict[str, float]:
    """Seconds spent extracting each store, summed over attempts (``reproduce_log.jsonl``)."""
    seconds: dict[str, float] = {}
    for folder in folders:
        log = folder / REPRODUCE_LOG
        if not log.is_file():
            continue
        for line in log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("kind") == "extract" and entry.get("store") and entry.get("seconds"):
                key = str(Path(entry["store"]).resolve())
                seconds[key] = seconds.get(key, 0.0) + float(entry["seconds"])
    return seconds


def _student_params(
    names: Iterable[str], complexity: dict[str, Any] | None, count: bool = True
) -> dict[str, int]:
    """Backbone parameter counts: from complexity.json, else (``count``) from the registry."""
    out: dict[str, int] = {}
    for model in (complexity or {}).get("models", []):
        if model.get("kind") == "student" and model.get("params") is not None:
            out[str(model["name"])] = int(model["params"])
    missing = [n for n in dict.fromkeys(names) if n not in out]
    if missing and count:
        try:
            from east.train.students import create_student, list_students
        except Exception:  # the report must not depend on the training code working
            return out
        for name in missing:
            if name in list_students():
                try:
                    out[name] = int(create_student(name, 10).num_parameters(backbone_only=True))
                except Exception:
                    continue
    return out


def _cost_points(
    groups: Sequence[Group],
    metric: str,
    student_params: dict[str, int],
    extraction: dict[str, float],
) -> list[Any]:
    from east.report.figures import CostPoint

    points = []
    for g in groups:
        stat = g.stat(metric)
        if stat is None:
            continue
        point = CostPoint(g.system, g.teacher, stat.mean, it_per_s=g.mean_of("it_per_s"), stat=stat)
        if not is_probe(g.system):  # the probe has no student
            point.student_params = student_params.get(g.student)
        caches = [Path(c) for c in g.runs[0].teacher_caches] if g.teacher != NO_TEACHER else []
        if caches:
            sizes = [_folder_bytes(c) for c in caches]
            if all(s is not None for s in sizes):
                point.cache_bytes = float(sum(s for s in sizes if s is not None))
            times = []
            for c in caches:
                attrs = _store_attrs(c)
                value = next((attrs[k] for k in EXTRACTION_TIME_KEYS if k in attrs), None)
                if value is None:
                    value = extraction.get(str(c.resolve()))
                times.append(value)
            if all(t is not None for t in times):
                point.extraction_s = float(sum(times))
        points.append(point)
    return points


# ------------------------------------------------------------------------------ writing


def _write_results_csv(path: Path, groups: Sequence[Group]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "dataset",
                "student",
                "system",
                "teacher",
                "train_fraction",
                "metric",
                "mean",
                "std",
                "n",
                "seeds",
                "clips",
                "ci95_low",
                "ci95_high",
                "source",
            ]
        )
        for g in groups:
            sources: list[tuple[str | None, str]] = [(None, "test")]
            tags = sorted({t for r in g.runs for t in r.evals})
            sources += [(t, f"eval_{t}") for t in tags]
            for tag, source in sources:
                for metric in ("mAP", "ROC-AUC", "F1", "accuracy"):
                    stat = g.stat(metric, tag)
                    if stat is None:
                        continue
                    writer.writerow(
                        [
                            g.dataset,
                            g.student,
                            g.system,
                            g.teacher,
                            g.train_fraction,
                            metric,
                            repr(stat.mean),
                            "" if stat.std is None else repr(stat.std),
                            stat.n,
                            " ".join(str(s) for s in g.seeds),
                            stat.clips_text or "",
                            "" if stat.ci95 is None else repr(stat.ci95[0]),
                            "" if stat.ci95 is None else repr(stat.ci95[1]),
                            source,
                        ]
                    )


def build_report(
    paths: Sequence[str | Path],
    out: str | Path,
    formats: Sequence[str] = FORMATS,
    *,
    published_path: str | Path | None = None,
    figures: bool = True,
    count_params: bool = True,
) -> Report:
    """Collect the runs under ``paths`` and write tables/figures into ``out``."""
    from east.report.complexity import load_complexity

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        what = f"unknown {', '.join(unknown)}" if unknown else "nothing named"
        raise EastError(f"--format: {what}; use one or more of {', '.join(FORMATS)}")
    out = Path(out)
    check_out_folder(out)
    folders = [Path(p) for p in paths]
    scan = find_runs(folders)
    groups = group_runs(scan.runs)
    if not groups:  # refused before --out is touched: an earlier report there stays
        raise EastError(_no_runs_message(folders, scan))
    published = PublishedResults.load(published_path)
    complexity_problem = None
    try:
        complexity = load_complexity(folders)
    except EastError as exc:  # noted, and the report goes on without it
        complexity, complexity_problem = None, str(exc)
    # without complexity.json, count student parameters from the registry (imports torch)
    student_params = _student_params(
        [g.student for g in groups if not is_probe(g.system)], complexity, count_params
    )
    tables = build_tables(groups, published, complexity, student_params)

    report = Report(out=out, scan=scan, groups=groups, tables=tables, figures=[])
    if published.source is None:
        report.notes.append("docs/paper_results.csv not found: no published numbers shown.")
    if scan.unfinished:
        report.notes.append(
            f"{len(scan.unfinished)} unfinished run(s) left out: "
            + ", ".join(str(p) for p in scan.unfinished[:5])
        )
    for path, reason in scan.unreadable:
        report.notes.append(f"unreadable run {path}: {reason}")
    if complexity_problem is not None:
        report.notes.append(f"ignored {complexity_problem}")
    if complexity is None and complexity_problem is None:
        report.notes.append(
            "no complexity.json in the given folders: the complexity table shows "
            "student parameter counts only (python -m east.report.complexity)."
        )

    try:
        _write_report(report, formats, figures, student_params, folders)
    except OSError as exc:
        if exc.filename is None:  # a failed write() names no file: name the report folder
            raise OSError(exc.errno, exc.strerror, str(out)) from exc
        raise
    return report


def _write_report(
    report: Report,
    formats: Sequence[str],
    figures: bool,
    student_params: dict[str, int],
    folders: Sequence[Path],
) -> None:
    out, scan, groups, tables = report.out, report.scan, report.groups, report.tables
    _clear_previous(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    if figures and groups:
        report.figures = _write_figures(out / "figures", groups, student_params, folders)

    if "md" in formats:
        for table in tables:
            path = out / "tables" / f"{table.key}.md"
            path.write_text(table.to_markdown())
            report.files.append(path)
        md = [
            "# east report",
            "",
            f"{len(scan.runs)} finished runs in {len(groups)} groups "
            f"from {', '.join(str(p) for p in folders)}.",
            "",
        ]
        md += [t.to_markdown() for t in tables]
        if report.figures:
            md += ["## Figures", ""]
            md += [f"![{f.stem}]({f.relative_to(out)})\n" for f in report.figures]
        if report.notes:
            md += ["## Notes", "", *(f"- {n}" for n in report.notes), ""]
        (out / "report.md").write_text("\n".join(md))
        report.files.append(out / "report.md")
    if "csv" in formats:
        for table in tables:
            path = out / "tables" / f"{table.key}.csv"
            path.write_text(table.to_csv())
            report.files.append(path)
        _write_results_csv(out / "results.csv", groups)
        report.files.append(out / "results.csv")
    if "html" in formats:
        from east.report.figures import figure_caption
        from east.report.html import write_index

        captions = {f.stem: figure_caption(f.stem) for f in report.figures}
        index = write_index(
            out / "index.html", tables, report.figures, report.notes, captions=captions
        )
        report.files.append(index)
    _record_written(out, [*report.files, *report.figures])


def check_out_folder(out: Path) -> None:
    """Refuse an ``--out`` that is, or lies below, something other than a folder."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                what = "is a file" if path == out else f"lies below the file {path}"
                raise EastError(f"--out {out} {what}; name a folder for the report")
            return


def _no_runs_message(folders: Sequence[Path], scan: Scan) -> str:
    where = ", ".join(str(f) for f in folders)
    message = (
        f"no finished runs (a run directory needs config.yaml and test_results.json) under {where}"
    )
    if scan.unreadable:
        shown = "; ".join(f"{reason}" for _, reason in scan.unreadable[:3])
        more = len(scan.unreadable) - 3
        message += f"; {len(scan.unreadable)} unreadable: {shown}" + (
            f"; and {more} more" if more > 0 else ""
        )
    if scan.unfinished:
        message += f"; {len(scan.unfinished)} unfinished"
    return message


def _clear_previous(out: Path) -> None:
    """Remove what an earlier report wrote here, so no stale table or figure survives, and
    nothing else: a user's own files in ``out`` stay. The earlier report's files are listed
    in ``.east_report.json``; a report written before that list existed is recognised by
    its ``report.md`` heading."""
    for path in _previous_files(out):
        path.unlink(missing_ok=True)


def _previous_files(out: Path) -> list[Path]:
    listing = out / WRITTEN_FILE
    try:
        names = json.loads(listing.read_text())
    except (OSError, ValueError):
        names = None
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        root = out.resolve()
        paths = [out / n for n in names]
        # only files inside out: a hand-edited list must not reach elsewhere
        return [p for p in paths if p.resolve().is_relative_to(root) and p.is_file()]
    try:
        legacy = (out / "report.md").read_text().startswith("# east report")
    except (OSError, ValueError):
        legacy = False
    if not legacy:
        return []
    found = [p for sub, pattern in LEGACY_OUTPUTS for p in (out / sub).glob(pattern)]
    return [*found, *(out / n for n in ("report.md", "results.csv", "index.html"))]


LEGACY_OUTPUTS = (("tables", "*.md"), ("tables", "*.csv"), ("figures", "*.png"))


def _record_written(out: Path, files: Sequence[Path]) -> None:
    names = sorted({str(f.relative_to(out)) for f in files})
    (out / WRITTEN_FILE).write_text(json.dumps(names, indent=1) + "\n")


def _write_figures(
    folder: Path, groups: Sequence[Group], student_params: dict[str, int], roots: Sequence[Path]
) -> list[Path]:
    from east.report import figures as fig

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    pairs = sorted({(g.dataset, g.student) for g in groups})
    for dataset, student in pairs:
        path = folder / f"limited_data_{dataset}_{student}.png"
        if fig.limited_data_figure(groups, dataset, student, path):
            written.append(path)
        path = folder / f"teachers_{dataset}_{student}.png"
        if fig.teacher_bars_figure(groups, dataset, student, path):
            written.append(path)
    extraction = _extraction_log(roots)
    for dataset in sorted({g.dataset for g in groups}):
        mine = [g for g in groups if g.dataset == dataset and g.train_fraction == 1.0]
        if not mine:
            continue
        metric = next(
            (m for m in primary_metrics(dataset, mine[0].task) if any(g.stat(m) for g in mine)),
            None,
        )
        if metric is None:
            continue
        points = _cost_points(mine, metric, student_params, extraction)
        path = folder / f"cost_vs_{metric.lower()}_{dataset}.png"
        if fig.cost_figure(points, metric, f"Cost vs {metric} — {dataset}", path):
            written.append(path)
    return written
