"""VGGish teacher (Hershey et al., ICASSP 2017) with the torchvggish (harritaylor) weights.

Everything is re-implemented here in batched torch; the official package is only used by the
parity tests. The numbers follow ``vggish_params.py`` / ``mel_features.py`` of the reference:

Front-end (16 kHz mono):

* frames of 400 samples (25 ms) every 160 samples (10 ms), *not* centred, so a clip of ``L``
  samples has ``F = 1 + (L - 400) // 160`` STFT frames; periodic Hann window; magnitude of a
  512-point FFT (the 400 samples zero-padded);
* 64 HTK-mel triangles between 125 and 7500 Hz (no area normalisation, DC bin zeroed);
* ``log(mel + 0.01)``; computed in float64 like the reference's numpy code, so the patches
  that reach the network are the reference's float32 patches.

Patches: 96 consecutive log-mel frames (0.96 s) without overlap, ``P = 1 + (F - 96) // 96``.
**The last partial patch is dropped**, exactly as the reference does; frames ``t`` therefore
cover ``[0.96 t, 0.96 t + 0.96)`` s of the clip (their STFT windows reach 15 ms further, to
``0.96 t + 0.975``), and 1 s / 10 s / 29.1 s clips give 1 / 10 / 30 frames. A clip shorter
than one patch (15 600 samples = 0.975 s, where the reference returns nothing) is zero-padded
to one patch so it still gets one frame.

Network: the VGG body of torchvggish (4 conv stages, three fully connected layers, 128-d with
the final ReLU as in torchvggish), then the AudioSet post-processor: PCA with whitening
(``pca_eigen_vectors @ (x - pca_means)``), clipping to ``[-2, 2]`` and 8-bit quantisation
``round((x + 2) * 255 / 4)``. :meth:`VGGishTeacher.embed` returns those quantised values,
integers 0…255 in float32 — exactly representable in float16 or uint8, so a cache may store
them losslessly in either. Training rescales them like the reference does for the released
AudioSet embeddings: ``(x - 128) / 256`` (:func:`dequantize`).

Weights: two pinned files of the torchvggish v0.1 release — the VGG body
(``vggish-10086976.pth``, a plain state dict) and the PCA parameters
(``vggish_pca_params-970ea276.pth``, ``pca_eigen_vectors`` (128, 128) and ``pca_means``
(128,), pickled numpy arrays or tensors; loaded with ``weights_only=True`` and an allowlist
of numpy's array reconstructors, never with arbitrary unpickling).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from east.errors import WeightsError
from east.extract.teachers.base import (
    Teacher,
    TeacherInfo,
    TeacherOutput,
    WeightFile,
    build_teacher,
    frame_times,
)
from east.extract.teachers.registry import register_teacher

__all__ = [
    "EMBEDDING_DIM",
    "INFO",
    "MIN_SAMPLES",
    "SAMPLE_RATE",
    "STFT_HOP",
    "VGGISH_PCA",
    "VGGISH_WEIGHTS",
    "Postprocessor",
    "VGGishFrontEnd",
    "VGGishNet",
    "VGGishTeacher",
    "dequantize",
    "load_pca_params",
    "mel_matrix",
    "num_patches",
    "vggish",
    "waveform_to_patches",
]

SAMPLE_RATE = 16_000
STFT_WINDOW = 400  # 25 ms
STFT_HOP = 160  # 10 ms
FFT_LENGTH = 512  # next power of two above the window, as mel_features computes it
NUM_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
PATCH_FRAMES = 96  # 0.96 s of 10 ms frames
EMBEDDING_DIM = 128
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0
# Shortest clip with one full patch: 95 hops plus one STFT window.
MIN_SAMPLES = (PATCH_FRAMES - 1) * STFT_HOP + STFT_WINDOW  # 15 600
PATCH_SECONDS = PATCH_FRAMES * STFT_HOP / SAMPLE_RATE  # 0.96

_RELEASE = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/"
VGGISH_WEIGHTS = WeightFile(
    filename="vggish-10086976.pth",
    url=_RELEASE + "vggish-10086976.pth",
    # The torch-hub name carries the sha256 prefix 10086976; the full digest and the size are
    # pinned independently by public projects that load this asset (see docs/teachers.md).
    sha256="10086976245803799d9194e9a73d9b6c1549c71d1b80106f5cade5608a561f4b",
    size=288_567_937,
)
VGGISH_PCA = WeightFile(
    filename="vggish_pca_params-970ea276.pth",
    url=_RELEASE + "vggish_pca_params-970ea276.pth",
    # Only the torch-hub prefix of the sha256 is published (in the file name); no full digest
    # could be found in a readable source, so the prefix is the pin (never an invented hash).
    sha256="970ea276",
)

INFO = TeacherInfo(
    name="vggish",
    family="vggish",
    sample_rate=SAMPLE_RATE,
    embedding_dim=EMBEDDING_DIM,
    window_s=PATCH_SECONDS,
    hop_s=PATCH_SECONDS,
    description=(
        "VGGish (AudioSet), 128-d per 0.96 s patch after PCA whitening and 8-bit "
        "quantisation (values 0-255; training uses (x - 128) / 256)"
    ),
    licence="Apache-2.0 (torchvggish port of Google's tensorflow/models VGGish)",
    weights=(VGGISH_WEIGHTS, VGGISH_PCA),
)


# --------------------------------------------------------------------------- front-end


def _hertz_to_mel_htk(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix(
    num_bands: int = NUM_BANDS,
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_hz: float = MEL_MIN_HZ,
    upper_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """``(bins, bands)`` float64 HTK mel weights as VGGish uses them.

    Triangles are linear on the mel scale ``1127 ln(1 + f / 700)`` with edges evenly spaced
    between ``lower_hz`` and ``upper_hz``; no area normalisation; the DC bin gets no weight.
    """
    bins_mel = _hertz_to_mel_htk(np.linspace(0.0, sample_rate / 2, num_spectrogram_bins))
    edges = np.linspace(_hertz_to_mel_htk(lower_hz), _hertz_to_mel_htk(upper_hz), num_bands + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


class VGGishFrontEnd(nn.Module):
    """``(B, L)`` 16 kHz waveforms → ``(B, F, 64)`` float64 log-mel frames (see module doc)."""

    def __init__(self) -> None:
        super().__init__()
        n = torch.arange(STFT_WINDOW, dtype=torch.float64)
        periodic_hann = 0.5 - 0.5 * torch.cos(2 * torch.pi * n / STFT_WINDOW)
        # Derived constants, not weights: kept out of the state dict.
        self.register_buffer("window", periodic_hann, persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_matrix()), persistent=False)

    def forward(self, waveforms: Tensor) -> Tensor:
        device_type = waveforms.device.type
        # float64 like the reference (numpy); autocast must not touch it.
        with torch.autocast(device_type=device_type, enabled=False):
            frames = waveforms.to(torch.float64).unfold(-1, STFT_WINDOW, STFT_HOP)
            magnitude = torch.fft.rfft(frames * self.window, n=FFT_LENGTH).abs()
            return torch.log(magnitude @ self.mel + LOG_OFFSET)


def num_patches(lengths: Tensor) -> Tensor:
    """Embeddings (0.96 s patches) per clip of ``lengths`` samples; ≥ 1 for any clip."""
    lengths = torch.clamp(lengths.to(torch.int64), min=MIN_SAMPLES)
    stft_frames = torch.div(lengths - STFT_WINDOW, STFT_HOP, rounding_mode="floor") + 1
    return torch.div(stft_frames - PATCH_FRAMES, PATCH_FRAMES, rounding_mode="floor") + 1


def waveform_to_patches(
    frontend: VGGishFrontEnd, waveforms: Tensor, lengths: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Valid log-mel patches of a batch.

    Returns ``(patches (N, 1, 96, 64) float32, valid (B, T) bool, num_frames (B,))`` where
    ``N = valid.sum()``; row ``n`` of ``patches`` belongs at the ``n``-th True of ``valid``.
    Samples at or past ``lengths[b]`` are zeroed (padding never leaks into a clip).
    """
    lengths = lengths.to(device=waveforms.device, dtype=torch.int64)
    frames = num_patches(lengths)
    total = int(frames.max())
    needed = (total * PATCH_FRAMES - 1) * STFT_HOP + STFT_WINDOW
    x = waveforms[:, :needed]
    inside = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
    x = torch.where(inside, x, torch.zeros((), dtype=x.dtype, device=x.device))
    if x.shape[1] < needed:
        x = F.pad(x, (0, needed - x.shape[1]))
    log_mel = frontend(x)[:, : total * PATCH_FRAMES]  # (B, total*96, 64)
    patches = log_mel.reshape(x.shape[0], total, PATCH_FRAMES, NUM_BANDS)
    valid = torch.arange(total, device=x.device) < frames[:, None]
    return patches[valid].unsqueeze(1).to(torch.float32), valid, frames


# --------------------------------------------------------------------------- network


def _vgg_features() -> nn.Sequential:
    # Same layer order (and so the same state-dict indices 0, 3, 6, 8, 11, 13) as torchvggish.
    layers: list[nn.Module] = []
    in_channels = 1
    for spec in (64, "pool", 128, "pool", 256, 256, "pool", 512, 512, "pool"):
        if spec == "pool":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, int(spec), kernel_size=3, padding=1), nn.ReLU()]
            in_channels = int(spec)
    return nn.Sequential(*layers)


class VGGishNet(nn.Module):
    """The VGG body; its state dict is exactly that of ``vggish-10086976.pth``.

    ``(N, 1, 96, 64)`` log-mel patches → ``(N, 128)`` raw embeddings (before PCA).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _vgg_features()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 6 * 4, 4096),
            nn.ReLU(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, EMBEDDING_DIM),
            nn.ReLU(),
        )

    def forward(self, patches: Tensor) -> Tensor:
        x = self.features(patches)  # (N, 512, 6, 4)
        # Flatten in TensorFlow's (time, mel, channel) order, which the ported weights expect.
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.embeddings(x)


class Postprocessor(nn.Module):
    """PCA whitening, clipping and 8-bit quantisation of the AudioSet release."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("pca_eigen_vectors", torch.eye(EMBEDDING_DIM))
        self.register_buffer("pca_means", torch.zeros(EMBEDDING_DIM))

    def forward(self, raw: Tensor) -> Tensor:
        with torch.autocast(device_type=raw.device.type, enabled=False):
            pca = (raw.float() - self.pca_means) @ self.pca_eigen_vectors.T
            clipped = pca.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
            return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


def dequantize(quantized: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """The reference rescaling of quantised VGGish embeddings to about ``[-0.5, 0.5)``."""
    return (quantized - 128.0) / 256.0


# --------------------------------------------------------------------------- teacher


class VGGishTeacher(Teacher):
    """VGGish embeddings (quantised 0…255 values as float32) per 0.96 s patch."""

    info = INFO

    def __init__(self, net: VGGishNet | None = None, chunk_patches: int = 256) -> None:
        super().__init__()
        self.frontend = VGGishFrontEnd()
        self.net = net if net is not None else VGGishNet()
        self.postprocessor = Postprocessor()
        self.chunk_patches = chunk_patches  # patches per forward pass: bounds peak memory

    def raw_embeddings(self, patches: Tensor) -> Tensor:
        """``(N, 1, 96, 64)`` patches → ``(N, 128)`` float32 embeddings before PCA."""
        return torch.cat([self.net(c).float() for c in patches.split(self.chunk_patches)])

    @torch.inference_mode()
    def embed(self, waveforms: Tensor, lengths: Tensor) -> TeacherOutput:
        if waveforms.ndim != 2:
            raise ValueError(f"expected waveforms of shape (B, L), got {tuple(waveforms.shape)}")
        device = self.device
        patches, valid, frames = waveform_to_patches(self.frontend, waveforms.to(device), lengths)
        quantized = self.postprocessor(self.raw_embeddings(patches))
        embeddings = torch.zeros((*valid.shape, EMBEDDING_DIM), dtype=torch.float32, device=device)
        embeddings[valid] = quantized
        return TeacherOutput(
            embeddings=embeddings,
            num_frames=frames.cpu(),
            frame_times=frame_times(valid.shape[1], PATCH_SECONDS, PATCH_SECONDS),
        )


# --------------------------------------------------------------------------- weights


def _numpy_safe_globals() -> list:
    """Globals that unpickle numpy arrays and nothing else (for ``weights_only`` loading).

    The PCA file holds numpy arrays pickled by numpy 1 (``numpy.core``); numpy 2 names the
    same reconstructor ``numpy._core``: allow it under both names. Protocol 2 pickles their
    bytes through ``_codecs.encode``, which torch allows by default only since 2.5 (pytorch
    PR 133189): east allows it itself, so the floor ``torch>=2.4`` loads the file too.
    """
    import codecs

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    dtype_classes = [type(np.dtype(t)) for t in ("float64", "float32", "float16")]
    return [
        (codecs.encode, "_codecs.encode"),
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *dtype_classes,
    ]


def load_pca_params(path: str | Path) -> tuple[Tensor, Tensor]:
    """``(pca_eigen_vectors (128, 128), pca_means (128,))`` float32 from the release file."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            params = torch.load(path, map_location="cpu", weights_only=True)
        matrix = torch.as_tensor(np.asarray(params["pca_eigen_vectors"]), dtype=torch.float32)
        means = torch.as_tensor(np.asarray(params["pca_means"]), dtype=torch.float32)
    except Exception as exc:  # any unpickling/key error means the same thing to the user
        from east.extract.weights import load_error_reason

        reason = load_error_reason(exc)
        raise WeightsError(f"{path} is not a VGGish PCA parameter file ({reason})") from None
    means = means.reshape(-1)
    if matrix.shape != (EMBEDDING_DIM, EMBEDDING_DIM) or means.shape != (EMBEDDING_DIM,):
        raise WeightsError(
            f"{path}: PCA parameters have shapes {tuple(matrix.shape)} and {tuple(means.shape)}, "
            f"expected ({EMBEDDING_DIM}, {EMBEDDING_DIM}) and ({EMBEDDING_DIM},)"
        )
    return matrix, means


def _weight_paths(weights: str | Path | None) -> tuple[Path, Path]:
    """Where the VGG body and the PCA file come from (see :func:`vggish`)."""
    from east.extract.weights import resolve_weights

    if weights is None:
        return (
            resolve_weights(VGGISH_WEIGHTS, teacher=INFO.name),
            resolve_weights(VGGISH_PCA, teacher=INFO.name),
        )
    override = Path(weights).expanduser()
    if override.is_dir():
        return (
            resolve_weights(VGGISH_WEIGHTS, override / VGGISH_WEIGHTS.filename),
            resolve_weights(VGGISH_PCA, override / VGGISH_PCA.filename),
        )
    body = resolve_weights(VGGISH_WEIGHTS, override)
    sibling = body.parent / VGGISH_PCA.filename
    pca = sibling if sibling.is_file() else resolve_weights(VGGISH_PCA, teacher=INFO.name)
    return body, pca


def _random_pca(teacher: VGGishTeacher, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The "explicitly random" stand-in for the real PCA: a random rotation, centred and scaled
    on the random net's embeddings of seeded noise, so that the quantised values spread over
    0…255 like real VGGish embeddings instead of all sitting at 128."""
    generator = torch.Generator().manual_seed(seed)
    # Noise from -60 to 0 dB: a spread of inputs like real audio's, not one kind of patch.
    gains = torch.logspace(-3, 0, 8)[:, None]
    noise = gains * torch.randn(8, MIN_SAMPLES, generator=generator)
    patches, _, _ = waveform_to_patches(teacher.frontend, noise, torch.full((8,), MIN_SAMPLES))
    with torch.inference_mode():
        raw = teacher.raw_embeddings(patches)
    rotation, _ = torch.linalg.qr(torch.randn(EMBEDDING_DIM, EMBEDDING_DIM, generator=generator))
    spread = (raw - raw.mean(dim=0)).std().clamp_min(1e-6)
    return rotation / spread, raw.mean(dim=0)


@register_teacher(INFO)
def vggish(weights: str | Path | None, device: str) -> Teacher:
    """VGGish. ``weights``: ``None`` (the two pinned files from the weights directory),
    ``"random"`` (seeded random body, random PCA rotation fitted to its outputs), a folder holding both
    release files, or the path of a VGG body checkpoint (the PCA file is then taken from the
    same folder when it is there, else from the weights directory)."""
    # The VGG body and the PCA file both define the teacher: provenance names both digests.
    return build_teacher(weights, device, net=VGGishNet, teacher=_with_pca, files=_weight_paths)


def _with_pca(net: nn.Module, files: Sequence[Path]) -> VGGishTeacher:
    """The teacher around ``net`` with the release's PCA (``files[1]``), or a random one."""
    teacher = VGGishTeacher(net)  # type: ignore[arg-type]
    matrix, means = load_pca_params(files[1]) if files else _random_pca(teacher)
    teacher.postprocessor.pca_eigen_vectors.copy_(matrix)
    teacher.postprocessor.pca_means.copy_(means)
    return teacher
