"""The teacher interface every pre-trained model adapter implements.

A teacher is a frozen ``torch.nn.Module`` that turns a batch of mono waveforms at its own
sample rate into time-indexed embeddings:

``embed(waveforms (B, L) float32, lengths (B,) int64) -> TeacherOutput``

* ``embeddings``: ``(B, T, D)``, frames past ``num_frames[b]`` are padding (any value);
* ``num_frames``: ``(B,)`` int64 valid frames per clip (≥ 1 for any clip ≥ 1 sample);
* ``frame_times``: ``(T, 2)`` float64 start and end (seconds) of each frame — the same for
  every clip of the batch, since frames depend only on the window and hop. A clip-level
  teacher (PANNs) has ``T == 1`` and one frame spanning the clip (``end`` = longest clip).

Adapters document in their docstring how the last partial frame is handled.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "Teacher",
    "TeacherInfo",
    "TeacherOutput",
    "WeightFile",
    "build_teacher",
    "cut_windows",
    "frame_times",
    "freeze_for_cpu",
    "frozen",
    "full_window_count",
    "seeded_random_init",
]


@dataclass(frozen=True)
class WeightFile:
    """One pinned pre-trained weight file."""

    filename: str  # relative to the weights dir; may hold folders ("sota-music-taggers/msd/...")
    url: str
    sha256: str  # full hex digest, or a published prefix of >= 8 hex chars (torch-hub style)
    size: int | None = None  # bytes, when known
    note: str = ""  # e.g. how to obtain files that are not a plain download
    md5: str | None = None  # extra check where the source publishes an md5 (Zenodo)
    # Content pin for a file served from a git repository that publishes no sha256: git's
    # object id, sha1(b"blob <size>\0" + content), read from the repository tree.
    git_blob_sha1: str | None = None


@dataclass(frozen=True)
class TeacherInfo:
    """Static facts about a teacher, shown by ``east teachers list``."""

    name: str
    family: str
    sample_rate: int
    embedding_dim: int
    window_s: float | None  # None for clip-level teachers
    hop_s: float | None
    description: str = ""
    licence: str = ""
    weights: tuple[WeightFile, ...] = field(default_factory=tuple)
    # How windows are cut, for families that offer more than one way: "official" (as the
    # official package's own top-level call) or "uncentred" (full windows from 0 s). Part of a
    # store's identity; None for teachers with a single framing.
    framing: str | None = None

    @property
    def clip_level(self) -> bool:
        return self.window_s is None


@dataclass
class TeacherOutput:
    embeddings: Tensor  # (B, T, D)
    num_frames: Tensor  # (B,) int64
    frame_times: Tensor  # (T, 2) float64 seconds [start, end]


class Teacher(nn.Module):
    """Base class. Subclasses set :attr:`info` and implement :meth:`embed`.

    :attr:`weights_sha256` identifies the loaded weights (``"random"`` for explicitly random
    weights); extraction stamps it into the cache's provenance.
    """

    info: TeacherInfo
    weights_sha256: str = "random"

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def embedding_dim(self) -> int:
        return self.info.embedding_dim

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def embed(self, waveforms: Tensor, lengths: Tensor) -> TeacherOutput:
        raise NotImplementedError

    def optimize_for_cpu(self) -> bool:
        """Swap the network body for a faster CPU inference graph (see :func:`freeze_for_cpu`).

        Called by ``east extract`` unless ``--no-optimize``; returns whether anything changed.
        Implementations do nothing off the CPU; teachers without one run eager.
        """
        return False


def freeze_for_cpu(
    module: nn.Module, examples: list[Tensor], *, atol: float = 1e-4
) -> Callable[[Tensor], Tensor] | None:
    """A traced, frozen TorchScript inference graph of ``module`` for the CPU, or ``None``.

    ``torch.jit.freeze`` + ``optimize_for_inference`` fold batch norm into the convolutions,
    fuse conv + ReLU and keep activations in oneDNN's blocked layout: the music taggers' eager
    forward is memory-bound on CPU, and this cuts its CPU time ~2.5× (benchmarks/RESULTS.md).
    The graph is traced on ``examples[0]`` and must reproduce the eager output within ``atol``
    on every example (other batch sizes and lengths): a module whose trace bakes in a shape
    fails that check and stays eager.
    """
    module = module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python values
            traced = torch.jit.trace(module, examples[0], check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            for example in examples:
                expected, got = module(example), frozen(example)
                if expected.shape != got.shape or not torch.allclose(
                    expected, got, atol=atol, rtol=1e-4
                ):
                    return None
    except Exception:  # any tracing failure means: keep the eager module
        return None
    return frozen


def frame_times(num_frames: int, window_s: float, hop_s: float) -> Tensor:
    """``(T, 2)`` start/end seconds of ``num_frames`` frames with a fixed window and hop."""
    starts = torch.arange(num_frames, dtype=torch.float64) * hop_s
    return torch.stack([starts, starts + window_s], dim=1)


def full_window_count(lengths: Tensor, window: int, hop: int) -> Tensor:
    """Full windows per clip, at least one (a clip shorter than a window is zero-padded)."""
    lengths = lengths.to(torch.int64)
    full = torch.div(lengths - window, hop, rounding_mode="floor") + 1
    return torch.clamp(full, min=1)


def cut_windows(
    waveforms: Tensor, lengths: Tensor, window: int, hop: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Cut ``(B, L)`` clips into their full windows (last partial window dropped).

    Returns ``(windows (N, window), valid (B, T) bool, num_frames (B,))``: the ``N`` valid
    windows in clip-major order and where each goes in the ``(B, T)`` frame grid. Samples at
    or past ``lengths[b]`` are zeroed first, so the padding value of the batch never matters.
    """
    lengths = lengths.to(device=waveforms.device, dtype=torch.int64)
    frames = full_window_count(lengths, window, hop)
    total = int(frames.max()) if frames.numel() else 1
    needed = (total - 1) * hop + window
    x = waveforms[:, :needed]
    inside = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
    x = torch.where(inside, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if x.shape[1] < needed:
        x = torch.nn.functional.pad(x, (0, needed - x.shape[1]))
    valid = torch.arange(total, device=x.device) < frames[:, None]
    return x.unfold(1, window, hop)[valid], valid, frames


def seeded_random_init(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """Build a network with explicitly random weights that are the same on every run.

    ``--weights random`` must be reproducible, so that a resumed extraction equals a clean one;
    the global RNG of the caller is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


StateDict = Mapping[str, Tensor]


def build_teacher(
    weights: str | Path | None,
    device: str,
    *,
    net: Callable[[], nn.Module],
    teacher: Callable[[nn.Module, Sequence[Path]], Teacher],
    files: Callable[[str | Path | None], Sequence[Path]],
    load: Callable[[Sequence[Path]], tuple[StateDict, str]] | None = None,
    unwrap: tuple[str, ...] = ("state_dict", "model"),
    meta_init: bool = True,
    seeded: bool = True,
) -> Teacher:
    """One teacher of a family from the parts that are its own (as timm's
    ``build_model_with_cfg`` builds every model family).

    ``weights == "random"``: ``net()`` with explicitly random weights (:func:`seeded_random_init`,
    the same on every run; ``seeded=False`` draws them from the caller's RNG) and provenance
    ``"random"``. Otherwise ``files(weights)`` names the weight files (the pinned ones, or the
    override; it fails before any work when one is missing), ``load(files)`` gives the net's
    state dict and the provenance digest (default: the first file's tensors, unwrapped through
    ``unwrap``, and the sha256 of every file joined by ``+``), and the net is loaded strictly;
    ``meta_init`` skips the random initialisation the strict load overwrites.
    ``teacher(net, files)`` wraps the net (``files`` is empty for random weights). The teacher
    comes back on ``device``, :func:`frozen`.
    """
    from east.extract.weights import load_state_dict, load_strict, sha256_file

    if isinstance(weights, str) and weights == "random":
        model = seeded_random_init(net) if seeded else net()
        paths: Sequence[Path] = ()
        digest = "random"
    else:
        paths = files(weights)
        if load is not None:
            state, digest = load(paths)
        else:
            state = load_state_dict(paths[0], unwrap=unwrap)
            digest = "+".join(sha256_file(p) for p in paths)
        if meta_init:
            with torch.device("meta"):
                model = net()
            model = model.to_empty(device="cpu")
        else:
            model = net()
        load_strict(model, state, paths[0])
    built = teacher(model, paths)
    built.weights_sha256 = digest
    return frozen(built.to(device))


def frozen(teacher: Teacher) -> Teacher:
    """``teacher`` in eval mode without gradients: how every teacher is used."""
    return teacher.eval().requires_grad_(False)
