"""Front-ends against librosa (the independent reference), SpecAugment masks and mixup."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from east.features import (
    FRONTENDS,
    LogMelFrontend,
    apply_mixup,
    frontend_for,
    mask_along_axis,
    mel_filterbank,
    mixup,
    sample_mixup,
    spec_augment,
)

librosa = pytest.importorskip("librosa")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(
    ("sr", "n_fft", "n_mels", "fmin", "fmax", "htk", "norm"),
    [
        (16000, 512, 128, 0.0, 8000.0, True, None),
        (32000, 1024, 128, 0.0, 16000.0, True, None),
        (22050, 2048, 64, 30.0, 9000.0, False, "slaney"),
        (16000, 1024, 96, 0.0, 8000.0, False, None),
    ],
)
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, "htk" if htk else "slaney", norm)
    ref = librosa.filters.mel(
        sr=sr,
        n_fft=n_fft,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
        htk=htk,
        norm=norm,
        dtype=np.float64,
    )
    np.testing.assert_allclose(ours, ref, atol=1e-10, rtol=1e-8)


def test_kaldi_bank_is_mel_linear_triangles_on_htk_edges():
    sr, n_fft, n_mels = 32000, 1024, 128
    bank = mel_filterbank(sr, n_fft, n_mels, 0.0, 16000.0, "kaldi")
    edges_hz = librosa.mel_frequencies(n_mels + 2, fmin=0.0, fmax=16000.0, htk=True)
    edges_mel = librosa.hz_to_mel(edges_hz, htk=True)
    bin_mel = librosa.hz_to_mel(librosa.fft_frequencies(sr=sr, n_fft=n_fft), htk=True)
    for m in range(n_mels):
        expected = np.interp(bin_mel, edges_mel[m : m + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
        expected[-1] = 0.0  # Kaldi has no Nyquist bin
        np.testing.assert_allclose(bank[m], expected, atol=1e-9)
    assert bank.shape == (n_mels, n_fft // 2 + 1)


def _tone_noise(sr: float, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(t.size)).astype(
        np.float64
    )


def test_short_chunk_frontend_matches_librosa_db_mel():
    cfg = FRONTENDS["short_chunk_cnn"]
    y = _tone_noise(cfg.sample_rate, 0.5)
    front = LogMelFrontend(cfg).eval()
    ours = front(torch.from_numpy(y)[None]).numpy()[0]
    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window="hann",
        center=True, pad_mode="reflect", power=2.0, n_mels=cfg.n_mels, fmin=cfg.f_min,
        fmax=cfg.f_max, htk=True, norm=None, dtype=np.float64,
    )  # fmt: skip
    ref = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    assert ours.shape == ref.shape == (cfg.n_mels, front.num_frames(y.size))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("name", ["cp_resnet", "mobile_fcn"])
def test_reference_frontend_matches_librosa_stft_with_kaldi_bank(name):
    cfg = FRONTENDS[name]
    y = _tone_noise(cfg.sample_rate, 0.4, seed=1)
    front = LogMelFrontend(cfg).eval()
    ours = front(torch.from_numpy(y)[None]).numpy()[0]
    emphasised = y[1:] - 0.97 * y[:-1]
    stft = librosa.stft(
        emphasised, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window=np.hanning(cfg.win_length), center=True, pad_mode="reflect",
    )  # fmt: skip
    bank = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, 0.0, cfg.f_max, "kaldi")
    ref = (np.log(bank @ np.abs(stft) ** 2 + 1e-5) + 3.7) / 3.1
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_frame_times_and_count_match_output():
    front = frontend_for("cp_resnet").eval()
    x = torch.randn(2, 32000 * 10)
    spec = front(x)
    assert spec.shape == (2, 128, 1000)
    times = front.frame_times(x.shape[1])
    assert times.shape == (1000, 2)
    assert front.hop_seconds == pytest.approx(0.01)
    np.testing.assert_allclose(times[1, 0] - times[0, 0], 0.01)


def test_eval_mode_is_deterministic_and_training_masks():
    torch.manual_seed(0)
    front = frontend_for(
        "cp_resnet", fmin_aug_range=0.0, fmax_aug_range=0.0, freq_mask=20, time_mask=30
    )
    x = torch.randn(3, 32000)
    front.eval()
    a, b = front(x), front(x)
    assert torch.equal(a, b)
    front.train()
    masked = front(x)
    fill = (0.0 + 3.7) / 3.1  # masked to 0 in the log domain, then normalised (reference order)
    changed = ~torch.isclose(masked, a)
    assert torch.all(torch.isclose(masked[changed], torch.tensor(fill)))


def _contiguous_width(flags: np.ndarray) -> int:
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return 0
    assert np.all(np.diff(idx) == 1), "mask must be one contiguous block"
    return idx.size


def test_spec_augment_one_contiguous_mask_per_axis_and_example():
    gen = torch.Generator().manual_seed(3)
    spec = torch.rand(8, 40, 100) + 1.0  # strictly positive: 0 marks a mask
    out = spec_augment(spec, freq_mask=15, time_mask=25, generator=gen)
    widths_f, widths_t = [], []
    for example in out.numpy():
        zero = example == 0.0
        rows = zero.all(axis=1)
        cols = zero.all(axis=0)
        widths_f.append(_contiguous_width(rows))
        widths_t.append(_contiguous_width(cols))
        # everything zero lies in a masked row or column
        assert np.array_equal(zero, rows[:, None] | cols[None, :])
    assert max(widths_f) < 15 and max(widths_t) < 25
    assert sum(widths_f) > 0 and sum(widths_t) > 0
    assert torch.equal(mask_along_axis(spec, 0, -1), spec)


def test_mixup_one_coefficient_for_every_tensor():
    rng = np.random.default_rng(0)
    n = 6
    wave = torch.randn(n, 100)
    labels = torch.rand(n, 5)
    mask = torch.rand(n, 5) > 0.5
    frames = torch.tensor([10, 11, 9, 10, 11, 10])
    emb = torch.randn(n, 4, 3)
    out = mixup(wave, labels, mask, frames, emb, None, alpha=0.3, rng=rng)
    lam, perm = sample_mixup(n, 0.3, np.random.default_rng(0))
    assert torch.all(lam >= 0.5) and torch.all(lam <= 1.0)
    w = lam.float()
    torch.testing.assert_close(out[0], w[:, None] * wave + (1 - w[:, None]) * wave[perm])
    torch.testing.assert_close(out[1], w[:, None] * labels + (1 - w[:, None]) * labels[perm])
    assert torch.equal(out[2], mask | mask[perm])
    assert torch.equal(out[3], torch.minimum(frames, frames[perm]))
    torch.testing.assert_close(out[4], w[:, None, None] * emb + (1 - w[:, None, None]) * emb[perm])
    assert out[5] is None


def test_mixup_with_partner_self_is_identity():
    x = torch.randn(4, 7)
    (y,) = apply_mixup([x], torch.full((4,), 0.7), torch.arange(4))
    torch.testing.assert_close(y, x)
    with pytest.raises(ValueError):
        sample_mixup(4, 0.0)
