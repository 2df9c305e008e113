"""Export an embedding store in hear-eval-kit's layout (``east cache export --format hear``).

hear-eval-kit (``heareval.embeddings.task_embeddings``) writes one folder per task and reads it
back in ``heareval.predictions``; this module writes the same folder from a store, so a store
is evaluated by hear-eval-kit without re-extraction::

    OUT/
      <split>/<file>.embedding.npy       float32: (T, D) event embeddings, or (D,) scene
      <split>/<file>.timestamps.json     event only: frame centres in milliseconds
      <split>/<file>.target-labels.json  with a manifest: the clip's labels (scene), or the
                                         labels at every timestamp (event)
      <split>.json                       with a manifest: file -> labels (scene) or events
      <split>.embeddings.npy             with a manifest: the split's embeddings stacked
                                         (raw float32, np.memmap's layout, as hear-eval-kit)
      <split>.embedding-dimensions.json  [rows, D]
      <split>.target-labels.pkl          the labels of every row
      <split>.filename-timestamps.json   event only: [file, timestamp ms] of every row
      task_metadata.json, labelvocabulary.csv   with a manifest
      east-hear-export.json              east's mark: what made this folder

``<file>`` is the clip id (characters outside ``[A-Za-z0-9._-]`` become ``_``). Only done
clips are exported. Without a manifest every clip goes to ``all/`` with no labels. East's
datasets label whole clips: an *event* export (the default for frame stores) labels every
frame of a clip with the clip's labels (events spanning the clip), a *scene* export (the
default for clip-level stores; ``--embedding-type scene`` for frame stores: the time mean of
the valid frames) gives one embedding per clip. Multi-label clips list their positive labels
(labels unknown in a partly labelled dataset are left out).

``OUT`` is built in a hidden sibling folder and renamed into place; an existing ``OUT`` is
replaced only when it is empty or is an earlier export (its mark present and every file in it
listed there), so nothing east did not make is ever deleted.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from east.errors import EastError

__all__ = ["MARK", "HearExport", "export_hear"]

MARK = "east-hear-export.json"
EmbeddingType = Literal["event", "scene"]
_SPLITS = ("train", "valid", "test")


@dataclass
class HearExport:
    """What an export wrote."""

    out: Path
    embedding_type: str
    clips: int = 0
    skipped: int = 0  # clips not done in the store
    splits: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        parts = ", ".join(f"{s} {n}" for s, n in self.splits.items())
        return (
            f"exported {self.clips} clips ({parts}) as hear-eval-kit {self.embedding_type} "
            f"embeddings to {self.out}; {self.skipped} clips not done were left out"
        )


def _file_names(clip_ids: list[str]) -> list[str]:
    names = [re.sub(r"[^A-Za-z0-9._-]", "_", c) for c in clip_ids]
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
        raise EastError(f"clip ids map to the same hear file name {dup!r}; cannot export")
    return names


def _check_out(out: Path) -> bool:
    """Whether ``out`` holds an earlier export (to replace); refuse anything else non-empty."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise EastError(f"--out {out} is a file; give a folder")
    entries = list(out.iterdir())
    if not entries:
        return False
    mark = out / MARK
    try:
        listed = set(json.loads(mark.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise EastError(
            f"--out {out} is a non-empty folder east did not export into; give an empty or "
            "new folder (nothing was written)"
        ) from None
    present = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {MARK}
    foreign = sorted(present - listed)
    if foreign:
        raise EastError(
            f"--out {out} holds files east did not write ({', '.join(foreign[:3])}); "
            "give an empty or new folder (nothing was written)"
        )
    return True


def _labels(manifest: Any, row: int) -> list[str]:
    names = manifest.class_names
    if not manifest.multilabel:
        return [names[int(manifest.targets[row])]]
    known = manifest.known_mask()[row]
    return [names[c] for c in np.flatnonzero((manifest.targets[row] > 0.5) & known)]


def _metadata(manifest: Any, kind: str, splits: list[str], seconds: float) -> dict[str, Any]:
    if kind == "event":
        prediction, evaluation = "multilabel", ["event_onset_200ms_fms", "segment_1s_er"]
    elif manifest.multilabel:
        prediction, evaluation = "multilabel", ["mAP", "d_prime"]
    else:
        prediction, evaluation = "multiclass", ["top1_acc"]
    return {
        "task_name": manifest.name,
        "version": "east-export",
        "embedding_type": kind,
        "prediction_type": prediction,
        "split_mode": "trainvaltest",
        "splits": splits,
        "sample_duration": seconds,
        "evaluation": evaluation,
        "source": "east cache export --format hear",
    }


class _Writer:
    """Writes the files of one export into ``root`` and remembers them (for the mark)."""

    def __init__(self, root: Path, out: Path) -> None:
        self.root, self.out, self.files = root, out, []  # type: tuple[Path, Path, list[str]]

    def path(self, rel: str) -> Path:
        self.files.append(rel)
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def json(self, rel: str, value: Any) -> None:
        self.path(rel).write_text(json.dumps(value))


def _write_clips(
    store: Any, manifest: Any, kind: str, writer: _Writer, summary: HearExport
) -> dict[str, list[tuple[str, np.ndarray, np.ndarray | None, list[str], float]]]:
    """Write every done clip's files; return per split ``(file, emb, timestamps, labels,
    duration_ms)`` for the split-level files."""
    from east.cache_schema import iter_chunks

    names = _file_names(store.clip_ids)
    done = np.flatnonzero(store.done)
    summary.skipped = store.num_clips - len(done)
    sr = float(store.attrs["sample_rate"])
    num_samples = store.array("num_samples")[:]
    rows_by_split: dict[str, list[tuple[Any, ...]]] = {}
    for rows in iter_chunks(store, done).values():
        batch = store.read(rows)
        for j, row in enumerate(rows):
            nf = int(batch.num_frames[j])
            frames = np.asarray(batch.embeddings[j, :nf], dtype=np.float32)
            split = str(manifest.splits[row]) if manifest is not None else "all"
            stem = f"{split}/{names[row]}"
            stamps = None
            if kind == "scene":
                emb = frames.mean(axis=0).astype(np.float32)
            else:
                emb = frames
                stamps = batch.frame_times[j, :nf].mean(axis=1) * 1000.0  # centres, ms
                writer.json(f"{stem}.timestamps.json", stamps.tolist())
            np.save(writer.path(f"{stem}.embedding.npy"), emb)
            labels = _labels(manifest, row) if manifest is not None else []
            if manifest is not None:
                target = labels if stamps is None else [labels] * len(stamps)
                writer.json(f"{stem}.target-labels.json", target)
            duration = 1000.0 * float(num_samples[row]) / sr
            rows_by_split.setdefault(split, []).append((names[row], emb, stamps, labels, duration))
            summary.splits[split] = summary.splits.get(split, 0) + 1
            summary.clips += 1
    return rows_by_split  # type: ignore[return-value]


def _write_split_files(split: str, rows: list[tuple[Any, ...]], kind: str, writer: _Writer) -> None:
    """``<split>.json`` and the stacked files hear-eval-kit's predictions read."""
    truth: dict[str, Any] = {}
    labels: list[Any] = []
    stamps: list[tuple[str, float]] = []
    blocks = []
    for name, emb, ts, lbl, duration in rows:
        if kind == "scene":
            truth[name] = lbl
            labels.append(lbl)
            blocks.append(emb[None])
        else:
            truth[name] = [{"label": x, "start": 0.0, "end": duration} for x in lbl]
            labels.extend([lbl] * len(ts))
            slug = str(writer.out / split / name)
            stamps.extend((slug, float(t)) for t in ts)
            blocks.append(emb)
    stacked = np.concatenate(blocks).astype("<f4")
    writer.json(f"{split}.json", truth)
    stacked.tofile(writer.path(f"{split}.embeddings.npy"))  # np.memmap's raw layout
    writer.json(f"{split}.embedding-dimensions.json", list(stacked.shape))
    with writer.path(f"{split}.target-labels.pkl").open("wb") as f:
        pickle.dump(labels, f)
    if kind == "event":
        writer.json(f"{split}.filename-timestamps.json", stamps)


def export_hear(
    store_path: str | Path,
    out: str | Path,
    manifest: Any = None,
    embedding_type: EmbeddingType | None = None,
) -> HearExport:
    """Write the done clips of the store at ``store_path`` into ``out`` in hear-eval-kit's
    layout (see the module docstring); with ``manifest``, also its splits and labels."""
    from east.cache_schema import open_store

    store = open_store(store_path)
    clip_level = bool(store.attrs.get("clip_level", store.attrs.get("window_s") is None))
    kind = embedding_type or ("scene" if clip_level else "event")
    if kind not in ("event", "scene"):
        raise EastError(f"--embedding-type must be event or scene (got {kind!r})")
    if manifest is not None:
        store.check_manifest(manifest)
        missing = [s for s in _SPLITS if s not in set(np.asarray(manifest.splits).tolist())]
        if missing:
            raise EastError(
                f"{manifest.name}: hear-eval-kit needs train, valid and test splits; this "
                f"manifest has no {', '.join(missing)} (choose a split with --option)"
            )
    if not store.done.any():
        raise EastError(f"{store_path}: no clip is done yet; nothing to export")
    out = Path(out).expanduser().absolute()
    replace = _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.exporting-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover of this pid
    tmp.mkdir()
    try:
        summary = HearExport(out=out, embedding_type=kind)
        writer = _Writer(tmp, out)
        by_split = _write_clips(store, manifest, kind, writer, summary)
        if manifest is not None:
            for split in _SPLITS:
                _write_split_files(split, by_split.get(split, []), kind, writer)
            rows = np.flatnonzero(store.done)
            seconds = float(store.array("num_samples")[:][rows].max()) / store.attrs["sample_rate"]
            writer.json("task_metadata.json", _metadata(manifest, kind, list(_SPLITS), seconds))
            vocab = "idx,label\n" + "".join(
                f"{i},{name}\n" for i, name in enumerate(manifest.class_names)
            )
            writer.path("labelvocabulary.csv").write_text(vocab)
        mark = {
            "format": "hear-eval-kit",
            "store": str(store_path),
            "teacher": store.attrs.get("teacher"),
            "weights_sha256": store.attrs.get("weights_sha256"),
            "embedding_type": kind,
            "files": sorted(writer.files),
        }
        (tmp / MARK).write_text(json.dumps(mark, indent=1))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, out, replace)
    return summary


def _swap_in(tmp: Path, out: Path, replace: bool) -> None:
    """Rename the finished export into place (an earlier export is renamed aside, then
    deleted; an empty ``out`` is removed first)."""
    if out.exists() and not replace:
        out.rmdir()  # empty (checked by _check_out)
    old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    if replace:
        os.replace(out, old)
    os.replace(tmp, out)
    if replace:
        shutil.rmtree(old)
