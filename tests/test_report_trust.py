"""`east report` that people can trust at a glance (issue 17, item 6): bars from zero, seeds and
clips behind every number, 95 % t intervals where there are ≥ 3 seeds, an index.html that works
offline — and, where Chromium is installed, a real headless-browser screenshot of it."""

from __future__ import annotations

import csv
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from east.report import build_report
from east.report.figures import (
    CostPoint,
    build_cost_figure,
    build_limited_data_figure,
    build_teacher_bars_figure,
)
from east.report.runs import Stat, find_runs, group_runs, t_quantile
from test_report import write_run

SEEDS3 = [0.71, 0.74, 0.72]  # esc50 east_dc passt
CLIPS = 40


def _hand_ci(values: list[float]) -> tuple[float, float]:
    """The 95 % t interval by the textbook formula, with scipy's quantile."""
    stats = pytest.importorskip("scipy.stats")
    arr = np.asarray(values)
    half = stats.t.ppf(0.975, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr))
    return arr.mean() - half, arr.mean() + half


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seeds, two seeds and one seed; a limited-data sweep; 40 test clips per seed."""
    root = tmp_path_factory.mktemp("trust") / "runs"

    def add(dataset, system, teacher, values, fraction=1.0, student="short_chunk_cnn"):
        for seed, v in enumerate(values, start=1):
            metrics = {"mAP": v, "roc_auc": v + 0.05} if dataset == "mtat" else {"accuracy": v}
            run = write_run(
                root,
                dataset=dataset,
                student=student,
                system=system,
                teacher=teacher,
                seed=seed,
                metrics=metrics,
                fraction=fraction,
            )
            text = (run / "test_results.json").read_text()
            (run / "test_results.json").write_text(text.replace('"clips": 10', f'"clips": {CLIPS}'))

    add("esc50", "baseline", None, [0.70, 0.69, 0.705])
    add("esc50", "east_dc", "passt", SEEDS3)
    add("esc50", "east_fitnet", "passt", [0.73, 0.75])
    add("esc50", "teacher_lr", "passt", [0.86])
    for fraction in (0.25, 1.0):
        add("mtat", "baseline", None, [0.40, 0.41, 0.42], fraction, "mobile_fcn")
        add("mtat", "east_final", "vggish", [0.43, 0.44, 0.46], fraction, "mobile_fcn")
    return root


@pytest.fixture(scope="module")
def groups(root: Path) -> list:
    return group_runs(find_runs([root]).runs)


@pytest.fixture(scope="module")
def report_dir(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trust_report") / "report"
    build_report([root], out, count_params=False)
    return out


# ------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 19, 29, 99, 999])
def test_t_quantile_matches_scipy(df: int) -> None:
    stats = pytest.importorskip("scipy.stats")
    assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)


def test_ci95_is_the_t_interval_and_only_from_three_seeds() -> None:
    ci = Stat.of(SEEDS3, [CLIPS] * 3).ci95
    assert ci == pytest.approx(_hand_ci(SEEDS3), abs=1e-12)
    assert Stat.of([0.7, 0.8]).ci95 is None and Stat.of([0.7]).ci95 is None
    five = [0.1, 0.3, 0.2, 0.25, 0.15]
    assert Stat.of(five).ci95 == pytest.approx(_hand_ci(five), abs=1e-12)


def test_clips_are_read_and_summarised(groups: list) -> None:
    g = next(g for g in groups if (g.dataset, g.system, g.teacher) == ("esc50", "east_dc", "passt"))
    stat = g.stat("accuracy")
    assert stat.n == 3 and stat.clips == (CLIPS,) and stat.clips_text == str(CLIPS)
    assert stat.values == tuple(SEEDS3)
    assert Stat.of([1.0, 2.0], [10, 12]).clips_text == "10–12"
    assert Stat.of([1.0], [None]).clips_text is None


# ------------------------------------------------------------------------------ figures


def _bars(ax) -> list:
    from matplotlib.patches import Rectangle

    return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_width() < 1]


def _texts(fig) -> str:
    return " ".join(t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text")))


def test_bars_start_at_zero_and_say_n_and_clips(groups: list) -> None:
    import matplotlib.pyplot as plt

    for dataset, student in (("esc50", "short_chunk_cnn"), ("mtat", "mobile_fcn")):
        fig = build_teacher_bars_figure(groups, dataset, student)
        ax = fig.axes[0]
        assert ax.get_ylim()[0] == 0.0  # the paper zooms; we do not
        bars = _bars(ax)
        assert bars and all(b.get_y() == 0.0 for b in bars)
        text = _texts(fig)
        assert f"{CLIPS} test clips per seed" in text and "95 % CI" in text
        plt.close(fig)
    fig = build_teacher_bars_figure(groups, "esc50", "short_chunk_cnn")
    text = _texts(fig)
    for n in (1, 2, 3):  # every bar says its seeds
        assert f"n={n}" in text
    assert "0.723\nn=3" in text  # the DC bar: mean and seeds printed on it
    plt.close(fig)


def test_bar_whiskers_are_the_ci_only_where_three_seeds(groups: list) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    fig = build_teacher_bars_figure(groups, "esc50", "short_chunk_cnn")
    ax = fig.axes[0]
    segments = [
        s for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()
    ]
    spans = sorted((round(s[0][1], 9), round(s[1][1], 9)) for s in segments if len(s) == 2)
    low, high = _hand_ci(SEEDS3)
    assert (round(low, 9), round(high, 9)) in spans
    # two seeds and one seed: a zero-length whisker (no CI drawn)
    assert sum(1 for a, b in spans if a == b) == 2
    plt.close(fig)


def test_limited_data_and_cost_figures_say_seeds_and_clips(groups: list) -> None:
    import matplotlib.pyplot as plt

    fig = build_limited_data_figure(groups, "mtat", "mobile_fcn")
    text = _texts(fig)
    assert "(n=3)" in text and f"{CLIPS} test clips per seed" in text
    plt.close(fig)
    stat = Stat.of(SEEDS3, [CLIPS] * 3)
    points = [CostPoint("east_dc", "passt", stat.mean, it_per_s=3.0, stat=stat)]
    fig = build_cost_figure(points, "accuracy", "cost")
    text = _texts(fig)
    assert "PaSST, n=3" in text and f"{CLIPS} test clips per seed" in text
    plt.close(fig)


# ------------------------------------------------------------------------------ tables


def test_every_table_cell_says_seeds_clips_and_ci(report_dir: Path) -> None:
    tables = sorted((report_dir / "tables").glob("*.md"))
    assert tables
    low, high = _hand_ci(SEEDS3)
    esc = (report_dir / "tables" / "paper2_table3_esc50.md").read_text()
    assert f"(n=3×{CLIPS}; CI {low:.3f}–{high:.3f})" in esc
    assert f"(n=2×{CLIPS})" in esc and f"(n=1×{CLIPS})" in esc
    for path in tables:
        if path.stem == "complexity":  # one measurement per model, no seeds
            continue
        text = path.read_text()
        assert "n=seeds×test clips per seed" in text  # the caption explains the counts
        values = re.findall(r"\d\.\d{3}(?: ± \d\.\d{3})?(?: \[\d\.\d{3}\])?(?: \(([^)]*)\))?", text)
        ours = [v for v in values if v]
        assert ours and all(v.startswith("n=") for v in ours), path.name


def test_csv_columns_hold_clips_and_the_ci(report_dir: Path) -> None:
    rows = list(csv.DictReader((report_dir / "tables" / "paper2_table3_esc50.csv").open()))
    dc = next(r for r in rows if r["System"] == "EAsT_DC")
    low, high = _hand_ci(SEEDS3)
    assert dc["PaSST accuracy clips"] == str(CLIPS) and dc["PaSST accuracy n"] == "3"
    assert float(dc["PaSST accuracy ci95 low"]) == pytest.approx(low, abs=1e-6)
    assert float(dc["PaSST accuracy ci95 high"]) == pytest.approx(high, abs=1e-6)
    fitnet = next(r for r in rows if r["System"] == "EAsT_FitNet")
    assert fitnet["PaSST accuracy ci95 low"] == ""  # two seeds: no interval
    tidy = list(csv.DictReader((report_dir / "results.csv").open()))
    row = next(r for r in tidy if (r["system"], r["teacher"]) == ("east_dc", "passt"))
    assert row["clips"] == str(CLIPS)
    assert float(row["ci95_low"]) == pytest.approx(low) and float(
        row["ci95_high"]
    ) == pytest.approx(high)


# ------------------------------------------------------------------------------ index.html


def test_index_html_is_offline_and_self_contained(report_dir: Path) -> None:
    page = (report_dir / "index.html").read_text()
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    sources = re.findall(r'\bsrc="([^"]*)"', page)
    assert len(sources) == len(list((report_dir / "figures").glob("*.png"))) > 0
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(h.startswith("#") for h in re.findall(r'\bhref="([^"]*)"', page))
    assert "url(" not in page  # no fetched backgrounds or fonts
    assert f"3 seeds × {CLIPS} clips · 95 % CI" in page
    assert "Bars start at 0" in page  # each figure says how to read it


# ------------------------------------------------------------------------------ a real browser


def _chromium() -> str | None:
    return next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)


@pytest.mark.skipif(
    _chromium() is None, reason="Chromium is not installed (apt-get install chromium)"
)
def test_index_html_renders_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    """The page as a browser shows it, offline: the embedded figures are drawn (their bar
    colours appear in the screenshot) and the page is not blank."""
    import matplotlib.image

    shot = tmp_path / "index.png"
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,3200",
        (report_dir / "index.html").resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    image = matplotlib.image.imread(shot)[..., :3]
    assert image.shape[:2] == (3200, 1280)
    assert image.std() > 0.05  # not a blank page
    orange = np.array([0xF2, 0x8E, 0x2B]) / 255  # EAsT_FitNet's bars
    green = np.array([0x59, 0xA1, 0x4F]) / 255  # EAsT_DC's bars
    for colour in (orange, green):
        close = np.abs(image - colour).max(axis=-1) < 0.03
        assert close.sum() > 500, f"no bar of colour {colour} in the screenshot"
