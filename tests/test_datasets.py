"""Dataset adapters on the real ESC-50 subset and on fixture layouts of every dataset.

Expected values are recomputed here from the files the fixtures wrote (with ``csv``,
``collections.Counter`` and ``numpy``), not copied from the adapters.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from east.datasets import dataset_description, list_datasets, load_manifest, parse_options
from east.datasets.check import check_manifest_audio
from east.datasets.splits import bernoulli_split, random_split, stratified_split
from east.errors import DatasetError
from east.testing import layouts


@pytest.fixture(scope="module")
def openmic_meta(shared: Path) -> Path:
    meta = shared / "data" / "openmic-meta"
    if not (meta / "split01_train.csv").is_file():
        pytest.skip(f"{meta} holds no OpenMIC partitions")
    return meta


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("layouts")


def test_registry() -> None:
    assert list_datasets() == ["esc50", "fma_small", "folder", "mtat", "openmic"]
    for name in list_datasets():
        assert dataset_description(name) and "\n" not in dataset_description(name)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_manifest("esc-50", ".")
    assert parse_options(["test_fold=3", "split=folds", "seed=0", "x=null", "f=0.1"]) == {
        "test_fold": 3,
        "split": "folds",
        "seed": 0,
        "x": None,
        "f": 0.1,
    }
    with pytest.raises(DatasetError):
        parse_options(["no_equals_sign"])


# ---------------------------------------------------------------- ESC-50


def test_esc50_real_subset(esc50_root: Path) -> None:
    with (esc50_root / "meta" / "esc50.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    m = load_manifest("esc50", esc50_root)
    assert len(m) == len(rows) == 414
    assert m.num_classes == 50 and m.task == "multiclass" and m.mask is None
    assert dict(Counter(m.extra["fold"].tolist())) == {4: 400, 2: 11, 3: 1, 5: 2}
    assert m.clip_ids == [Path(r["filename"]).stem for r in rows]
    np.testing.assert_array_equal(m.targets, [int(r["target"]) for r in rows])
    assert {m.class_names[int(r["target"])] for r in rows} == {r["category"] for r in rows}
    # folds 1 is absent → auto = stratified 0.6 / 0.2 / 0.2, every class in every split
    assert m.split_counts() == {"train": 248, "valid": 83, "test": 83}
    for split in ("train", "valid", "test"):
        assert set(m.targets[m.indices(split)].tolist()) == set(range(50))
    assert all(m.audio_path(i).is_file() for i in range(len(m)))


def test_esc50_hash_is_stable_and_tied_to_clips(esc50_root: Path) -> None:
    a = load_manifest("esc50", esc50_root)
    b = load_manifest("esc50", esc50_root, seed=1)
    c = load_manifest("esc50", esc50_root, split="folds", test_fold=4, valid_fold=2)
    assert a.hash == b.hash == c.hash  # splits do not change which clips a cache holds
    assert len({a.labels_hash, b.labels_hash, c.labels_hash}) == 3
    assert load_manifest("esc50", esc50_root).labels_hash == a.labels_hash
    assert a.select(np.arange(10)).hash != a.hash


def test_esc50_official_folds(fixture_root: Path) -> None:
    root = layouts.make_esc50(fixture_root / "esc50", clips_per_class=5, num_classes=4)
    m = load_manifest("esc50", root)
    folds = m.extra["fold"]
    assert m.info["split_rule"].startswith("official folds")
    np.testing.assert_array_equal(m.splits == "test", folds == 5)
    np.testing.assert_array_equal(m.splits == "valid", folds == 4)
    m1 = load_manifest("esc50", root, test_fold=1)
    np.testing.assert_array_equal(m1.splits == "valid", folds == 5)  # the fold before, wrapped
    m2 = load_manifest("esc50", root, test_fold=2, valid_fold=3)
    assert m2.split_counts() == {"train": 12, "valid": 4, "test": 4}
    with pytest.raises(DatasetError, match="both"):
        load_manifest("esc50", root, test_fold=2, valid_fold=2)
    with pytest.raises(DatasetError, match="option split='random'"):
        load_manifest("esc50", root, split="random")


def test_esc50_partial_folds(fixture_root: Path) -> None:
    root = layouts.make_esc50(
        fixture_root / "esc50_partial", clips_per_class=10, num_classes=3, folds=(2, 4)
    )
    m = load_manifest("esc50", root)
    assert m.info["split_rule"].startswith("stratified")
    assert m.split_counts() == {"train": 18, "valid": 6, "test": 6}
    with pytest.raises(DatasetError, match="test_fold=5 holds no clips"):
        load_manifest("esc50", root, split="folds")


def test_esc50_missing_audio_policies(fixture_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "esc"
    shutil.copytree(layouts.make_esc50(fixture_root / "esc50_src", num_classes=2), root)
    gone = sorted((root / "audio").iterdir())[0]
    gone.unlink()
    m = load_manifest("esc50", root)
    assert len(m) == 9 and m.info["missing"] == [gone.stem]
    assert len(load_manifest("esc50", root, on_missing="keep")) == 10
    with pytest.raises(DatasetError, match=gone.stem):
        load_manifest("esc50", root, on_missing="error")


# ---------------------------------------------------------------- OpenMIC


def test_openmic_real_keys(fixture_root: Path, openmic_meta: Path) -> None:
    root = layouts.make_openmic(
        fixture_root / "openmic", num_train=30, num_test=10, meta_dir=openmic_meta
    )
    m = load_manifest("openmic", root)
    class_map = json.loads((openmic_meta / "class-map.json").read_text())
    assert m.class_names == sorted(class_map, key=class_map.get) and m.num_classes == 20
    with np.load(root / "openmic-2018.npz") as npz:
        keys = [str(k) for k in npz["sample_key"]]
        y_true, y_mask = npz["Y_true"], npz["Y_mask"]
    assert m.clip_ids == keys  # npz order
    np.testing.assert_array_equal(m.mask, y_mask)
    np.testing.assert_array_equal(m.targets, (y_true > 0.5) & y_mask)
    assert m.targets.dtype == np.float32 and m.task == "multilabel"
    train_keys = (root / "partitions" / "split01_train.csv").read_text().split()
    test_keys = (root / "partitions" / "split01_test.csv").read_text().split()
    assert set(np.array(m.clip_ids)[m.indices("test")]) == set(test_keys)
    not_test = set(np.array(m.clip_ids)[m.splits != "test"])
    assert not_test == set(train_keys)
    assert m.rel_paths[0] == f"audio/{keys[0][:3]}/{keys[0]}.ogg"
    assert all(m.audio_path(i).is_file() for i in range(len(m)))
    # another seed moves clips between train and valid only
    other = load_manifest("openmic", root, seed=7)
    assert other.hash == m.hash
    np.testing.assert_array_equal(other.splits == "test", m.splits == "test")


def test_openmic_full_split_arithmetic(tmp_path: Path, openmic_meta: Path) -> None:
    root = layouts.make_openmic(
        tmp_path / "openmic_full",
        num_train=None,
        num_test=None,
        meta_dir=openmic_meta,
        write_audio_files=False,
    )
    m = load_manifest("openmic", root, on_missing="keep")
    assert len(m) == 20000
    assert m.split_counts() == {"train": 12692, "valid": 2223, "test": 5085}
    dropped = load_manifest("openmic", root)  # no audio at all → everything is missing
    assert len(dropped) == 0 and len(dropped.info["missing"]) == 20000


def test_openmic_synthetic_without_meta(fixture_root: Path) -> None:
    root = layouts.make_openmic(fixture_root / "openmic_syn", num_train=8, num_test=3)
    m = load_manifest("openmic", root)
    assert len(m) == 11 and m.split_counts()["test"] == 3 and m.num_classes == 20


# ---------------------------------------------------------------- MTAT


def test_mtat_top_tags_split_and_drop(fixture_root: Path) -> None:
    root = layouts.make_mtat(fixture_root / "mtat", num_clips=48, num_tag_columns=60, untagged=3)
    with (root / "annotations_final.csv").open(newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    header, body = rows[0], rows[1:]
    tags = header[1:-1]
    counts = Counter({t: sum(int(r[1 + i]) for r in body) for i, t in enumerate(tags)})
    # the 50 most frequent; ties keep column order (sorted is stable)
    top = sorted(tags, key=lambda t: -counts[t])[:50]
    m = load_manifest("mtat", root)
    assert m.class_names == top and m.num_classes == 50
    keep = [r for r in body if any(int(r[1 + tags.index(t)]) for t in top)]
    assert m.clip_ids == [r[0] for r in keep] and len(keep) < len(body)
    assert m.info["dropped_no_tag"] == len(body) - len(keep)
    for i, r in enumerate(keep):
        np.testing.assert_array_equal(m.targets[i], [int(r[1 + tags.index(t)]) for t in top])
        folder = r[-1].split("/")[0]
        expected = "valid" if folder == "c" else "test" if folder in "def" else "train"
        assert m.splits[i] == expected
    assert m.mask is not None and m.mask.all()
    assert load_manifest("mtat", root, num_tags=10).num_classes == 10


# ---------------------------------------------------------------- FMA


def test_fma_small(fixture_root: Path) -> None:
    root = layouts.make_fma_small(fixture_root / "fma", clips_per_genre=4, missing_audio=1)
    m = load_manifest("fma_small", root)
    assert m.class_names == sorted(layouts.FMA_GENRES) and m.task == "multiclass"
    assert m.info["excluded_broken"] == ["099134", "108925", "133297"]
    assert len(m.info["missing"]) == 1
    assert len(m) == 8 * 4 - 1
    # labels and splits agree with the path each fixture clip was written for
    with (root / "fma_metadata" / "tracks.csv").open(newline="") as fh:
        body = list(csv.reader(fh))[3:]
    genre = {int(r[0]): r[6] for r in body}
    split = {int(r[0]): r[4] for r in body}
    names = {"training": "train", "validation": "valid", "test": "test"}
    for i, cid in enumerate(m.clip_ids):
        assert m.class_names[m.targets[i]] == genre[int(cid)]
        assert m.splits[i] == names[split[int(cid)]]
        assert m.rel_paths[i] == f"fma_small/{cid[:3]}/{cid}.mp3"
    small = {int(r[0]) for r in body if r[5] == "small"} - set(layouts.FMA_BROKEN)
    assert {int(c) for c in m.clip_ids} | {int(c) for c in m.info["missing"]} == small


# ---------------------------------------------------------------- folder


def test_folder_single_label(fixture_root: Path) -> None:
    root = layouts.make_folder(fixture_root / "folder_single", clips_per_class=10)
    m = load_manifest("folder", root)
    assert m.class_names == ["bird", "car", "dog"] and m.task == "multiclass"
    share = int(np.floor(0.15 * 30 + 0.5))  # 4.5 rounds half up over the whole set
    assert m.split_counts() == {"train": 30 - 2 * share, "valid": share, "test": share}
    for i, rel in enumerate(m.rel_paths):
        assert m.class_names[m.targets[i]] == rel.split("/")[1]
    again = load_manifest("folder", root)
    np.testing.assert_array_equal(again.splits, m.splits)
    assert (load_manifest("folder", root, seed=5).splits != m.splits).any()


def test_folder_multilabel_and_split_column(fixture_root: Path) -> None:
    root = layouts.make_folder(fixture_root / "folder_multi", multilabel=True, with_split=True)
    m = load_manifest("folder", root)
    with (root / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert m.task == "multilabel" and m.mask is not None
    for i, r in enumerate(rows):
        assert {m.class_names[c] for c in np.flatnonzero(m.targets[i])} == set(
            r["labels"].split(";")
        )
        assert m.splits[i] == r["split"]


def test_folder_subfolders_without_csv(tmp_path: Path) -> None:
    root = layouts.make_folder(tmp_path / "f", classes=("a", "b"), clips_per_class=4)
    (root / "labels.csv").unlink()
    m = load_manifest("folder", root / "audio")
    assert m.class_names == ["a", "b"] and len(m) == 8
    assert m.info["labels_from"] == "sub-folders"


def test_folder_bad_csv(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,label,labels\nx.wav,a,a\n")
    with pytest.raises(DatasetError, match="exactly one"):
        load_manifest("folder", tmp_path)
    (tmp_path / "labels.csv").write_text("path,label,split\nx.wav,a,holdout\n")
    with pytest.raises(DatasetError, match="holdout"):
        load_manifest("folder", tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\nx.wav,a\n")
    with pytest.raises(DatasetError, match="lacks column"):
        load_manifest("folder", tmp_path)


# ---------------------------------------------------------------- bad roots


@pytest.mark.parametrize(
    ("name", "missing"),
    [
        ("esc50", "meta/esc50.csv"),
        ("openmic", "openmic-2018.npz"),
        ("mtat", "annotations_final.csv"),
        ("fma_small", "fma_metadata/tracks.csv"),
        ("folder", "labels.csv"),
    ],
)
def test_bad_root_names_missing_file(tmp_path: Path, name: str, missing: str) -> None:
    with pytest.raises(DatasetError) as info:
        load_manifest(name, tmp_path)
    assert missing in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="not a folder"):
        load_manifest(name, tmp_path / "nope")


def test_unknown_option(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown option"):
        load_manifest("esc50", tmp_path, tset_fold=1)


def test_option_values_are_typed(fixture_root: Path) -> None:
    """Options as a config file gives them (Python values, not CLI text) are checked too."""
    root = layouts.make_esc50(fixture_root / "esc50_typed", clips_per_class=2, num_classes=2)
    for options, fragment in (
        ({"seed": "3"}, "seed='3'"),  # strict: a quoted number in YAML is text, not a seed
        ({"seed": -1}, "an integer >= 0"),
        ({"valid_fraction": 1.0}, "[0, 1)"),
        ({"valid_fold": 6}, "1..5 or null"),
        ({"on_missing": None}, "one of drop, keep, error"),
    ):
        with pytest.raises(DatasetError, match=re.escape(fragment)):
            load_manifest("esc50", root, **options)
    m = load_manifest("esc50", root, valid_fraction=0, test_fraction=0.5, split="stratified")
    assert set(m.split_counts()) == {"train", "test"}  # an int where a float is expected


def test_text_option_takes_a_number(tmp_path: Path) -> None:
    root = layouts.make_folder(tmp_path / "f", classes=("a", "b"), clips_per_class=2)
    (root / "labels.csv").rename(root / "2024")
    opts = parse_options(["csv=2024"])
    assert opts == {"csv": 2024}  # YAML reads a number; the text option takes it as a name
    assert len(load_manifest("folder", root, **opts)) == 4


def test_csv_defects_name_their_line(tmp_path: Path) -> None:
    """Line numbers count file lines, also past FMA's quoted multi-line fields."""
    root = layouts.make_fma_small(tmp_path / "fma", clips_per_genre=1, genres=("Pop",))
    path = root / "fma_metadata" / "tracks.csv"
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert all(r[7].count("\n") == 1 for r in rows[3:])  # every record spans two lines
    rows[5] = rows[5][:3]  # the third track: lines 1-3 headers, then 4-5, 6-7, 8
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(DatasetError, match=r"tracks.csv line 8: short row"):
        load_manifest("fma_small", root)


# ---------------------------------------------------------------- splits and check


def test_split_helpers() -> None:
    labels = np.repeat(np.arange(7), [1, 2, 3, 5, 8, 13, 21])
    s = stratified_split(labels, 0.2, 0.2, seed=0)
    n = len(labels)
    assert (s == "test").sum() == round(0.2 * n) and (s == "valid").sum() == round(0.2 * n)
    for c in range(7):
        assert (s[labels == c] == "train").any()
    np.testing.assert_array_equal(s, stratified_split(labels, 0.2, 0.2, seed=0))
    r = random_split(100, 0.15, 0.15, seed=1)
    assert Counter(r.tolist()) == {"train": 70, "valid": 15, "test": 15}
    b = bernoulli_split(20000, 0.15, seed=3)
    assert abs(b.mean() - 0.15) < 0.01
    with pytest.raises(ValueError):
        random_split(10, 0.6, 0.5, seed=0)


def test_check_finds_bad_clips(fixture_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "esc"
    shutil.copytree(layouts.make_esc50(fixture_root / "esc50_check", num_classes=2), root)
    files = sorted((root / "audio").iterdir())
    files[1].write_bytes(b"")
    files[4].write_text("hello")
    files[6].unlink()
    m = load_manifest("esc50", root, on_missing="keep")
    ticks: list[int] = []
    bad = check_manifest_audio(m, workers=2, on_progress=ticks.append)
    assert sum(ticks) == len(m)
    found = {b.clip_id: b.reason for b in bad}
    assert set(found) == {files[1].stem, files[4].stem, files[6].stem}
    assert "0 bytes" in found[files[1].stem] and "not an audio" in found[files[4].stem]
    assert "not found" in found[files[6].stem]
    assert [b.clip_id for b in check_manifest_audio(m, workers=1)] == [b.clip_id for b in bad]
