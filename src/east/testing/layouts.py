"""Tiny datasets in each official layout, with short synthetic audio.

Used by the tests, the benchmarks and the demo. Every builder writes under ``root`` (created
if needed) the same files, names and formats the real dataset uses, and returns ``root`` so
that ``east.datasets.load_manifest(name, make_<name>(tmp))`` works directly.

The audio is learnable on purpose: each class is a harmonic tone at its own pitch with its own
amplitude-modulation rate, plus a little noise; a multi-label clip mixes the tones of its
positive classes. Formats follow the real datasets: ESC-50 WAV, OpenMIC Ogg/Vorbis, MTAT and
FMA MP3 (libsndfile ≥ 1.1 writes MP3).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

__all__ = [
    "ESC50_CATEGORIES",
    "FMA_BROKEN",
    "FMA_GENRES",
    "class_tone",
    "make_esc50",
    "make_fma_small",
    "make_folder",
    "make_mtat",
    "make_openmic",
    "write_audio",
    "write_esc50_meta",
]

# ESC-50 category names in target order (meta/esc50.csv)
ESC50_CATEGORIES = (
    "dog",
    "rooster",
    "pig",
    "cow",
    "frog",
    "cat",
    "hen",
    "insects",
    "sheep",
    "crow",
    "rain",
    "sea_waves",
    "crackling_fire",
    "crickets",
    "chirping_birds",
    "water_drops",
    "wind",
    "pouring_water",
    "toilet_flush",
    "thunderstorm",
    "crying_baby",
    "sneezing",
    "clapping",
    "breathing",
    "coughing",
    "footsteps",
    "laughing",
    "brushing_teeth",
    "snoring",
    "drinking_sipping",
    "door_wood_knock",
    "mouse_click",
    "keyboard_typing",
    "door_wood_creaks",
    "can_opening",
    "washing_machine",
    "vacuum_cleaner",
    "clock_alarm",
    "clock_tick",
    "glass_breaking",
    "helicopter",
    "chainsaw",
    "siren",
    "car_horn",
    "engine",
    "train",
    "church_bells",
    "airplane",
    "fireworks",
    "hand_saw",
)
FMA_GENRES = (
    "Electronic",
    "Experimental",
    "Folk",
    "Hip-Hop",
    "Instrumental",
    "International",
    "Pop",
    "Rock",
)
FMA_BROKEN = (99134, 108925, 133297)
_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


def class_tone(
    classes: Sequence[int],
    num_classes: int,
    seconds: float,
    sr: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Float32 mono mixture of the tones of ``classes`` (silence plus noise when empty).

    Class ``c`` of ``num_classes`` is a two-harmonic tone at ``110 * 2 ** (5 c / num_classes)``
    Hz (five octaves across the classes), amplitude-modulated at ``1 + c % 5`` Hz.
    """
    n = max(round(seconds * sr), 1)
    t = np.arange(n) / sr
    x = np.zeros(n)
    for c in classes:
        f0 = 110.0 * 2.0 ** (5.0 * c / max(num_classes, 1))
        phase = rng.uniform(0, 2 * np.pi)
        tone = np.sin(2 * np.pi * f0 * t + phase) + 0.4 * np.sin(4 * np.pi * f0 * t + phase)
        x += tone * (0.6 + 0.4 * np.sin(2 * np.pi * (1 + c % 5) * t))
    x += 0.02 * rng.standard_normal(n)
    peak = np.abs(x).max()
    return (0.5 * x / peak).astype(np.float32) if peak > 0 else x.astype(np.float32)


def write_audio(path: Path, x: np.ndarray, sr: int) -> Path:
    """Write ``x`` to ``path`` in the format its suffix names (wav, flac, ogg, mp3)."""
    fmt, subtype = _FORMATS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, format=fmt, subtype=subtype)
    return path


def make_esc50(
    root: str | Path,
    *,
    clips_per_class: int = 5,
    num_classes: int = 5,
    folds: Sequence[int] = (1, 2, 3, 4, 5),
    seconds: float = 1.0,
    sr: int = 16000,
    ext: str = ".wav",
    seed: int = 0,
) -> Path:
    """ESC-50 layout: ``meta/esc50.csv`` and ``audio/<fold>-<src>-<take>-<target>.wav``.

    Clip ``j`` of each class lands in ``folds[j % len(folds)]``; categories are the real
    ESC-50 names of targets ``0 .. num_classes - 1``.
    """
    root = Path(root)
    if not 1 <= num_classes <= len(ESC50_CATEGORIES):
        raise ValueError(f"num_classes must be 1..{len(ESC50_CATEGORIES)}")
    rng = np.random.default_rng(seed)
    rows = []
    for target in range(num_classes):
        for j in range(clips_per_class):
            fold = int(folds[j % len(folds)])
            src = 100000 + 1000 * target + j
            name = f"{fold}-{src}-A-{target}{ext}"
            write_audio(
                root / "audio" / name, class_tone([target], num_classes, seconds, sr, rng), sr
            )
            rows.append([name, fold, target, ESC50_CATEGORIES[target], target < 10, src, "A"])
    return write_esc50_meta(root, rows)


def write_esc50_meta(root: Path, rows: list[list[Any]]) -> Path:
    """``meta/esc50.csv`` of ``rows`` (filename, fold, target, category, esc10, src_file, take),
    sorted by file name as the real CSV is; returns ``root``."""
    rows = sorted(rows, key=lambda r: r[0])
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with (root / "meta" / "esc50.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)
    return root


def _read_keys(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def make_openmic(
    root: str | Path,
    *,
    num_train: int | None = 12,
    num_test: int | None = 4,
    meta_dir: str | Path | None = None,
    seconds: float = 1.0,
    sr: int = 16000,
    known_fraction: float = 0.5,
    write_audio_files: bool = True,
    seed: int = 0,
) -> Path:
    """OpenMIC-2018 layout: npz, ``class-map.json``, split01 partitions, ``audio/*/*.ogg``.

    Args:
        meta_dir: folder with the real ``class-map.json`` and ``split01_{train,test}.csv``
            (e.g. ``$EAST_SHARED/data/openmic-meta``); the fixture then uses the real class
            map and the first ``num_train`` / ``num_test`` real sample keys (all when
            ``None``). Without it, 20 synthetic classes and keys.
        known_fraction: share of (clip, class) labels marked known in ``Y_mask``.
        write_audio_files: ``False`` writes only the metadata (for split arithmetic on the
            full 20,000 keys; load with ``on_missing="keep"``).

    ``Y_true`` is uniform in [0, 1] (positive above 0.5); ``sample_key`` is stored shuffled,
    not in partition order, as the adapter must not rely on the two agreeing.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    if meta_dir is not None:
        meta = Path(meta_dir)
        class_map = json.loads((meta / "class-map.json").read_text())
        train_keys = _read_keys(meta / "split01_train.csv")[:num_train]
        test_keys = _read_keys(meta / "split01_test.csv")[:num_test]
    else:
        class_map = {f"instrument_{i:02d}": i for i in range(20)}
        n_train, n_test = num_train or 12, num_test or 4
        tracks = rng.choice(155000, size=n_train + n_test, replace=False)
        keys = [f"{t:06d}_{int(rng.integers(0, 60)) * 3840}" for t in tracks]
        train_keys, test_keys = keys[:n_train], keys[n_train:]
    num_classes = len(class_map)
    keys = train_keys + test_keys
    order = rng.permutation(len(keys))
    sample_key = np.array([keys[i] for i in order])
    y_true = rng.uniform(0.0, 1.0, size=(len(keys), num_classes)).astype(np.float32)
    y_mask = rng.uniform(size=y_true.shape) < known_fraction
    y_true[~y_mask] = 0.5  # OpenMIC stores 0.5 where no annotator said anything
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "openmic-2018.npz", Y_true=y_true, Y_mask=y_mask, sample_key=sample_key)
    (root / "class-map.json").write_text(json.dumps(class_map, indent=4))
    (root / "partitions").mkdir(exist_ok=True)
    (root / "partitions" / "split01_train.csv").write_text("".join(k + "\n" for k in train_keys))
    (root / "partitions" / "split01_test.csv").write_text("".join(k + "\n" for k in test_keys))
    if write_audio_files:
        for i, key in enumerate(sample_key):
            positive = np.flatnonzero(y_mask[i] & (y_true[i] > 0.5))
            x = class_tone(positive.tolist(), num_classes, seconds, sr, rng)
            write_audio(root / "audio" / key[:3] / f"{key}.ogg", x, sr)
    return root


def make_mtat(
    root: str | Path,
    *,
    num_clips: int = 48,
    num_tag_columns: int = 60,
    untagged: int = 3,
    seconds: float = 1.0,
    sr: int = 16000,
    seed: int = 0,
) -> Path:
    """MagnaTagATune layout: tab-separated quoted ``annotations_final.csv`` + ``<0-f>/*.mp3``.

    Tag ``i`` is positive with probability ``0.6 * exp(-i / 15)``, so the columns have
    different counts and the top 50 of ``num_tag_columns`` is a real selection; the last
    ``untagged`` clips have no positive tag at all. Clip ``n`` is in folder ``hex(n % 16)``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    tags = [f"tag_{i:03d}" for i in range(num_tag_columns)]
    prob = 0.6 * np.exp(-np.arange(num_tag_columns) / 15.0)
    labels = rng.uniform(size=(num_clips, num_tag_columns)) < prob
    if untagged:
        labels[-untagged:] = False
    root.mkdir(parents=True, exist_ok=True)
    with (root / "annotations_final.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(["clip_id", *tags, "mp3_path"])
        for n in range(num_clips):
            folder = "0123456789abcdef"[n % 16]
            rel = f"{folder}/artist_{n % 5}-album_{n % 7}-{n % 12 + 1:02d}-track_{n}-30-59.mp3"
            clip_id = 2 + 7 * n  # real ids are sparse integers
            writer.writerow([clip_id, *labels[n].astype(int).tolist(), rel])
            x = class_tone(np.flatnonzero(labels[n]).tolist(), num_tag_columns, seconds, sr, rng)
            write_audio(root / rel, x, sr)
    return root


def make_fma_small(
    root: str | Path,
    *,
    clips_per_genre: int = 4,
    genres: Sequence[str] = FMA_GENRES,
    include_broken: bool = True,
    missing_audio: int = 1,
    other_subsets: int = 3,
    seconds: float = 1.0,
    sr: int = 16000,
    seed: int = 0,
) -> Path:
    """FMA layout: ``fma_metadata/tracks.csv`` (two header rows + index row) + ``fma_small``.

    Per genre, splits cycle training, training, validation, test. With ``include_broken`` the
    three known-broken small tracks are listed and their mp3 is a cut-off stub; the first
    ``missing_audio`` small tracks get no mp3; ``other_subsets`` medium/large tracks (no
    audio) must be ignored. Text columns hold commas, quotes and line breaks like the real file.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    cycle = ("training", "training", "validation", "test")
    rows: list[tuple[int, str, str, str]] = []  # (id, split, subset, genre)
    used = set(FMA_BROKEN)
    for genre in genres:
        for j in range(clips_per_genre):
            tid = int(rng.integers(2, 155000))
            while tid in used:
                tid = int(rng.integers(2, 155000))
            used.add(tid)
            rows.append((tid, cycle[j % len(cycle)], "small", genre))
    if include_broken:
        rows += [(tid, "training", "small", genres[0]) for tid in FMA_BROKEN]
    for k in range(other_subsets):
        rows.append((155000 + k, "training", ("medium", "large")[k % 2], "" if k % 2 else "Blues"))
    rows.sort()

    top = ["", "album", "album", "artist", "set", "set", "track", "track", "track"]
    sub = ["", "comments", "title", "name", "split", "subset", "genre_top", "information", "title"]
    (root / "fma_metadata").mkdir(parents=True, exist_ok=True)
    with (root / "fma_metadata" / "tracks.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(top)
        writer.writerow(sub)
        writer.writerow(["track_id"] + [""] * (len(top) - 1))
        for tid, split, subset, genre in rows:
            info = f'<p>Recorded live, "take {tid % 3}"\nsecond line, with commas</p>'
            writer.writerow([tid, 0, f"Album {tid % 11}", f"Artist, {tid % 13}", split, subset,
                             genre, info, f"Track {tid}"])  # fmt: skip

    small = [r for r in rows if r[2] == "small"]
    skip = {r[0] for r in small if r[0] not in FMA_BROKEN}
    skip = set(sorted(skip)[:missing_audio])
    genre_index = {g: i for i, g in enumerate(genres)}
    for tid, _, _, genre in small:
        if tid in skip:
            continue
        tid6 = f"{tid:06d}"
        path = root / "fma_small" / tid6[:3] / f"{tid6}.mp3"
        x = class_tone([genre_index[genre]], len(genres), seconds, sr, rng)
        write_audio(path, x, sr)
        if tid in FMA_BROKEN:
            path.write_bytes(
                path.read_bytes()[:200]
            )  # cut off: fails to decode, like the real ones
    return root


def make_folder(
    root: str | Path,
    *,
    classes: Sequence[str] = ("bird", "car", "dog"),
    clips_per_class: int = 6,
    multilabel: bool = False,
    with_split: bool = False,
    csv_name: str = "labels.csv",
    seconds: float = 1.0,
    sr: int = 16000,
    ext: str = ".wav",
    seed: int = 0,
) -> Path:
    """A user folder: ``audio/<class>/<class>_<j>.wav`` and ``labels.csv``.

    Single-label: columns ``path,label``. Multi-label: ``path,labels`` where clip ``j`` of a
    class also carries the next class when ``j`` is odd (``;``-separated). ``with_split``
    adds a ``split`` column (every fourth clip valid, every fifth test).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    header = ["path", "labels" if multilabel else "label"] + (["split"] if with_split else [])
    lines = []
    k = 0
    for c, name in enumerate(classes):
        for j in range(clips_per_class):
            positive = [c]
            if multilabel and j % 2 == 1:
                positive.append((c + 1) % len(classes))
            rel = f"audio/{name}/{name}_{j:03d}{ext}"
            write_audio(root / rel, class_tone(positive, len(classes), seconds, sr, rng), sr)
            row = [rel, ";".join(classes[p] for p in positive)]
            if with_split:
                row.append("test" if k % 5 == 4 else "valid" if k % 4 == 3 else "train")
            lines.append(row)
            k += 1
    with (root / csv_name).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(lines)
    return root
