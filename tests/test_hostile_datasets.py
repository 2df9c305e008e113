"""Hostile tests of the dataset adapters, their options and audio decoding (issue 13).

Every bad input is one line on stderr with exit code 2 (or, for ``east datasets check``, a
report on stdout), never a traceback, and the dataset folder is left exactly as it was.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from east.testing import layouts
from hostile import assert_one_line_error, assert_unchanged, east, east_env, snapshot

Edit = Callable[[list[list[str]]], None]  # changes the rows of a CSV in place

# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny official layouts, built once; tests copy the one they break."""
    base = tmp_path_factory.mktemp("layouts")
    layouts.make_esc50(base / "esc50", num_classes=3, clips_per_class=5, seconds=0.2)
    layouts.make_mtat(base / "mtat", num_clips=16, num_tag_columns=55, seconds=0.2)
    layouts.make_fma_small(base / "fma", clips_per_genre=1, genres=("Pop", "Rock"), seconds=0.2)
    layouts.make_openmic(base / "openmic", num_train=6, num_test=2, seconds=0.2)
    layouts.make_folder(base / "folder", classes=("a", "b"), clips_per_class=3, seconds=0.2)
    return base


def _copy(built: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built / name, tmp_path / name))


def _rows(path: Path, delimiter: str = ",") -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh, delimiter=delimiter))


def _write_rows(path: Path, rows: list[list[str]], delimiter: str = ",") -> None:
    with path.open("w", newline="") as fh:
        quoting = csv.QUOTE_ALL if delimiter == "\t" else csv.QUOTE_MINIMAL
        csv.writer(fh, delimiter=delimiter, quoting=quoting, lineterminator="\n").writerows(rows)


def _refused(root: Path, *args: str, fragments: tuple[str, ...]) -> None:
    """``east ARGS`` refuses in one line holding ``fragments``; ``root`` is unchanged."""
    before = snapshot(root)
    assert_one_line_error(east(*args), *fragments)
    assert_unchanged(root, before)


# --------------------------------------------------------------------- 1. typed options


@pytest.mark.parametrize(
    ("option", "fragments"),
    [
        ("seed=abc", ("seed", "abc", "integer")),
        ("test_fold=abc", ("test_fold", "abc", "integer")),
        ("valid_fraction=abc", ("valid_fraction", "abc", "number")),
        ("valid_fraction=2", ("valid_fraction", "2", "[0, 1)")),
        ("test_fold=9", ("test_fold", "9", "1..5")),
        ("seed=1.5", ("seed", "1.5", "integer")),
        ("seed=true", ("seed", "true", "integer")),
        ("split=halves", ("split", "halves", "folds")),
        ("on_missing=ignore", ("on_missing", "ignore", "drop")),
        ("tset_fold=1", ("tset_fold", "unknown", "test_fold")),
    ],
)
def test_show_bad_option(built: Path, option: str, fragments: tuple[str, ...]) -> None:
    root = built / "esc50"
    _refused(root, "datasets", "show", "esc50", "--root", root, "-o", option, fragments=fragments)


@pytest.mark.parametrize(
    ("name", "option", "fragments"),
    [
        ("mtat", "num_tags=0", ("num_tags", "0")),
        ("mtat", "num_tags=many", ("num_tags", "many", "integer")),
        ("openmic", "valid_fraction=-0.1", ("valid_fraction", "-0.1", "[0, 1)")),
        ("openmic", "seed=x", ("seed", "x", "integer")),
        ("folder", "test_fraction=1", ("test_fraction", "1", "[0, 1)")),
        ("fma", "on_missing=3", ("on_missing", "3")),
    ],
)
def test_other_adapters_bad_option(
    built: Path, name: str, option: str, fragments: tuple[str, ...]
) -> None:
    root = built / name
    dataset = "fma_small" if name == "fma" else name
    _refused(root, "datasets", "show", dataset, "--root", root, "-o", option, fragments=fragments)


def test_check_bad_option(built: Path) -> None:
    root = built / "esc50"
    args = ("datasets", "check", "esc50", "--root", root, "-w", "1", "-o", "seed=abc")
    _refused(root, *args, fragments=("seed", "abc", "integer"))


def test_extract_bad_option(built: Path, tmp_path: Path) -> None:
    root = built / "esc50"
    args = ("extract", "--dataset", "esc50", "--root", root, "--teacher", "vggish",
            "--cache-dir", tmp_path / "cache", "-o", "valid_fraction=abc")  # fmt: skip
    _refused(root, *args, fragments=("valid_fraction", "abc", "number"))
    assert not (tmp_path / "cache").exists()


def test_cache_audio_bad_option(built: Path, tmp_path: Path) -> None:
    root = built / "esc50"
    args = ("cache", "audio", "--dataset", "esc50", "--root", root,
            "--cache-dir", tmp_path / "cache", "-o", "test_fold=abc")  # fmt: skip
    _refused(root, *args, fragments=("test_fold", "abc", "integer"))
    assert not (tmp_path / "cache").exists()


def test_config_file_bad_dataset_option(built: Path, tmp_path: Path) -> None:
    root = built / "esc50"
    cfg = {
        "system": "baseline",
        "output_dir": str(tmp_path / "runs"),
        "dataset": {"name": "esc50", "root": str(root), "options": {"seed": "abc"}},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _refused(root, "train", "--config", path, "--check", fragments=("seed", "abc", "integer"))


# ------------------------------------------------------------------------ 2. CSV defects


def _esc50_with(built: Path, tmp_path: Path, edit: Edit) -> Path:
    root = _copy(built, "esc50", tmp_path)
    csv_path = root / "meta" / "esc50.csv"
    rows = _rows(csv_path)
    edit(rows)
    _write_rows(csv_path, rows)
    return root


def _show(root: Path, name: str, *fragments: str) -> None:
    _refused(root, "datasets", "show", name, "--root", root, fragments=fragments)


def _stem_of_row(root: Path, index: int) -> str:
    """Clip id of row ``index`` (0 = header) of an ESC-50 CSV."""
    return Path(_rows(root / "meta" / "esc50.csv")[index][0]).stem


def test_esc50_duplicate_row(built: Path, tmp_path: Path) -> None:
    root = _esc50_with(built, tmp_path, lambda rows: rows.insert(4, rows[2]))
    _show(root, "esc50", "esc50.csv", "line 5", "line 3", _stem_of_row(root, 2))


def test_esc50_short_row(built: Path, tmp_path: Path) -> None:
    root = _esc50_with(built, tmp_path, lambda rows: rows.__setitem__(3, rows[3][:2]))
    _show(root, "esc50", "esc50.csv", "line 4", "2 fields", "7")


def test_esc50_negative_target(built: Path, tmp_path: Path) -> None:
    root = _esc50_with(built, tmp_path, lambda rows: rows[2].__setitem__(2, "-1"))
    _show(root, "esc50", "esc50.csv", "line 3", "target '-1'", "0..49")


def test_esc50_target_too_large(built: Path, tmp_path: Path) -> None:
    root = _esc50_with(built, tmp_path, lambda rows: rows[5].__setitem__(2, "50"))
    _show(root, "esc50", "esc50.csv", "line 6", "target '50'", "0..49")


def test_esc50_category_disagrees_with_target(built: Path, tmp_path: Path) -> None:
    root = _esc50_with(built, tmp_path, lambda rows: rows[7].__setitem__(3, "chainsaw"))
    _show(root, "esc50", "esc50.csv", "line 8", "chainsaw", "target")


def test_esc50_non_integer_fold(built: Path, tmp_path: Path) -> None:
    root = _esc50_with(built, tmp_path, lambda rows: rows[9].__setitem__(1, "four"))
    _show(root, "esc50", "esc50.csv", "line 10", "four")


def _mtat_with(built: Path, tmp_path: Path, edit: Edit) -> Path:
    root = _copy(built, "mtat", tmp_path)
    path = root / "annotations_final.csv"
    rows = _rows(path, "\t")
    edit(rows)
    _write_rows(path, rows, "\t")
    return root


def test_mtat_duplicate_clip(built: Path, tmp_path: Path) -> None:
    root = _mtat_with(built, tmp_path, lambda rows: rows.append(rows[1]))
    _show(root, "mtat", "annotations_final.csv", "line 18", "line 2", "twice")


def test_mtat_tag_value_not_binary(built: Path, tmp_path: Path) -> None:
    root = _mtat_with(built, tmp_path, lambda rows: rows[3].__setitem__(5, "2"))
    _show(root, "mtat", "annotations_final.csv", "line 4", "'2'", "0 or 1")


def test_mtat_short_row(built: Path, tmp_path: Path) -> None:
    root = _mtat_with(built, tmp_path, lambda rows: rows.__setitem__(6, rows[6][:10]))
    _show(root, "mtat", "annotations_final.csv", "line 7", "10 fields")


def _fma_with(built: Path, tmp_path: Path, edit: Edit) -> Path:
    root = _copy(built, "fma", tmp_path)
    path = root / "fma_metadata" / "tracks.csv"
    rows = _rows(path)
    edit(rows)
    _write_rows(path, rows)
    return root


def test_fma_duplicate_track(built: Path, tmp_path: Path) -> None:
    # rows[3] is the first track (after two header rows and the index row)
    root = _fma_with(built, tmp_path, lambda rows: rows.append(rows[3]))
    _show(root, "fma_small", "tracks.csv", "twice", "line")


def test_fma_short_row(built: Path, tmp_path: Path) -> None:
    root = _fma_with(built, tmp_path, lambda rows: rows.__setitem__(4, rows[4][:3]))
    _show(root, "fma_small", "tracks.csv", "short row", "line")


def test_openmic_duplicate_partition_key(built: Path, tmp_path: Path) -> None:
    root = _copy(built, "openmic", tmp_path)
    part = root / "partitions" / "split01_train.csv"
    keys = part.read_text().splitlines()
    part.write_text("\n".join([*keys, keys[0]]) + "\n")
    _show(root, "openmic", "split01_train.csv", f"line {len(keys) + 1}", keys[0], "line 1")


def test_openmic_duplicate_npz_key(built: Path, tmp_path: Path) -> None:
    root = _copy(built, "openmic", tmp_path)
    with np.load(root / "openmic-2018.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["sample_key"][1] = arrays["sample_key"][0]
    np.savez(root / "openmic-2018.npz", **arrays)
    _show(root, "openmic", "openmic-2018.npz", str(arrays["sample_key"][0]), "twice")


def test_openmic_bad_class_map(built: Path, tmp_path: Path) -> None:
    root = _copy(built, "openmic", tmp_path)
    class_map = json.loads((root / "class-map.json").read_text())
    class_map["instrument_03"] = "three"
    (root / "class-map.json").write_text(json.dumps(class_map))
    _show(root, "openmic", "class-map.json", "instrument_03", "three")


def test_openmic_y_true_out_of_range(built: Path, tmp_path: Path) -> None:
    root = _copy(built, "openmic", tmp_path)
    with np.load(root / "openmic-2018.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["Y_true"][2, 4] = np.nan
    arrays["Y_mask"][2, 4] = True  # a known label (unknown ones are not read)
    np.savez(root / "openmic-2018.npz", **arrays)
    _show(root, "openmic", "openmic-2018.npz", "Y_true", "[0, 1]")


def _folder_with(built: Path, tmp_path: Path, edit: Edit) -> Path:
    root = _copy(built, "folder", tmp_path)
    rows = _rows(root / "labels.csv")
    edit(rows)
    _write_rows(root / "labels.csv", rows)
    return root


def test_folder_duplicate_path(built: Path, tmp_path: Path) -> None:
    def dup(rows: list[list[str]]) -> None:
        rows.append([rows[2][0], rows[2][1]])

    root = _folder_with(built, tmp_path, dup)
    _show(root, "folder", "labels.csv", "line 8", "line 3", "twice")


def test_folder_short_row(built: Path, tmp_path: Path) -> None:
    root = _folder_with(built, tmp_path, lambda rows: rows.__setitem__(2, rows[2][:1]))
    _show(root, "folder", "labels.csv", "line 3", "1 field")


def test_folder_empty_path(built: Path, tmp_path: Path) -> None:
    root = _folder_with(built, tmp_path, lambda rows: rows[4].__setitem__(0, ""))
    _show(root, "folder", "labels.csv", "line 5", "path")


# ---------------------------------------------------------------- 3. folder csv= missing


def test_folder_named_csv_missing(built: Path, tmp_path: Path) -> None:
    root = _copy(built, "folder", tmp_path)
    (root / "labels.csv").unlink()  # sub-folders of audio remain: the fallback would apply
    args = ("datasets", "show", "folder", "--root", root, "-o", "csv=mylabels.csv")
    _refused(root, *args, fragments=("mylabels.csv", "not found"))


# ------------------------------------------------------------------ 4. absurd audio


def _folder_of(tmp_path: Path, x: np.ndarray, sr: int = 16000) -> Path:
    root = layouts.make_folder(tmp_path / "f", classes=("a", "b"), clips_per_class=2, seconds=0.2)
    sf.write(str(root / "audio" / "a" / "a_000.wav"), x, sr, subtype="FLOAT")
    return root


@pytest.mark.parametrize(
    ("value", "reason"), [(1e30, "far outside full scale"), (np.inf, "non-finite")]
)
def test_check_reports_absurd_samples(tmp_path: Path, value: float, reason: str) -> None:
    x = np.full(3200, 0.1, dtype=np.float32)
    x[100] = value
    root = _folder_of(tmp_path, x)
    before = snapshot(root)
    result = east("datasets", "check", "folder", "--root", root, "-w", "1")
    assert result.code == 1, str(result)
    assert "Traceback" not in result.stderr
    assert "audio/a/a_000.wav: " in result.stdout and reason in result.stdout, str(result)
    assert_unchanged(root, before)


def test_load_audio_refuses_huge_samples(tmp_path: Path) -> None:
    from east.audio import load_audio
    from east.errors import AudioError

    x = np.full(1600, 0.1, dtype=np.float32)
    x[7] = -1e30
    path = tmp_path / "huge.wav"
    sf.write(str(path), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="far outside full scale"):
        load_audio(path)
    x[7] = 8.0  # loud but plausible (a float file a little over full scale) stays valid
    sf.write(str(path), x, 16000, subtype="FLOAT")
    assert float(np.abs(load_audio(path)).max()) == pytest.approx(8.0)


# -------------------------------------------------------------- 5. clip length warnings


def test_check_flags_short_clips(built: Path, tmp_path: Path) -> None:
    root = built / "esc50"  # 0.2 s clips, ESC-50's nominal length is 5 s
    before = snapshot(root)
    result = east("datasets", "check", "esc50", "--root", root, "-w", "1")
    assert result.code == 0, str(result)
    assert "Traceback" not in result.stderr
    assert "15 clips" in result.stdout and "nominal 5 s" in result.stdout, str(result)
    first = Path(_rows(root / "meta" / "esc50.csv")[1][0]).stem
    assert f"{first}: 0.2 s" in result.stdout, str(result)
    assert_unchanged(root, before)


def test_check_folder_has_no_nominal_length(built: Path) -> None:
    result = east("datasets", "check", "folder", "--root", built / "folder", "-w", "1")
    assert result.code == 0, str(result)
    assert "nominal" not in result.stdout and "all 6 clips" in result.stdout, str(result)


# ------------------------------------------------------- 6. native stderr of libmpg123


@pytest.fixture(scope="module")
def cut_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MP3 with a Xing header, cut in half (libmpg123 warns on fd 2 when it opens it)."""
    path = tmp_path_factory.mktemp("mp3") / "cut.mp3"
    x = layouts.class_tone([1], 5, 3.0, 16000, np.random.default_rng(0))
    sf.write(str(path), x, 16000, format="MP3", subtype="MPEG_LAYER_III")
    data = path.read_bytes()
    assert b"Xing" in data[:200]
    path.write_bytes(data[: len(data) // 2])
    return path


def test_decoding_cut_mp3_prints_nothing_native(cut_mp3: Path) -> None:
    code = (
        "import sys\n"
        "from east.audio import audio_info, load_audio\n"
        "from east.errors import AudioError\n"
        f"audio_info({str(cut_mp3)!r})\n"
        "try:\n"
        f"    load_audio({str(cut_mp3)!r})\n"
        "except AudioError as exc:\n"
        "    print(exc.reason)\n"
        "print('still here', file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=east_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "truncated" in proc.stdout
    assert proc.stderr.strip() == "still here", proc.stderr  # fd 2 restored, nothing leaked


def test_check_cut_mp3_prints_only_east(built: Path, tmp_path: Path, cut_mp3: Path) -> None:
    root = _copy(built, "folder", tmp_path)
    shutil.copy(cut_mp3, root / "audio" / "a" / "a_001.mp3")
    rows = _rows(root / "labels.csv")
    rows[2][0] = "audio/a/a_001.mp3"
    _write_rows(root / "labels.csv", rows)
    for workers in ("1", "2"):
        result = east("datasets", "check", "folder", "--root", root, "-w", workers)
        assert result.code == 1, str(result)
        assert "Xing" not in result.stderr and "Warning" not in result.stderr, str(result)
        assert "audio/a/a_001.mp3: truncated" in result.stdout, str(result)


# ------------------------------------------------------------------ roots and names


def test_root_is_a_file(built: Path) -> None:
    path = built / "esc50" / "meta" / "esc50.csv"
    _refused(built / "esc50", "datasets", "show", "esc50", "--root", path,
             fragments=(str(path), "not a folder"))  # fmt: skip


def test_root_missing(tmp_path: Path) -> None:
    assert_one_line_error(
        east("datasets", "show", "esc50", "--root", tmp_path / "nope"), "nope", "not a folder"
    )


def test_root_of_another_layout(built: Path) -> None:
    root = built / "mtat"
    _refused(root, "datasets", "show", "esc50", "--root", root,
             fragments=("meta/esc50.csv", "official layout"))  # fmt: skip


def test_unknown_dataset(tmp_path: Path) -> None:
    assert_one_line_error(
        east("datasets", "show", "esc-50", "--root", tmp_path), "esc-50", "known datasets"
    )
