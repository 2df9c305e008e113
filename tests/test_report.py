"""`east report`: synthetic run directories in the layout `east train` writes (resolved config
via east.config, run_info.json, metrics.jsonl, test_results.json, eval_<tag>.json)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from east.config import load_config_dict
from east.errors import EastError
from east.report import build_report
from east.report.published import PublishedResults
from east.report.runs import Stat, find_runs, group_runs
from east.report.runs import read_run as load_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MULTILABEL = {"openmic", "mtat"}


def write_run(
    root: Path,
    *,
    dataset: str,
    student: str,
    system: str,
    teacher: str | None,
    seed: int,
    metrics: dict[str, float],
    fraction: float = 1.0,
    evals: dict[str, dict[str, float]] | None = None,
    epochs: int = 3,
    finished: bool = True,
) -> Path:
    """One run directory as east.train.trainer writes it."""
    data = {
        "system": system,
        "seed": seed,
        "dataset": {"name": dataset, "root": f"data/{dataset}", "train_fraction": fraction},
        "student": {"name": student},
        "loss": {"lambda": 0.0 if system in ("baseline", "teacher_lr") else 0.6},
    }
    if teacher is not None:
        data["teachers"] = [{"cache": f"cache/{dataset}/{teacher}.zarr"}]
    if system in ("kd", "east_kd"):
        data["teacher_lr_run"] = f"runs/teacher_lr_{teacher}_s{seed}"
    cfg = load_config_dict(data)
    run_dir = root / dataset / f"frac{fraction:g}" / cfg.run_name()
    run_dir.mkdir(parents=True)
    import yaml

    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_yaml_dict(), sort_keys=False))
    task = "multilabel" if dataset in MULTILABEL else "multiclass"
    (run_dir / "run_info.json").write_text(
        json.dumps(
            {
                "system": system,
                "dataset": dataset,
                "task": task,
                "num_classes": 5,
                "student": student,
            }
        )
    )
    with open(run_dir / "metrics.jsonl", "w") as f:
        for epoch in range(epochs):
            f.write(
                json.dumps(
                    {"epoch": epoch, "step": 10 * (epoch + 1), "seconds": 2.0, "val_loss": 1.0}
                )
                + "\n"
            )
    (run_dir / "last.pt").write_bytes(b"")
    if finished:
        results = {"split": "test", "clips": 10, "best_epoch": 1, "test_loss": 0.5}
        results.update({f"test_{k}": v for k, v in metrics.items()})
        (run_dir / "test_results.json").write_text(json.dumps(results))
    for tag, values in (evals or {}).items():
        (run_dir / f"eval_{tag}.json").write_text(json.dumps({"dataset": tag, **values}))
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, dict[tuple, list[float]]]:
    """A small sweep: several seeds, systems, teachers, fractions and datasets."""
    rng = np.random.default_rng(0)
    root = tmp_path / "runs"
    truth: dict[tuple, list[float]] = {}

    def add(dataset, student, system, teacher, seeds, fraction=1.0, evals=None, base=0.8):
        for seed in seeds:
            value = float(base + rng.normal(0, 0.01))
            multilabel = dataset in MULTILABEL
            metrics = (
                {"mAP": value, "roc_auc": value + 0.05, "macro_f1": value - 0.02}
                if multilabel
                else {"accuracy": value, "mAP": value - 0.1}
            )
            write_run(
                root,
                dataset=dataset,
                student=student,
                system=system,
                teacher=teacher,
                seed=seed,
                metrics=metrics,
                fraction=fraction,
                evals=evals,
            )
            truth.setdefault((dataset, student, system, teacher or "none", fraction), []).append(
                value
            )

    add("openmic", "cp_resnet", "baseline", None, [1, 2, 3])
    add("openmic", "cp_resnet", "east_final", "vggish", [1, 2, 3], base=0.84)
    add("openmic", "cp_resnet", "teacher_lr", "vggish", [1, 2])
    add("openmic", "cp_resnet", "kd", "passt", [1])
    for fraction in (0.25, 0.5):
        add("mtat", "mobile_fcn", "baseline", None, [1, 2], fraction=fraction, base=0.4)
        add("mtat", "mobile_fcn", "east_final", "vggish", [1, 2], fraction=fraction, base=0.42)
    add("mtat", "mobile_fcn", "east_final", "vggish", [1, 2], base=0.45)
    add(
        "mtat",
        "short_chunk_cnn",
        "baseline",
        None,
        [1, 2],
        base=0.43,
        evals={"openmic": {"mAP": 0.86}},
    )
    add(
        "mtat",
        "short_chunk_cnn",
        "east_dc_linear",
        "passt",
        [1, 2],
        base=0.45,
        evals={"openmic": {"mAP": 0.9}},
    )
    add("esc50", "short_chunk_cnn", "baseline", None, [1, 2, 3], base=0.7)
    add("esc50", "short_chunk_cnn", "east_dc", "passt", [1, 2, 3], base=0.75)
    add("esc50", "short_chunk_cnn", "east_dc", "fcn-msd", [1, 2], base=0.72)
    add("esc50", "mobile_fcn", "east_final", "fcn-msd", [1, 2], base=0.6)
    (root / "complexity.json").write_text(
        json.dumps(
            {
                "device": "cpu",
                "models": [
                    {
                        "name": "cp_resnet",
                        "kind": "student",
                        "params": 5_524_352,
                        "iter_per_s": 100.0,
                    },
                    {"name": "passt", "kind": "teacher", "params": 86_100_000},
                ],
            }
        )
    )
    # an interrupted run: listed, left out
    write_run(
        root,
        dataset="esc50",
        student="mobile_fcn",
        system="baseline",
        teacher=None,
        seed=9,
        metrics={},
        finished=False,
    )
    return root, truth


def test_load_run_reads_the_layout(runs: tuple[Path, dict]) -> None:
    root, _ = runs
    run_dir = next(root.rglob("east_final_cp_resnet_vggish_s2"))
    run = load_run(run_dir)
    assert (run.dataset, run.student, run.system, run.teacher, run.seed) == (
        "openmic",
        "cp_resnet",
        "east_final",
        "vggish",
        2,
    )
    assert set(run.metrics) == {"mAP", "ROC-AUC", "F1"}
    assert run.it_per_s == pytest.approx(30 / 6.0)  # last step / summed epoch seconds
    with pytest.raises(EastError):
        load_run(root)


def test_groups_mean_and_std_match_numpy(runs: tuple[Path, dict]) -> None:
    root, truth = runs
    scan = find_runs([root])
    assert len(scan.unfinished) == 1 and not scan.unreadable
    groups = {g.runs[0].key: g for g in group_runs(scan.runs)}
    assert set(groups) == set(truth)
    for key, values in truth.items():
        metric = "mAP" if key[0] in MULTILABEL else "accuracy"
        stat = groups[key].stat(metric)
        assert stat is not None and stat.n == len(values)
        assert stat.mean == pytest.approx(np.mean(values), abs=1e-12)
        if len(values) > 1:
            assert stat.std == pytest.approx(np.std(values, ddof=1), abs=1e-12)
        else:
            assert stat.std is None
    assert Stat.of([1.0, 3.0]).std == pytest.approx(np.sqrt(2.0))


def test_report_tables_put_published_numbers_beside_ours(
    runs: tuple[Path, dict], tmp_path: Path
) -> None:
    root, truth = runs
    out = tmp_path / "report"
    report = build_report([root], out, count_params=False, figures=False)
    keys = {t.key for t in report.tables}
    assert {
        "paper1_table1_openmic",
        "paper2_table3_esc50",
        "paper2_table1_generalizability",
        "paper2_fig3_sccnn",
        "results_esc50_mobile_fcn",
        "complexity",
    } <= keys
    assert any(k.startswith("paper1_fig2_mtat") for k in keys)

    published = PublishedResults.load()
    paper_value = published.get("ding2023", "table1", "openmic", "east_final", "vggish", "mAP")
    assert paper_value == pytest.approx(0.842)
    md = (out / "tables" / "paper1_table1_openmic.md").read_text()
    ours = truth[("openmic", "cp_resnet", "east_final", "vggish", 1.0)]
    expected = f"{np.mean(ours):.3f} ± {np.std(ours, ddof=1):.3f} [{paper_value:.3f}]"
    assert expected in md
    # paper-only rows and columns stay, with the published value alone
    assert "SS CP ResNet*" in md and "[0.858]" in md  # Teacher_LR PaSST mAP
    # the baseline is compared with the paper's reported CP ResNet
    assert "[0.819]" in md

    # ESC-50: the extension teacher is marked and never gets a published number
    esc = (out / "tables" / "paper2_table3_esc50.md").read_text()
    assert "fcn-msd (ext.)" in esc and "[0.753]" in esc
    rows = list(csv.reader((out / "tables" / "paper2_table3_esc50.csv").open()))
    header = rows[0]
    ext_paper = header.index("fcn-msd (ext.) accuracy paper")
    assert all(r[ext_paper] == "" for r in rows[1:])
    dc = next(r for r in rows if r[0] == "EAsT_DC")
    values = truth[("esc50", "short_chunk_cnn", "east_dc", "passt", 1.0)]
    assert float(dc[header.index("PaSST accuracy")]) == pytest.approx(np.mean(values), abs=1e-6)
    assert float(dc[header.index("PaSST accuracy paper")]) == pytest.approx(0.753)

    gen = (out / "tables" / "paper2_table1_generalizability.md").read_text()
    assert "0.900 ± 0.000 [0.901]" in gen and "0.860 ± 0.000 [0.863]" in gen

    cx = (out / "tables" / "complexity.md").read_text()
    assert "| CP ResNet | 5.52 [5.52] | 100.00 [205.30] |" in cx
    assert "| PaSST | 86.10 [86.10] | — [18.70] |" in cx
    assert "| VGGish | — [72.10] | — [172.20] |" in cx

    # tidy results: every group, values equal to numpy
    tidy = list(csv.DictReader((out / "results.csv").open()))
    row = next(
        r
        for r in tidy
        if (r["dataset"], r["system"], r["teacher"], r["metric"], r["train_fraction"])
        == ("esc50", "baseline", "none", "accuracy", "1.0")
    )
    base = truth[("esc50", "short_chunk_cnn", "baseline", "none", 1.0)]
    assert float(row["mean"]) == pytest.approx(np.mean(base))
    assert float(row["std"]) == pytest.approx(np.std(base, ddof=1))
    assert row["n"] == "3" and row["seeds"] == "1 2 3"
    assert any(r["source"] == "eval_openmic" for r in tidy)


def test_report_figures_are_valid_pngs(runs: tuple[Path, dict], tmp_path: Path) -> None:
    import matplotlib.image

    root, _ = runs
    out = tmp_path / "report"
    report = build_report([root], out, ["html"], count_params=False)
    names = {p.name for p in report.figures}
    assert "limited_data_mtat_mobile_fcn.png" in names
    assert "teachers_esc50_short_chunk_cnn.png" in names
    assert "cost_vs_accuracy_esc50.png" in names
    for path in report.figures:
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    page = (out / "index.html").read_text()
    assert page.count("<img ") == len(report.figures)
    assert "Paper 2 Table 3" in page and not (out / "report.md").exists()


def test_report_on_a_subset_and_the_cli(runs: tuple[Path, dict], tmp_path: Path) -> None:
    from east.cli.main import app

    root, _ = runs
    esc_only = tmp_path / "esc_only"
    esc_only.mkdir()
    for run in root.rglob("*_s1"):
        if (run / "test_results.json").exists() and load_run(run).dataset == "esc50":
            run.rename(esc_only / run.name)
    result = CliRunner().invoke(
        app, ["report", str(esc_only), "--out", str(tmp_path / "r"), "--no-count-params"]
    )
    assert result.exit_code == 0, result.output
    assert "ESC-50" in result.output and "east_dc" in result.output
    tables = sorted(p.name for p in (tmp_path / "r" / "tables").glob("*.md"))
    assert "paper2_table3_esc50.md" in tables
    assert not any("openmic" in t or "mtat" in t for t in tables)

    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["report", str(empty), "--out", str(tmp_path / "r2")])
    assert isinstance(result.exception, EastError)
    result = CliRunner().invoke(app, ["report", str(esc_only), "--format", "pdf"])
    assert isinstance(result.exception, EastError)


def test_a_new_report_clears_only_what_the_last_one_wrote(
    runs: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = runs
    out = tmp_path / "r"
    first = build_report([root], out, ["md", "csv"], figures=False, count_params=False)
    keys = {t.key for t in first.tables}
    (out / "tables" / "mine.md").write_text("my own notes")
    esc_only = tmp_path / "esc_only"
    esc_only.mkdir()
    for run in root.rglob("*_s1"):
        if (run / "test_results.json").exists() and load_run(run).dataset == "esc50":
            run.rename(esc_only / run.name)
    second = build_report([esc_only], out, ["md"], figures=False, count_params=False)
    left = {p.stem for p in (out / "tables").glob("*.md")}
    assert left == {t.key for t in second.tables} | {"mine"}
    assert len(keys) > len(left) - 1  # stale tables of the first report are gone
    assert not (out / "results.csv").exists() and not list((out / "tables").glob("*.csv"))
    assert (out / "tables" / "mine.md").read_text() == "my own notes"


def test_a_report_from_before_the_file_list_is_still_cleared(
    runs: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = runs
    out = tmp_path / "r"
    build_report([root], out, ["md"], figures=False, count_params=False)
    (out / ".east_report.json").unlink()  # as an older east left it
    (out / "tables" / "old_table.md").write_text("stale")
    build_report([root], out, ["md"], figures=False, count_params=False)
    assert not (out / "tables" / "old_table.md").exists()
