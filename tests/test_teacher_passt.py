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
import copy
import io
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from east.errors import CacheError, WeightsError
from east.extract.teachers import create_teacher, teacher_info
from east.extract.teachers.base import full_window_count
from east.extract.teachers.passt import (
    HOP_SAMPLES,
    PAD_SAMPLES,
    PASST_WEIGHTS,
    WINDOW_SAMPLES,
    PasstMelFrontEnd,
    PaSSTNet,
    PaSSTTeacher,
    kaldi_mel_banks,
    passt,
    passt_uncentred,
    reflect_pad,
)
from east.extract.weights import sha256_file

SR = 32000
REAL_10S = "openmic_000046_3840.ogg"  # a 10.0 s clip in ../shared/data/samples


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
    teacher = PaSSTTeacher(ours, framing="uncentred")  # one 0.96 s window, as given
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
def official_call(official):
    """``hear21passt.base.get_timestamp_embeddings`` on the reference's wrapper settings.

    The EAsT reference builds it with ``load_model(mode="embed_only", timestamp_window=960,
    timestamp_hop=960)`` from a newer checkout; PyPI's 0.0.26 ``load_model`` takes no framing
    arguments, so the wrapper is built here as its ``get_basic_model`` does (same class, same
    arguments) around the fixture's randomly initialised network, cut to its first two blocks:
    framing does not depend on depth, and body parity at full depth is tested above.
    """
    net, mel = official
    with contextlib.redirect_stdout(io.StringIO()):
        from hear21passt import base
        from hear21passt.wrapper import PasstBasicWrapper

    shallow = copy.deepcopy(net)
    shallow.blocks = shallow.blocks[:2]
    wrapper = PasstBasicWrapper(
        mel=mel, net=shallow, timestamp_window=960, timestamp_hop=960, mode="embed_only"
    )

    def call(audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PatchEmbed: 0.96 s is not its 10 s input
            return base.get_timestamp_embeddings(audio, wrapper)

    return call, shallow


@pytest.mark.shared
def test_real_10s_clip_matches_official_get_timestamp_embeddings(official_call, samples_dir):
    from east.audio import load_audio

    call, shallow = official_call
    audio = torch.from_numpy(load_audio(samples_dir / REAL_10S, sr=SR))[None]
    assert audio.shape == (1, 10 * SR)
    reference, timestamps_ms = call(audio)
    with torch.device("meta"):
        ours = PaSSTNet(depth=2)
    ours = ours.to_empty(device="cpu")
    ours.load_state_dict(shallow.state_dict(), strict=True)
    teacher = PaSSTTeacher(ours).eval()
    teacher.mel.mel_basis.copy_(
        torch.nn.functional.pad(_knf_mel_banks(128, 1024, SR, 0, 15000)[0], (0, 1))
    )
    with torch.inference_mode():
        out = teacher.embed(audio, torch.tensor([audio.shape[1]]))
    assert reference.shape == out.embeddings.shape == (1, 11, 768)
    err = (out.embeddings - reference).abs().max().item()
    assert err <= 1e-4, err
    assert (reference[0, 0] - reference[0, 5]).abs().max() > 1e-2  # frames differ
    # the official timestamps (ms) are the centres of our frames
    np.testing.assert_allclose(
        1000 * out.frame_times.mean(1).numpy(), timestamps_ms[0].numpy(), atol=1e-6
    )


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
def test_uncentred_num_frames(seconds, frames):
    lengths = torch.tensor([round(seconds * SR)])
    assert int(full_window_count(lengths, WINDOW_SAMPLES, HOP_SAMPLES)[0]) == frames


def _official_segments(audio: torch.Tensor, window: int, hop: int) -> torch.Tensor:
    """``PasstBasicWrapper.get_timestamp_embeddings``' framing, as its source writes it."""
    pad = window // 2
    padded = torch.nn.functional.pad(audio.unsqueeze(1), (pad, pad), mode="reflect")
    segments = torch.nn.functional.unfold(
        padded.unsqueeze(1), kernel_size=(1, window), stride=(1, hop)
    )
    return segments.transpose(-1, -2).transpose(0, 1)  # (T, n_sounds, window)


def test_centred_shapes_and_frame_times_for_1_10_29_1_seconds(shallow_teacher):
    teacher = shallow_teacher
    lengths = torch.tensor([SR, 10 * SR, round(29.1 * SR)])
    torch.manual_seed(4)
    waveforms = 0.1 * torch.randn(3, int(lengths.max()))
    with torch.inference_mode():
        out = teacher.embed(waveforms, lengths)
    # hear21passt's frame count for each clip alone: T = 1 + ⌊L / 30720⌋ = 2, 11, 31
    official = [_official_segments(waveforms[i : i + 1, :n], 30720, 30720).shape[0]
                for i, n in enumerate(lengths.tolist())]  # fmt: skip
    assert out.num_frames.tolist() == official == [2, 11, 31]
    assert out.embeddings.shape == (3, 31, 768) and out.embeddings.dtype == torch.float32
    assert out.frame_times.dtype == torch.float64
    # centred on multiples of 0.96 s (hear21passt's timestamps), half a window either side
    centres = 0.96 * np.arange(31)
    np.testing.assert_allclose(out.frame_times.mean(1).numpy(), centres, atol=1e-12)
    np.testing.assert_allclose(out.frame_times[:, 0].numpy(), centres - 0.48, atol=1e-12)
    np.testing.assert_allclose(out.frame_times[:, 1].numpy(), centres + 0.48, atol=1e-12)
    assert out.frame_times[0, 0] < 0  # the first window starts before the clip
    assert torch.all(out.embeddings[0, 2:] == 0) and torch.all(out.embeddings[1, 11:] == 0)
    assert torch.all(out.embeddings[2].abs().sum(-1) > 0)


def test_uncentred_shapes_and_frame_times_for_1_10_29_1_seconds(shallow_teacher):
    teacher = PaSSTTeacher(shallow_teacher.net, framing="uncentred").eval()
    assert teacher.info.name == "passt-uncentred" and teacher.info.framing == "uncentred"
    lengths = torch.tensor([SR, 10 * SR, round(29.1 * SR)])
    torch.manual_seed(4)
    waveforms = 0.1 * torch.randn(3, int(lengths.max()))
    with torch.inference_mode():
        out = teacher.embed(waveforms, lengths)
    assert out.embeddings.shape == (3, 30, 768)
    assert out.num_frames.tolist() == [1, 10, 30]
    expected_starts = 0.96 * np.arange(30)
    np.testing.assert_allclose(out.frame_times[:, 0].numpy(), expected_starts, atol=1e-12)
    np.testing.assert_allclose(out.frame_times[:, 1].numpy(), expected_starts + 0.96, atol=1e-12)
    # The last full window of the 29.1 s clip ends inside it; the 0.3 s tail is dropped.
    assert out.frame_times[29, 1] <= 29.1
    assert torch.all(out.embeddings[0, 1:] == 0) and torch.all(out.embeddings[1, 10:] == 0)


def test_reflect_pad_equals_torch_and_numpy_reflect():
    torch.manual_seed(8)
    x = torch.full((4, 40), 9.0)  # garbage past each length must not leak in
    lengths = torch.tensor([40, 25, 7, 1])
    for b, n in enumerate(lengths.tolist()):
        x[b, :n] = torch.randn(n)
    padded, new_lengths = reflect_pad(x, lengths, 10)
    assert new_lengths.tolist() == [60, 45, 27, 21]
    for b, n in enumerate(lengths.tolist()):
        got = padded[b, : n + 20]
        # numpy repeats the reflection where the pad is longer than the clip
        np.testing.assert_array_equal(got.numpy(), np.pad(x[b, :n].numpy(), 10, mode="reflect"))
        if n > 10:  # torch's reflect padding (hear21passt's) is defined here: the same
            torch_pad = torch.nn.functional.pad(x[b : b + 1, None, :n], (10, 10), mode="reflect")
            assert torch.equal(got, torch_pad[0, 0])


def test_centred_is_uncentred_on_the_reflect_padded_clip(shallow_teacher):
    centred = shallow_teacher
    uncentred = PaSSTTeacher(centred.net, framing="uncentred").eval()
    torch.manual_seed(9)
    clip = 0.1 * torch.randn(2 * HOP_SAMPLES + 5000)
    by_hand = torch.nn.functional.pad(clip[None, None], (PAD_SAMPLES, PAD_SAMPLES), mode="reflect")
    with torch.inference_mode():
        a = centred.embed(clip[None], torch.tensor([clip.numel()]))
        b = uncentred.embed(by_hand[0], torch.tensor([by_hand.shape[-1]]))
    assert a.num_frames.tolist() == b.num_frames.tolist() == [3]
    torch.testing.assert_close(a.embeddings, b.embeddings, atol=1e-5, rtol=0)
    np.testing.assert_allclose(a.frame_times.numpy(), b.frame_times.numpy() - 0.48, atol=1e-12)


@pytest.mark.parametrize("framing", ["official", "uncentred"])
def test_batch_matches_single_clips_and_ignores_padding_values(shallow_teacher, framing):
    teacher = PaSSTTeacher(shallow_teacher.net, framing=framing).eval()
    torch.manual_seed(5)
    short = 0.1 * torch.randn(int(0.3 * SR))  # shorter than half a window when centred
    long = 0.1 * torch.randn(2 * HOP_SAMPLES + 1000)
    batch = torch.full((2, long.numel()), 7.0)  # garbage past each length must not matter
    batch[0, : short.numel()] = short
    batch[1] = long
    with torch.inference_mode():
        together = teacher.embed(batch, torch.tensor([short.numel(), long.numel()]))
        alone_short = teacher.embed(short[None], torch.tensor([short.numel()]))
        alone_long = teacher.embed(long[None], torch.tensor([long.numel()]))
    assert together.num_frames.tolist() == ([1, 3] if framing == "official" else [1, 2])
    n_long = int(together.num_frames[1])
    torch.testing.assert_close(
        together.embeddings[0, :1], alone_short.embeddings[0], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        together.embeddings[1, :n_long], alone_long.embeddings[0], atol=1e-5, rtol=0
    )
    # The short clip equals its one window built by hand: zero-padded (uncentred), or
    # reflected to both sides repeatedly (centred: torch's reflect pad refuses a 0.3 s clip).
    if framing == "official":
        window = torch.from_numpy(np.pad(short.numpy(), PAD_SAMPLES, mode="reflect"))
    else:
        window = torch.nn.functional.pad(short, (0, WINDOW_SAMPLES - short.numel()))
    with torch.inference_mode():
        by_hand = PaSSTTeacher(teacher.net, framing="uncentred").eval()
        by_hand = by_hand.embed(window[None, :WINDOW_SAMPLES], torch.tensor([WINDOW_SAMPLES]))
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
    assert info.framing == "official"
    old = teacher_info("passt-uncentred")
    assert (old.framing, old.window_s, old.hop_s, old.weights) == (
        "uncentred",
        0.96,
        0.96,
        info.weights,
    )


def test_factories_build_each_framing(shallow_factory):
    official, uncentred = passt("random", "cpu"), passt_uncentred("random", "cpu")
    assert official.info.name == "passt" and official.info.framing == "official"
    assert uncentred.info.name == "passt-uncentred" and uncentred.info.framing == "uncentred"
    assert torch.equal(official.net.cls_token, uncentred.net.cls_token)  # the same weights
    assert create_teacher("passt-uncentred", "random").info.framing == "uncentred"
    with pytest.raises(ValueError, match="framing"):
        PaSSTTeacher(PaSSTNet(depth=1), framing="centred")


def test_store_of_another_framing_is_refused_on_resume(tmp_path, shallow_factory):
    from east.cache_schema import create_store
    from east.extract.runner import ExtractConfig, TeacherSpec, prepare_store, provenance_for
    from east_tiny_teacher import make_dataset

    manifest = make_dataset(tmp_path / "audio", 2)
    cfg = ExtractConfig(num_workers=0, progress=False, device="cpu")
    spec = TeacherSpec("passt", "random")
    teacher = passt("random", "cpu")
    provenance = provenance_for(manifest, spec, teacher, cfg)
    assert provenance["framing"] == "official"

    def store(path, **changes):
        attrs = {k: v for k, v in {**provenance, **changes}.items() if v is not None}
        create_store(path, provenance=attrs, clip_ids=manifest.clip_ids, max_frames=2, dim=768)
        return path

    # written before framing was recorded (east's uncentred frames), or another framing
    for path in (store(tmp_path / "old.zarr", framing=None),
                 store(tmp_path / "other.zarr", framing="uncentred")):  # fmt: skip
        with pytest.raises(CacheError, match="framing") as err:
            prepare_store(manifest, path, spec, teacher, cfg)
        assert "\n" not in str(err.value)
    same = store(tmp_path / "same.zarr")
    assert prepare_store(manifest, same, spec, teacher, cfg).attrs["framing"] == "official"


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
