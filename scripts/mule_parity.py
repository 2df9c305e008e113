"""MULE parity: east's PyTorch MULE against upstream ``sxmp-mule`` (TensorFlow), same weights.

Run with ``make mule-parity`` (it builds the isolated ``.venv-mule`` with tensorflow 2.13.1,
numpy 1.24 and sxmp-mule 1.1.2 first). Steps:

1. decode the real clips in ``$EAST_SHARED/data/samples`` to 16 kHz mono with ``east.audio``;
2. in ``.venv-mule``, ``mule_parity_tf.py`` builds upstream's SF-NFNet-F0 with random weights,
   saves it as ``model.keras`` and runs upstream's MelSpectrogram → EmbeddingFeature pipeline
   on the same waveforms;
3. here, ``east.extract.teachers.mule_convert`` converts that ``model.keras`` (no TensorFlow)
   and :class:`MuleTeacher` embeds the same waveforms;
4. compare the parameter count, the log-mel features, the network alone on upstream's own
   slices, and the end-to-end embeddings; fail when an embedding differs by more than
   ``--tolerance`` (default 1e-4).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def main() -> int:
    from east.settings import shared_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mule-python", default=".venv-mule/bin/python")
    parser.add_argument("--samples", type=Path, default=shared_dir() / "data" / "samples")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep the files here (default: a temp dir)"
    )
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    clips = sorted(p for p in args.samples.iterdir() if p.is_file())
    if not clips:
        print(f"no audio in {args.samples}", file=sys.stderr)
        return 2
    if args.workdir is None:  # the random model.keras is 250 MB: do not leave it behind
        with tempfile.TemporaryDirectory(prefix="mule-parity-") as tmp:
            return run(args, clips, Path(tmp))
    args.workdir.mkdir(parents=True, exist_ok=True)
    return run(args, clips, args.workdir)


def run(args: argparse.Namespace, clips: list[Path], workdir: Path) -> int:
    from east.audio import load_audio
    from east.extract.teachers.mule import SAMPLE_RATE, MuleTeacher
    from east.extract.teachers.mule_convert import convert

    waves = {p.stem: load_audio(p, SAMPLE_RATE) for p in clips}
    np.savez(workdir / "waves.npz", **waves)

    start = time.perf_counter()
    subprocess.run(
        [args.mule_python, str(HERE / "mule_parity_tf.py"), str(workdir / "waves.npz"), workdir],
        check=True,
    )
    tf_seconds = time.perf_counter() - start
    ref = np.load(workdir / "tf_outputs.npz")

    summary = convert(workdir / "model.keras", workdir / "mule_converted.pt")
    teacher = MuleTeacher().eval()
    teacher.net.load_state_dict(torch.load(workdir / "mule_converted.pt")["state_dict"])
    ours_params = sum(p.numel() for p in teacher.net.parameters())
    print(f"parameters: tensorflow {int(ref['param_count'])}, east {ours_params}")
    ok = ours_params == int(ref["param_count"]) == summary["parameters"]

    worst_embedding = 0.0
    start = time.perf_counter()
    with torch.no_grad():
        for name, wave in waves.items():
            tf_mel = ref[f"mel__{name}"]
            tf_slices = ref[f"slices__{name}"]
            tf_emb = ref[f"embedding__{name}"]
            mel = teacher.frontend(torch.from_numpy(wave)).numpy()
            net_only = teacher.net(torch.from_numpy(tf_slices).unsqueeze(1).float()).numpy()
            out = teacher.embed(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
            emb = out.embeddings[0, : int(out.num_frames[0])].numpy()
            if emb.shape != tf_emb.shape or mel.shape != tf_mel.shape:
                print(
                    f"{name}: shape mismatch mel {mel.shape}/{tf_mel.shape} "
                    f"embeddings {emb.shape}/{tf_emb.shape}"
                )
                ok = False
                continue
            mel_diff = float(np.abs(mel - tf_mel).max())
            net_diff = float(np.abs(net_only - tf_emb).max())
            emb_diff = float(np.abs(emb - tf_emb).max())
            worst_embedding = max(worst_embedding, emb_diff)
            print(
                f"{name}: {len(wave) / SAMPLE_RATE:.2f} s, {emb.shape[0]} slices, "
                f"|embedding| max {np.abs(tf_emb).max():.3f}; max abs diff: log-mel {mel_diff:.2e}, "
                f"network on upstream slices {net_diff:.2e}, end to end {emb_diff:.2e}"
            )
            ok = ok and emb_diff <= args.tolerance
    print(
        f"max abs embedding diff {worst_embedding:.2e} (tolerance {args.tolerance:g}); "
        f"tensorflow pipeline {tf_seconds:.0f} s, east {time.perf_counter() - start:.0f} s; "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
