"""The pre-trained music auto-taggers of Won et al. 2020 as teachers: FCN, Musicnn, CRNN.

"Evaluation of CNN-based automatic music tagging models" (Won, Ferraro, Bogdanov, Serra; SMC
2020), code and checkpoints at ``minzwon/sota-music-tagging-models`` (MIT). The architectures
below are written to the upstream ``training/model.py`` so that the official ``best_model.pth``
state dicts (MagnaTagATune ``mtat``, Million Song Dataset ``msd``, MTG-Jamendo ``jamendo``)
load with ``strict=True``. They share one front-end, whose mel filter bank and window are part
of every checkpoint:

    16 kHz mono -> |STFT|² (n_fft 512, hann, hop 256 = 16 ms, centred, reflect padding)
    -> 96-bin HTK mel filter bank (0-8 kHz, stored as ``spec.mel_scale.fb``)
    -> 10·log10(max(x, 1e-10)) dB (no top_db) -> BatchNorm2d(1) (``spec_bn``)

torchaudio is not needed: this is torchaudio's ``MelSpectrogram`` + ``AmplitudeToDB`` with the
defaults upstream used, computed with :func:`torch.stft` and the stored filter bank.

Embeddings (time-indexed intermediate layers, never the 50 tag probabilities; see
``docs/teachers.md``):

* **FCN** — the 4th conv block (conv → BN → ReLU) before its (3, 5) max-pool, averaged over
  its 12 remaining mel bands: 128-d, one frame per 64 STFT frames (1.024 s).
* **Musicnn** — the 753 back-end channels (561 front-end timbral/temporal features + the three
  64-channel residual back-end layers) that upstream max- and mean-pools over its 3 s input;
  here mean-pooled over 64-STFT-frame cells: 753-d, 1.024 s hop.
* **CRNN** — the 4th conv block's output (128-d, mel axis pooled to 1) that feeds the GRU:
  one frame per 96 STFT frames (1.536 s).

Frame times: frame ``i`` is the cell of STFT frames ``[c·i, c·(i+1))`` whose activations were
pooled into it (``c`` = 64 or 96), i.e. ``[i·hop − 8 ms, (i+1)·hop − 8 ms)`` in seconds, the
first start clipped to 0 — the receptive field is wider (FCN 3.76 s, Musicnn 3.38 s, CRNN
2.61 s) but centred on the same point.

Variable lengths: the nets are fully convolutional in time, so a clip of any length is
embedded without cropping (upstream trained FCN and CRNN on 29 s and Musicnn on 3 s crops). Each
clip is zero-padded to a whole number of cells (at least one) and only clips with the same
padded length share a forward pass, so a clip's embedding does not depend on what else is in
its batch. Valid frames: ``max(1, (1 + n // 256) // c)`` for ``n`` samples — the trailing
partial cell is dropped unless it is the only one (clips shorter than one cell give one frame
computed on zero-padded audio, as upstream's ``predict.py`` pads short clips with zeros).
Clips longer than 64 cells run in cell-aligned segments with 2 cells of context on each side
(same result, bounded memory); on CPU a batch runs in passes of at most 512 STFT frames
(about 8 s of audio), which on a 2-core CPU runs 1.7× faster than one large pass for these
memory-bound nets (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from east.extract.teachers.base import (
    Teacher,
    TeacherInfo,
    TeacherOutput,
    WeightFile,
    build_teacher,
    frame_times,
    freeze_for_cpu,
)
from east.extract.teachers.registry import register_teacher
from east.extract.weights import resolve_weights

SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256  # torchaudio's default win_length // 2
N_MELS = 96
F_MAX = 8000.0
AMIN = 1e-10  # AmplitudeToDB defaults: power spectrogram, ref 1.0, top_db None

_REPO = "https://github.com/minzwon/sota-music-tagging-models/raw/master/models"
_SHA256 = {
    ("msd", "fcn"): "6012aa7eecf864a8081faedca56af054521e8dfb9c5c98659a3dd5d3e1e66f21",
    ("msd", "crnn"): "ebb99855ed0c83f38845db9cfb383dd6fc70938bc58701dcb66e18af9ee7fbea",
    ("mtat", "fcn"): "e89d751202d38c3ae69855782bc27010f87051958dbec64f5aa762364dbac271",
    ("mtat", "musicnn"): "690ace3bb5d49d90dd38fe3ec05a1185350b3bc3742bd7ee941f56b649b2c893",
    ("mtat", "crnn"): "cd22fc70cafd06f8f2bfc7dd795abccb1f4b50d5b09094c39ad100baf87475a3",
    ("jamendo", "fcn"): "7bce08a66dbc70d096b0a330f44b4cacd9aa25519b83489fbb98f2164a194e2b",
    ("jamendo", "musicnn"): "66280f4859376377c47f64313c7ac889a3201fdb06a01bf6e94ac6e619081bb5",
    ("jamendo", "crnn"): "0a558989c0793f488cb677d188464c91f47c007f7c70473230e55537ca598215",
}
_SIZE = {
    ("msd", "fcn"): 1902815,
    ("msd", "crnn"): 1687711,
    ("mtat", "fcn"): 1902811,
    ("mtat", "musicnn"): 3257172,
    ("mtat", "crnn"): 1687630,
    ("jamendo", "fcn"): 1902815,
    ("jamendo", "musicnn"): 3257168,
    ("jamendo", "crnn"): 1687626,
}


# Output order of the 50-way heads: MTAT and MSD as in upstream's split files; MTG-Jamendo
# sorted alphabetically by full tag ("genre---…", "instrument---…", "mood/theme---…") because
# upstream binarised its labels with sklearn's LabelBinarizer.
def _tag_list(text: str) -> tuple[str, ...]:
    # tags may wrap across lines: collapse the whitespace inside each one
    return tuple(" ".join(tag.split()) for tag in text.split(",") if tag.strip())


TAGS: dict[str, tuple[str, ...]] = {
    "mtat": _tag_list(
        """
        guitar, classical, slow, techno, strings, drums, electronic, rock, fast, piano, ambient,
        beat, violin, vocal, synth, female, indian, opera, male, singing, vocals, no vocals,
        harpsichord, loud, quiet, flute, woman, male vocal, no vocal, pop, soft, sitar, solo,
        man, classic, choir, voice, new age, dance, male voice, female vocal, beats, harp,
        cello, no voice, weird, country, metal, female voice, choral
        """
    ),
    "msd": _tag_list(
        """
        rock, pop, alternative, indie, electronic, female vocalists, dance, 00s, alternative
        rock, jazz, beautiful, metal, chillout, male vocalists, classic rock, soul, indie rock,
        Mellow, electronica, 80s, folk, 90s, chill, instrumental, punk, oldies, blues, hard
        rock, ambient, acoustic, experimental, female vocalist, guitar, Hip-Hop, 70s, party,
        country, easy listening, sexy, catchy, funk, electro, heavy metal, Progressive rock,
        60s, rnb, indie pop, sad, House, happy
        """
    ),
    "jamendo": _tag_list(
        """
        alternative, ambient, atmospheric, chillout, classical, dance, downtempo, easylistening,
        electronic, experimental, folk, funk, hiphop, house, indie, instrumentalpop, jazz,
        lounge, metal, newage, orchestral, pop, popfolk, poprock, reggae, rock, soundtrack,
        techno, trance, triphop, world, acousticguitar, bass, computer, drummachine, drums,
        electricguitar, electricpiano, guitar, keyboard, piano, strings, synthesizer, violin,
        voice, emotional, energetic, film, happy, relaxing
        """
    ),
}


# --------------------------------------------------------------------------- front-end


def mel_filterbank(
    n_freqs: int = N_FFT // 2 + 1,
    n_mels: int = N_MELS,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = 0.0,
    f_max: float = F_MAX,
) -> Tensor:
    """``(n_freqs, n_mels)`` triangular HTK-mel filter bank without area normalisation.

    The checkpoints store their own bank; this one (identical to it) is used only for random
    weights so that an untrained teacher still sees a real mel spectrogram.
    """

    def hz_to_mel(f: Tensor) -> Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m: Tensor) -> Tensor:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    fft_freqs = torch.linspace(0.0, sample_rate // 2, n_freqs, dtype=torch.float64)
    mel_edges = torch.linspace(
        float(hz_to_mel(torch.tensor(f_min))),
        float(hz_to_mel(torch.tensor(f_max))),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz_edges = mel_to_hz(mel_edges)
    widths = hz_edges[1:] - hz_edges[:-1]
    offsets = hz_edges.unsqueeze(0) - fft_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


class _Spectrogram(nn.Module):
    """Holds the STFT window under the checkpoint's name ``spec.spectrogram.window``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT))


class _MelScale(nn.Module):
    """Holds the filter bank under the checkpoint's name ``spec.mel_scale.fb``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fb", mel_filterbank())


class MelSpectrogram(nn.Module):
    """``(B, L)`` waveform → ``(B, 96, 1 + L // 256)`` mel power spectrogram (float32)."""

    def __init__(self) -> None:
        super().__init__()
        self.spectrogram = _Spectrogram()
        self.mel_scale = _MelScale()

    def forward(self, waveforms: Tensor) -> Tensor:
        stft = torch.stft(
            waveforms.float(),
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=N_FFT,
            window=self.spectrogram.window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        power = stft.real.square() + stft.imag.square()  # (B, 257, F)
        return torch.matmul(power.transpose(1, 2), self.mel_scale.fb).transpose(1, 2)


def power_to_db(power: Tensor) -> Tensor:
    """torchaudio ``AmplitudeToDB(stype="power", top_db=None)``: 10·log10(max(x, 1e-10))."""
    return 10.0 * torch.log10(torch.clamp(power, min=AMIN))


# --------------------------------------------------------------------------- building blocks


class _Conv2dBlock(nn.Module):
    """conv 3×3 (same padding) → BN → ReLU → max-pool (upstream ``Conv_2d``)."""

    def __init__(self, cin: int, cout: int, pooling: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(pooling)

    def activations(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.activations(x))


class _VerticalConv(nn.Module):
    """Pons timbral filter: conv spanning part of the mel axis, then max over it (``Conv_V``)."""

    def __init__(self, cout: int, shape: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, cout, shape, padding=(0, shape[1] // 2))
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, 96, F) -> (B, C, F)
        return torch.relu(self.bn(self.conv(x))).amax(dim=2)


class _HorizontalConv(nn.Module):
    """Pons temporal filter: mean over mel, then a long 1-d conv in time (``Conv_H``)."""

    def __init__(self, cout: int, length: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, cout, length, padding=length // 2)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, 96, F) -> (B, C, F)
        return torch.relu(self.bn(self.conv(x.mean(dim=2))))


class _Conv1dBlock(nn.Module):
    """conv 1-d (same padding) → BN → ReLU (upstream ``Conv_1d`` with pooling 1)."""

    def __init__(self, cin: int, cout: int, length: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, length, padding=length // 2)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


class _TaggerNet(nn.Module):
    """Shared front-end; subclasses define the body, :meth:`embed_spec` and :meth:`tag_spec`."""

    cell_frames: int  # STFT frames pooled into one embedding frame
    embedding_dim: int

    def __init__(self) -> None:
        super().__init__()
        self.spec = MelSpectrogram()
        self.spec_bn = nn.BatchNorm2d(1)

    def front_end(self, waveforms: Tensor) -> Tensor:
        """``(B, L)`` → normalised dB mel ``(B, 1, 96, F)``, always computed in float32."""
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            db = power_to_db(self.spec(waveforms.float()))
            return self.spec_bn(db.unsqueeze(1))

    def embed_spec(self, spec: Tensor) -> Tensor:  # (B, 1, 96, F) -> (B, T, D)
        raise NotImplementedError

    def tag_spec(self, spec: Tensor) -> Tensor:  # (B, 1, 96, F) -> (B, 50) probabilities
        raise NotImplementedError

    def forward(self, waveforms: Tensor) -> Tensor:
        """The upstream forward: tag probabilities ``(B, 50)`` (dropout is identity in eval)."""
        return self.tag_spec(self.front_end(waveforms))


class FCN(_TaggerNet):
    """Choi et al. 2016 fully convolutional network (upstream ``FCN``)."""

    cell_frames = 4 * 4 * 4  # time pooling of blocks 1-3
    embedding_dim = 128

    def __init__(self, n_class: int = 50) -> None:
        super().__init__()
        self.layer1 = _Conv2dBlock(1, 64, (2, 4))
        self.layer2 = _Conv2dBlock(64, 128, (2, 4))
        self.layer3 = _Conv2dBlock(128, 128, (2, 4))
        self.layer4 = _Conv2dBlock(128, 128, (3, 5))
        self.layer5 = _Conv2dBlock(128, 64, (4, 4))
        self.dense = nn.Linear(64, n_class)

    def embed_spec(self, spec: Tensor) -> Tensor:
        h = self.layer3(self.layer2(self.layer1(spec)))
        h = self.layer4.activations(h)  # (B, 128, 12, T)
        return h.mean(dim=2).transpose(1, 2)

    def tag_spec(self, spec: Tensor) -> Tensor:
        h = self.layer3(self.layer2(self.layer1(spec)))
        h = self.layer5(self.layer4(h))
        if h.shape[2] * h.shape[3] != 1:
            # upstream flattens to exactly 64 features: only ~20.5-40.9 s inputs fit
            raise ValueError(
                f"FCN's tag head needs a 1×1 map (29 s input), got {tuple(h.shape[2:])}"
            )
        return torch.sigmoid(self.dense(h.flatten(1)))


class Musicnn(_TaggerNet):
    """Pons et al. 2017/2018 musicnn as re-implemented upstream (``Musicnn``, mtat/jamendo)."""

    cell_frames = 64
    embedding_dim = 561 + 3 * 64

    def __init__(self, n_class: int = 50, backend_channels: int = 64, dense_channels: int = 200):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                _VerticalConv(204, (int(0.7 * N_MELS), 7)),
                _VerticalConv(204, (int(0.4 * N_MELS), 7)),
                _HorizontalConv(51, 129),
                _HorizontalConv(51, 65),
                _HorizontalConv(51, 33),
            ]
        )
        self.layer1 = _Conv1dBlock(561, backend_channels, 7)
        self.layer2 = _Conv1dBlock(backend_channels, backend_channels, 7)
        self.layer3 = _Conv1dBlock(backend_channels, backend_channels, 7)
        self.dense1 = nn.Linear((561 + 3 * backend_channels) * 2, dense_channels)
        self.bn = nn.BatchNorm1d(dense_channels)
        self.dense2 = nn.Linear(dense_channels, n_class)
        self.embedding_dim = 561 + 3 * backend_channels

    def features(self, spec: Tensor) -> Tensor:
        """The back-end feature map ``(B, 753, F)`` at STFT-frame resolution."""
        front = torch.cat([layer(spec) for layer in self.layers], dim=1)
        res1 = self.layer1(front)
        res2 = self.layer2(res1) + res1
        res3 = self.layer3(res2) + res2
        return torch.cat([front, res1, res2, res3], dim=1)

    def embed_spec(self, spec: Tensor) -> Tensor:
        feats = self.features(spec)
        frames = feats.shape[2] // self.cell_frames
        cells = feats[:, :, : frames * self.cell_frames]
        cells = cells.reshape(feats.shape[0], feats.shape[1], frames, self.cell_frames)
        return cells.mean(dim=3).transpose(1, 2)

    def tag_spec(self, spec: Tensor) -> Tensor:
        feats = self.features(spec)
        pooled = torch.cat([feats.amax(dim=2), feats.mean(dim=2)], dim=1)
        return torch.sigmoid(self.dense2(torch.relu(self.bn(self.dense1(pooled)))))


class CRNN(_TaggerNet):
    """Choi et al. 2017 convolutional recurrent network (upstream ``CRNN``)."""

    cell_frames = 2 * 3 * 4 * 4
    embedding_dim = 128

    def __init__(self, n_class: int = 50) -> None:
        super().__init__()
        self.layer1 = _Conv2dBlock(1, 64, (2, 2))
        self.layer2 = _Conv2dBlock(64, 128, (3, 3))
        self.layer3 = _Conv2dBlock(128, 128, (4, 4))
        self.layer4 = _Conv2dBlock(128, 128, (4, 4))
        self.layer5 = nn.GRU(128, 32, num_layers=2, batch_first=True)
        self.dense = nn.Linear(32, n_class)

    def embed_spec(self, spec: Tensor) -> Tensor:
        h = self.layer4(self.layer3(self.layer2(self.layer1(spec))))  # (B, 128, 1, T)
        return h.squeeze(2).transpose(1, 2)

    def tag_spec(self, spec: Tensor) -> Tensor:
        sequence, _ = self.layer5(self.embed_spec(spec))
        return torch.sigmoid(self.dense(sequence[:, -1]))


# --------------------------------------------------------------------------- teacher


@dataclass(frozen=True)
class _Arch:
    build: type[_TaggerNet]
    receptive_field_frames: int  # STFT frames seen by one embedding frame (see module doc)
    trained_input_s: float
    cpu_frames_per_pass: int  # see TaggerTeacher.cpu_frames_per_pass

    @property
    def receptive_field_s(self) -> float:
        return ((self.receptive_field_frames - 1) * HOP_LENGTH + N_FFT) / SAMPLE_RATE


# Receptive fields in STFT frames, from the layer stack: FCN conv/pool 1-3 + conv 4 = 234;
# Musicnn 129-frame temporal filter + three 7-frame back-end convs + the 64-frame cell = 210;
# CRNN conv/pool 1-4 = 162.
# CPU pass sizes: CPU time per 5 s ESC-50 clip of the frozen graph, one thread, 1/2/4/8 clips
# a pass (320/640/1280/2560 frames): FCN 13.9/13.2/12.9/16.1 ms, CRNN 26.2/25.1/24.3/29.8 ms,
# Musicnn 62.7/60.2/72.5/90.2 ms.
_ARCHS = {
    "fcn": _Arch(FCN, 234, 29.0, 1280),
    "musicnn": _Arch(Musicnn, 210, 3.0, 640),
    "crnn": _Arch(CRNN, 162, 29.0, 1280),
}
_DATASET_NAMES = {
    "msd": "Million Song Dataset",
    "mtat": "MagnaTagATune",
    "jamendo": "MTG-Jamendo",
}


class TaggerTeacher(Teacher):
    """One Won et al. tagger as a teacher; ``net`` is the upstream-compatible module."""

    def __init__(
        self, info: TeacherInfo, net: _TaggerNet, tags: tuple[str, ...], receptive_field_s: float
    ) -> None:
        super().__init__()
        self.info = info
        self.net = net
        self.tags = tags  # names of the 50 outputs of :meth:`tag_probabilities`
        self.receptive_field_s = receptive_field_s
        self.cell_samples = net.cell_frames * HOP_LENGTH
        # Long clips run in segments of this many cells plus a margin of context cells on
        # each side (more than half a receptive field), so memory does not grow with the
        # clip; segments start on cell boundaries, so every pooling grid stays aligned and
        # the result equals a single pass up to float rounding.
        self.max_cells_per_pass = 64
        self.margin_cells = 2
        # On CPU these nets are memory-bound: a pass over 8 × 10 s at once costs far more CPU
        # time than 8 small passes (cache misses; see benchmarks/RESULTS.md), so CPU passes
        # hold at most this many STFT frames; the factory sets the best size of each
        # architecture (``_ARCHS``).
        self.cpu_frames_per_pass = 512
        self._body: Callable[[Tensor], Tensor] = net.embed_spec  # or a frozen CPU graph

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Valid embedding frames for clips of ``lengths`` samples (≥ 1 each)."""
        stft_frames = 1 + lengths.long() // HOP_LENGTH
        return torch.clamp(stft_frames // self.net.cell_frames, min=1)

    def frame_times(self, num_frames: int) -> Tensor:
        """``(T, 2)`` seconds: the cells of STFT frames pooled into each embedding frame."""
        hop_s = self.cell_samples / SAMPLE_RATE
        half_stft_hop_s = HOP_LENGTH / 2 / SAMPLE_RATE
        times = frame_times(num_frames, hop_s, hop_s) - half_stft_hop_s
        return times.clamp(min=0.0)

    def _padded_length(self, length: int) -> int:
        cells = max(1, math.ceil(length / self.cell_samples))
        return cells * self.cell_samples

    def _embed_padded(self, batch: Tensor) -> Tensor:
        """``(B, cells · cell_samples)`` → ``(B, cells, D)``, in segments for long inputs."""
        cells = batch.shape[1] // self.cell_samples
        step, margin, q = self.max_cells_per_pass, self.margin_cells, self.cell_samples
        if cells <= step + 2 * margin:
            return self._body(self.net.front_end(batch)).float()
        parts = []
        for first in range(0, cells, step):
            lo, hi = max(0, first - margin), min(cells, first + step + margin)
            emb = self._body(self.net.front_end(batch[:, lo * q : hi * q])).float()
            parts.append(emb[:, first - lo : first - lo + min(step, cells - first)])
        return torch.cat(parts, dim=1)

    def embed(self, waveforms: Tensor, lengths: Tensor) -> TeacherOutput:
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be (B, L), got {tuple(waveforms.shape)}")
        waveforms = waveforms.to(self.device)
        lengths = lengths.to("cpu", torch.long)
        num_frames = self.num_frames(lengths)
        padded = [self._padded_length(int(n)) for n in lengths]
        total = int(num_frames.max())  # frames past every clip's valid count are not kept
        out = torch.zeros((waveforms.shape[0], total, self.embedding_dim), device=waveforms.device)
        # Clips with equal padded length share a forward pass; each clip's result is then the
        # same as when it is embedded alone.
        for target in sorted(set(padded)):
            rows = [i for i, p in enumerate(padded) if p == target]
            batch = waveforms.new_zeros((len(rows), target), dtype=torch.float32)
            for j, i in enumerate(rows):
                n = min(int(lengths[i]), waveforms.shape[1])
                batch[j, :n] = waveforms[i, :n]
            per_pass = len(rows)
            if batch.device.type == "cpu":
                per_pass = max(1, self.cpu_frames_per_pass // (1 + target // HOP_LENGTH))
            for first in range(0, len(rows), per_pass):
                part = rows[first : first + per_pass]
                emb = self._embed_padded(batch[first : first + per_pass])[:, :total]
                out[part, : emb.shape[1]] = emb
        return TeacherOutput(
            embeddings=out, num_frames=num_frames, frame_times=self.frame_times(total)
        )

    def optimize_for_cpu(self) -> bool:
        """Run the conv body (after the STFT front end) as a frozen TorchScript graph."""
        if self.device.type != "cpu":
            return False
        examples, rng = [], torch.Generator().manual_seed(0)
        with torch.no_grad():
            for batch, cells in ((2, 2), (1, 3), (3, 1)):  # small: this runs at start-up
                wave = torch.randn(batch, cells * self.cell_samples, generator=rng)
                examples.append(self.net.front_end(wave))
        frozen = freeze_for_cpu(_EmbedBody(self.net), examples)
        if frozen is None:
            return False
        # a plain attribute, not a registered submodule: state_dict() stays the upstream one
        object.__setattr__(self, "_body", frozen)
        return True

    def tag_probabilities(self, waveforms: Tensor) -> Tensor:
        """Upstream forward on ``(B, L)`` 16 kHz crops: ``(B, 50)`` tag probabilities."""
        return self.net(waveforms)


class _EmbedBody(nn.Module):
    """``net.embed_spec`` as a module's forward, for tracing."""

    def __init__(self, net: _TaggerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, spec: Tensor) -> Tensor:
        return self.net.embed_spec(spec)


def _build_net(model: str) -> _TaggerNet:
    return _ARCHS[model].build()


def _make_factory(
    info: TeacherInfo, dataset: str, model: str
) -> Callable[[str | Path | None, str], Teacher]:
    weightfile = info.weights[0]
    rf_s = _ARCHS[model].receptive_field_s

    def wrap(net: nn.Module, _: object) -> Teacher:
        teacher = TaggerTeacher(info, net, TAGS[dataset], rf_s)  # type: ignore[arg-type]
        teacher.cpu_frames_per_pass = _ARCHS[model].cpu_frames_per_pass
        return teacher

    def factory(weights: str | Path | None, device: str) -> Teacher:
        return build_teacher(
            weights,
            device,
            net=lambda: _build_net(model),
            teacher=wrap,
            files=lambda w: (resolve_weights(weightfile, w, teacher=info.name),),
            meta_init=False,
        )

    return factory


def _register_all() -> None:
    for (dataset, model), sha in _SHA256.items():
        arch = _ARCHS[model]
        net_cls = arch.build
        cell_s = net_cls.cell_frames * HOP_LENGTH / SAMPLE_RATE
        info = TeacherInfo(
            name=f"{model}-{dataset}",
            family="taggers",
            sample_rate=SAMPLE_RATE,
            embedding_dim=net_cls.embedding_dim,
            window_s=cell_s,
            hop_s=cell_s,
            description=(
                f"{model.upper() if model != 'musicnn' else 'Musicnn'} music tagger trained on "
                f"{_DATASET_NAMES[dataset]} (Won et al. 2020); receptive field "
                f"{arch.receptive_field_s:.2f} s, trained on {arch.trained_input_s:g} s crops"
            ),
            licence="MIT",
            weights=(
                WeightFile(
                    filename=f"sota-music-taggers/{dataset}/{model}/best_model.pth",
                    url=f"{_REPO}/{dataset}/{model}/best_model.pth",
                    sha256=sha,
                    size=_SIZE[(dataset, model)],
                ),
            ),
        )
        register_teacher(info)(_make_factory(info, dataset, model))


_register_all()

__all__ = [
    "CRNN",
    "FCN",
    "TAGS",
    "MelSpectrogram",
    "Musicnn",
    "TaggerTeacher",
    "mel_filterbank",
    "power_to_db",
]
