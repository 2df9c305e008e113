"""PaSST teacher: framing, front-end and transformer against the official ``hear21passt`` code.

``hear21passt`` imports ``timm`` (only for a checkpoint-download helper) and ``torchaudio`` (for
the Kaldi mel banks, and masking layers used only in training) at import time; neither loads
with torch 2.13 here. The official-model fixture stands in for them with minimal fake modules,
in this test only: ``timm``'s download helper raises if called, the masking layers raise if run,
and ``torchaudio.compliance.kaldi.get_mel_banks`` — the one real computation — is served by
``kaldi-native-fbank``, an independent C++ port of Kaldi's ``MelBanks``.
"""

from __future__ import annotations

import contextlib
import io
import sys
import types

import numpy as np
import pytest
import torch

from east.errors import WeightsError
from east.extract.teachers import create_teacher, teacher_info
from east.extract.teachers.base import full_window_count
from east.extract.teachers.passt import (
    HOP_SAMPLES,
    PASST_WEIGHTS,
    WINDOW_SAMPLES,
    PasstMelFrontEnd,
    PaSSTNet,
    PaSSTTeacher,
    kaldi_mel_banks,
    passt,
)
from east.extract.weights import sha256_file

SR = 32000


def _knf_mel_banks(num_bins, n_fft, sample_rate, low_freq, high_freq, *_vtln, **_kw):
    knf = pytest.importorskip("kaldi_native_fbank")
    mel_opts = knf.MelBanksOptions()
    mel_opts.num_bins = num_bins
    mel_opts.low_freq = float(low_freq)
    mel_opts.high_freq = float(high_freq)
    frame_opts = knf.FrameExtractionOptions()
    frame_opts.samp_freq = float(sample_rate)
    frame_opts.frame_length_ms = 1000.0 * n_fft / sample_rate  # padded size = n_fft
    matrix = np.asarray(knf.MelBanks(mel_opts, frame_opts, 1.0).get_matrix(), dtype=np.float32)
    # torchaudio's get_mel_banks returns the n_fft/2 bins below Nyquist (and center freqs).
    return torch.from_numpy(matrix[:, : n_fft // 2].copy()), None


def _fake_modules() -> dict[str, types.ModuleType]:
    class _TrainingOnlyMasking(torch.nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def forward(self, x):
            raise AssertionError("masking runs only in training mode")

    def _no_download(*args, **kwargs):
        raise AssertionError("the parity test must not download weights")

    torchaudio = types.ModuleType("torchaudio")
    transforms = types.ModuleType("torchaudio.transforms")
    compliance = types.ModuleType("torchaudio.compliance")
    kaldi = types.ModuleType("torchaudio.compliance.kaldi")
    transforms.FrequencyMasking = transforms.TimeMasking = _TrainingOnlyMasking
    kaldi.get_mel_banks = _knf_mel_banks
    torchaudio.transforms, torchaudio.compliance, compliance.kaldi = transforms, compliance, kaldi
    timm = types.ModuleType("timm")
    timm_models = types.ModuleType("timm.models")
    hub = types.ModuleType("timm.models._hub")
    hub.download_cached_file = _no_download
    timm.models, timm_models._hub = timm_models, hub
    return {
        "torchaudio": torchaudio,
        "torchaudio.transforms": transforms,
        "torchaudio.compliance": compliance,
        "torchaudio.compliance.kaldi": kaldi,
        "timm": timm,
        "timm.models": timm_models,
        "timm.models._hub": hub,
    }


def _fill_random(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random weights on the scale of a trained ViT (LayerNorm gains near 1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            is_norm_gain = param.ndim == 1 and "norm" in name and name.endswith("weight")
            param.copy_(1.0 + 0.1 * noise if is_norm_gain else 0.05 * noise)
    return module


@pytest.fixture(scope="module")
def official():
    """The official PaSST-S network and eval-mode front-end, randomly initialised."""
    pytest.importorskip("hear21passt")
    pytest.importorskip("kaldi_native_fbank")
    with pytest.MonkeyPatch.context() as mp:
        for name, module in _fake_modules().items():
            mp.setitem(sys.modules, name, module)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the official code prints a lot
                import hear21passt.models.passt as official_passt
                from hear21passt.models.preprocess import AugmentMelSTFT

                # Skip the slow official init: every parameter is filled below.
                mp.setattr(official_passt, "trunc_normal_", lambda tensor, **kw: tensor)
                mp.setattr(official_passt, "_init_vit_weights", lambda *a, **kw: None)
                net = official_passt.get_model(
                    arch="passt_s_swa_p16_128_ap476",
                    pretrained=False,
                    n_classes=527,
                    in_channels=1,
                    fstride=10,
                    tstride=10,
                    input_fdim=128,
                    input_tdim=998,
                )
                net = _fill_random(net)
                # hear21passt.base.get_basic_model's front-end settings.
                mel = AugmentMelSTFT(
                    n_mels=128,
                    sr=32000,
                    win_length=800,
                    hopsize=320,
                    n_fft=1024,
                    freqm=48,
                    timem=192,
                    htk=False,
                    fmin=0.0,
                    fmax=None,
                    norm=1,
                    fmin_aug_range=10,
                    fmax_aug_range=2000,
                )
            yield net.eval(), mel.eval()
        finally:
            # The imported modules hold the fakes: never let another test reuse them.
            for name in [m for m in sys.modules if m.startswith("hear21passt")]:
                del sys.modules[name]


def _official_embed(official, waveforms: torch.Tensor) -> torch.Tensor:
    net, mel = official
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), pytest.warns(UserWarning):
        # The official PatchEmbed warns that 0.96 s is not its 10 s training size.
        _, features = net(mel(waveforms).unsqueeze(1))
    return features


def test_state_dict_matches_official_checkpoint_layout(official):
    net, _ = official
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    with torch.device("meta"):  # shapes only
        ours = {k: tuple(v.shape) for k, v in PaSSTNet().state_dict().items()}
    assert ours == expected
    assert ours["time_new_pos_embed"] == (1, 768, 1, 99)
    assert ours["head.1.weight"] == (527, 768)


def test_kaldi_mel_banks_match_kaldi_native_fbank():
    reference, _ = _knf_mel_banks(128, 1024, SR, 0.0, 15000.0)
    banks = kaldi_mel_banks(128, 1024, SR, 0.0, 15000.0)
    assert banks.shape == (128, 513)
    assert torch.all(banks[:, 512] == 0)
    # Two independent single-precision implementations (Kaldi computes banks in float32):
    # weights are ≤ 1, the disagreement is float32 rounding of mel-scale differences.
    torch.testing.assert_close(banks[:, :512], reference, rtol=0, atol=5e-5)
    # Every band has the same support in both.
    assert torch.equal(banks[:, :512].argmax(1), reference.argmax(1))


def test_front_end_matches_official(official):
    _, mel = official
    torch.manual_seed(2)
    waveforms = 0.3 * torch.randn(2, WINDOW_SAMPLES)
    front_end = PasstMelFrontEnd()
    # Same bank on both sides isolates pre-emphasis, STFT, power, log and normalisation.
    front_end.mel_basis.copy_(
        torch.nn.functional.pad(_knf_mel_banks(128, 1024, SR, 0, 15000)[0], (0, 1))
    )
    with torch.no_grad():
        reference = mel(waveforms)
        ours = front_end(waveforms)
    assert ours.shape == reference.shape == (2, 128, 96)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_embedding_matches_official_with_identical_weights(official):
    net, _ = official
    torch.manual_seed(3)
    waveforms = 0.3 * torch.randn(2, WINDOW_SAMPLES)
    with torch.device("meta"):
        ours = PaSSTNet()
    ours = ours.to_empty(device="cpu")
    ours.load_state_dict(net.state_dict(), strict=True)
    teacher = PaSSTTeacher(ours)
    teacher.mel.mel_basis.copy_(
        torch.nn.functional.pad(_knf_mel_banks(128, 1024, SR, 0, 15000)[0], (0, 1))
    )
    teacher.eval()
    reference = _official_embed(official, waveforms)
    with torch.inference_mode():
        out = teacher.embed(waveforms, torch.tensor([WINDOW_SAMPLES, WINDOW_SAMPLES]))
    assert out.embeddings.shape == (2, 1, 768)
    err = (out.embeddings[:, 0] - reference).abs().max().item()
    assert err <= 1e-5, err
    # The embedding is not trivially constant: the two clips differ.
    assert (reference[0] - reference[1]).abs().max() > 1e-2


@pytest.fixture(scope="module")
def shallow_teacher() -> PaSSTTeacher:
    # Framing does not depend on depth: one block keeps the 41-window test fast.
    torch.manual_seed(4)
    return PaSSTTeacher(PaSSTNet(depth=1)).eval()


@pytest.fixture
def shallow_factory(monkeypatch):
    """Make the registered factory build a one-block network (loading logic unchanged)."""
    import functools

    import east.extract.teachers.passt as passt_module

    monkeypatch.setattr(passt_module, "PaSSTNet", functools.partial(PaSSTNet, depth=1))


@pytest.mark.parametrize(
    ("seconds", "frames"), [(1.0, 1), (10.0, 10), (29.1, 30), (0.5, 1), (1.92, 2)]
)
def test_num_frames_and_times(seconds, frames):
    lengths = torch.tensor([round(seconds * SR)])
    assert int(full_window_count(lengths, WINDOW_SAMPLES, HOP_SAMPLES)[0]) == frames


def test_shapes_and_frame_times_for_1_10_29_1_seconds(shallow_teacher):
    teacher = shallow_teacher
    lengths = torch.tensor([SR, 10 * SR, round(29.1 * SR)])
    torch.manual_seed(4)
    waveforms = 0.1 * torch.randn(3, int(lengths.max()))
    with torch.inference_mode():
        out = teacher.embed(waveforms, lengths)
    assert out.embeddings.shape == (3, 30, 768)
    assert out.embeddings.dtype == torch.float32
    assert out.num_frames.tolist() == [1, 10, 30]
    assert out.frame_times.dtype == torch.float64
    expected_starts = 0.96 * np.arange(30)
    np.testing.assert_allclose(out.frame_times[:, 0].numpy(), expected_starts, atol=1e-12)
    np.testing.assert_allclose(out.frame_times[:, 1].numpy(), expected_starts + 0.96, atol=1e-12)
    # The last full window of the 29.1 s clip ends inside it; the 0.3 s tail is dropped.
    assert out.frame_times[29, 1] <= 29.1
    # Frames past num_frames are padding (zeros here); valid frames are not.
    assert torch.all(out.embeddings[0, 1:] == 0) and torch.all(out.embeddings[1, 10:] == 0)
    assert torch.all(out.embeddings[2].abs().sum(-1) > 0)


def test_batch_matches_single_clips_and_ignores_padding_values(shallow_teacher):
    teacher = shallow_teacher
    torch.manual_seed(5)
    short = 0.1 * torch.randn(int(0.5 * SR))
    long = 0.1 * torch.randn(2 * HOP_SAMPLES + 1000)
    batch = torch.full((2, long.numel()), 7.0)  # garbage past each length must not matter
    batch[0, : short.numel()] = short
    batch[1] = long
    with torch.inference_mode():
        together = teacher.embed(batch, torch.tensor([short.numel(), long.numel()]))
        alone_short = teacher.embed(short[None], torch.tensor([short.numel()]))
        alone_long = teacher.embed(long[None], torch.tensor([long.numel()]))
    assert together.num_frames.tolist() == [1, 2]
    torch.testing.assert_close(
        together.embeddings[0, :1], alone_short.embeddings[0], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(together.embeddings[1], alone_long.embeddings[0], atol=1e-5, rtol=0)
    # The padded short clip equals the clip zero-padded to one window by hand.
    padded = torch.nn.functional.pad(short, (0, WINDOW_SAMPLES - short.numel()))
    with torch.inference_mode():
        by_hand = teacher.embed(padded[None], torch.tensor([WINDOW_SAMPLES]))
    torch.testing.assert_close(alone_short.embeddings, by_hand.embeddings, atol=1e-5, rtol=0)


def test_autocast_runs_and_returns_float32(shallow_teacher):
    teacher = shallow_teacher
    torch.manual_seed(6)
    waveforms = 0.1 * torch.randn(1, WINDOW_SAMPLES)
    lengths = torch.tensor([WINDOW_SAMPLES])
    with torch.inference_mode():
        full = teacher.embed(waveforms, lengths).embeddings
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = teacher.embed(waveforms, lengths).embeddings
    assert mixed.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(full.flatten(), mixed.flatten(), dim=0)
    assert cos > 0.99


def test_registered_info():
    info = teacher_info("passt")
    assert (info.sample_rate, info.embedding_dim, info.window_s, info.hop_s) == (
        32000,
        768,
        0.96,
        0.96,
    )
    assert info.weights == (PASST_WEIGHTS,)
    assert PASST_WEIGHTS.url.endswith("/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt")


def test_missing_weights_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EAST_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(WeightsError) as excinfo:
        create_teacher("passt")
    message = str(excinfo.value)
    assert "\n" not in message
    assert PASST_WEIGHTS.filename in message
    assert PASST_WEIGHTS.url in message
    assert str(tmp_path / "weights") in message


def test_loads_checkpoint_path_strictly_and_stamps_its_sha256(tmp_path, shallow_factory):
    torch.manual_seed(7)
    reference = PaSSTNet(depth=1)
    path = tmp_path / "passt.pt"
    torch.save(reference.state_dict(), path)
    teacher = passt(path, "cpu")
    assert teacher.weights_sha256 == sha256_file(path)
    for key, value in reference.state_dict().items():
        assert torch.equal(teacher.net.state_dict()[key], value), key
    # A checkpoint of another shape is refused with a one-line error.
    broken = {k: v for k, v in reference.state_dict().items() if not k.startswith("head_dist")}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(WeightsError, match="missing keys"):
        passt(tmp_path / "broken.pt", "cpu")


def test_random_weights_are_explicit_and_reproducible(shallow_factory):
    first, second = passt("random", "cpu"), passt("random", "cpu")
    assert first.weights_sha256 == "random"
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    assert torch.equal(first.net.cls_token, second.net.cls_token)
    assert first.net.cls_token.abs().sum() > 0
