"""OpenL3 teacher against ``torchopenl3``'s ``PytorchOpenl3`` (constructed directly: no download)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from east.errors import CacheError, WeightsError
from east.extract.teachers import create_teacher, teacher_info
from east.extract.teachers.openl3 import (
    CENTRE_PAD,
    HOP_SAMPLES,
    OPENL3_GIT_BLOB_SHA1,
    OPENL3_WEIGHTS,
    WINDOW_SAMPLES,
    KapreMelSpectrogram,
    OpenL3Net,
    OpenL3Teacher,
    git_blob_sha1,
    official_frame_count,
    openl3,
    openl3_uncentred,
)
from east.extract.weights import sha256_file

SR = 48000
REAL_10S = "openmic_000046_3840.ogg"  # a 10.0 s clip in ../shared/data/samples


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Random learned weights and batch-norm statistics; DFT and mel buffers left as built."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.startswith("speclayer") or name.endswith("num_batches_tracked"):
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif "batch_normalization" in name and name.endswith("weight"):
                tensor.copy_(1.0 + 0.1 * noise)
            else:
                tensor.copy_(0.05 * noise)
    return module.eval()


@pytest.fixture(scope="module")
def official():
    models = pytest.importorskip("torchopenl3.models")
    return models.PytorchOpenl3(content_type="music", input_repr="mel128", embedding_size=512)


def test_state_dict_matches_torchopenl3_layout(official):
    expected = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in OpenL3Net().state_dict().items()}
    assert ours == expected
    assert ours["speclayer.mel_basis"] == (128, 1025)
    assert ours["audio_embedding_layer.weight"] == (512, 512, 3, 3)


def test_dft_kernels_match_torchopenl3(official):
    ours = OpenL3Net().state_dict()
    for key in ("speclayer.dft_real_kernels", "speclayer.dft_imag_kernels"):
        torch.testing.assert_close(ours[key], official.state_dict()[key], rtol=0, atol=1e-6)


def test_mel_basis_is_kapres_area_normalised_htk_bank():
    librosa = pytest.importorskip("librosa")
    # kapre 0.1.4 asked librosa for norm=1, which meant area ("slaney") normalisation before
    # librosa 0.8; torchopenl3 built fresh with a newer librosa gets an L1-normalised bank
    # instead, but its weight files carry the trained model's bank, which is this one.
    reference = librosa.filters.mel(
        sr=SR, n_fft=2048, n_mels=128, fmin=0.0, fmax=SR // 2, htk=True, norm="slaney"
    )
    ours = KapreMelSpectrogram().mel_basis
    torch.testing.assert_close(ours, torch.from_numpy(reference), rtol=0, atol=1e-7)


def test_front_end_and_embedding_match_torchopenl3(official):
    reference = _randomise(official, seed=1)
    ours = OpenL3Net()
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.eval()
    torch.manual_seed(2)
    waveforms = 0.3 * torch.randn(2, WINDOW_SAMPLES)
    with torch.no_grad():
        ref_spec = reference.speclayer(waveforms[:, None]).squeeze(-1)
        ref_embedding = reference(waveforms[:, None])
    with torch.inference_mode():
        spec = ours.speclayer(waveforms)
        one_window = OpenL3Teacher(ours, framing="uncentred")  # the 1 s input as given
        embedding = one_window.embed(waveforms, torch.tensor([WINDOW_SAMPLES] * 2))
    assert spec.shape == ref_spec.shape == (2, 128, 199)
    assert (spec - ref_spec).abs().max().item() <= 1e-5
    assert embedding.embeddings.shape == (2, 1, 512)
    err = (embedding.embeddings[:, 0] - ref_embedding).abs().max().item()
    assert err <= 1e-5, err
    assert (ref_embedding[0] - ref_embedding[1]).abs().max() > 1e-3  # not a constant output


class _CheapNet(nn.Module):
    """Stand-in network for framing tests: the real front-end, then a mean over time."""

    def __init__(self) -> None:
        super().__init__()
        self.speclayer = KapreMelSpectrogram()
        self.proj = nn.Linear(128, 512)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.ndim == 3:  # torchopenl3 passes (N, 1, L)
            waveforms = waveforms[:, 0]
        return self.proj(self.speclayer(waveforms).mean(-1))


def _package_frame_count(length: int) -> int:
    """torchopenl3 ``preprocess_audio_batch``'s frame count (= openl3 ``core``'s), from its source:
    ``center_audio`` then ``pad_audio`` then ``1 + int((len − frame) / hop)``."""
    padded = length + int(WINDOW_SAMPLES / 2.0)
    if padded < WINDOW_SAMPLES:
        padded = WINDOW_SAMPLES
    else:
        padded += int(np.ceil((padded - WINDOW_SAMPLES) / float(HOP_SAMPLES))) * HOP_SAMPLES - (
            padded - WINDOW_SAMPLES
        )
    return 1 + int((padded - WINDOW_SAMPLES) / float(HOP_SAMPLES))


@pytest.mark.parametrize(
    ("seconds", "frames"), [(1.0, 2), (10.0, 11), (29.1, 31), (0.3, 1), (0.5, 1), (1.46, 2)]
)
def test_centred_frame_counts_and_times(seconds, frames):
    teacher = OpenL3Teacher(_CheapNet()).eval()
    length = round(seconds * SR)
    assert official_frame_count(torch.tensor([length])).tolist() == [frames]
    assert _package_frame_count(length) == frames
    torch.manual_seed(3)
    with torch.inference_mode():
        out = teacher.embed(0.1 * torch.randn(1, length), torch.tensor([length]))
    assert out.num_frames.tolist() == [frames]
    assert out.embeddings.shape == (1, frames, 512)
    centres = 0.96 * np.arange(frames)  # openl3's timestamps: arange(n) * hop_size
    np.testing.assert_allclose(out.frame_times[:, 0].numpy(), centres - 0.5, atol=1e-12)
    np.testing.assert_allclose(out.frame_times[:, 1].numpy(), centres + 0.5, atol=1e-12)


@pytest.mark.parametrize(("seconds", "frames"), [(1.0, 1), (10.0, 10), (29.1, 30), (0.3, 1)])
def test_uncentred_frame_counts_and_times(seconds, frames):
    teacher = OpenL3Teacher(_CheapNet(), framing="uncentred").eval()
    assert teacher.info.name == "openl3-uncentred"
    length = round(seconds * SR)
    torch.manual_seed(3)
    with torch.inference_mode():
        out = teacher.embed(0.1 * torch.randn(1, length), torch.tensor([length]))
    assert out.num_frames.tolist() == [frames]
    assert out.embeddings.shape == (1, frames, 512)
    starts = 0.96 * np.arange(frames)
    np.testing.assert_allclose(out.frame_times[:, 0].numpy(), starts, atol=1e-12)
    np.testing.assert_allclose(out.frame_times[:, 1].numpy(), starts + 1.0, atol=1e-12)
    if seconds >= 1.0:  # full windows only: the last one ends inside the clip
        assert out.frame_times[-1, 1] <= seconds + 1e-9


def _top_level(audio: torch.Tensor, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``torchopenl3.get_audio_embedding`` as the EAsT reference calls openl3's (hop 0.96 s,
    ``center=True``); ``model`` given, so nothing is downloaded."""
    torchopenl3 = pytest.importorskip("torchopenl3")
    return torchopenl3.get_audio_embedding(
        audio, SR, model=model, center=True, hop_size=0.96, batch_size=32, verbose=False
    )


@pytest.mark.parametrize("seconds", [0.3, 1.46, 2.9])
def test_centred_windows_equal_torchopenl3_top_level_call(seconds):
    net = _CheapNet().eval()
    length = round(seconds * SR)
    torch.manual_seed(7)
    audio = 0.1 * torch.randn(1, length)
    reference, timestamps = _top_level(audio, net)
    with torch.inference_mode():
        out = OpenL3Teacher(net).embed(audio, torch.tensor([length]))
    assert out.embeddings.shape == reference.shape
    torch.testing.assert_close(out.embeddings, reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out.frame_times.mean(1).numpy(), timestamps[0].numpy(), atol=1e-6)


@pytest.mark.shared
def test_real_10s_clip_matches_torchopenl3_get_audio_embedding(official, samples_dir):
    from east.audio import load_audio

    reference = _randomise(official, seed=8)
    ours = OpenL3Net()
    ours.load_state_dict(reference.state_dict(), strict=True)
    audio = torch.from_numpy(load_audio(samples_dir / REAL_10S, sr=SR))[None]
    assert audio.shape == (1, 10 * SR)
    expected, timestamps = _top_level(audio, reference)
    with torch.inference_mode():
        out = OpenL3Teacher(ours.eval()).embed(audio, torch.tensor([audio.shape[1]]))
    assert expected.shape == out.embeddings.shape == (1, 11, 512)
    err = (out.embeddings - expected).abs().max().item()
    assert err <= 1e-4, err
    assert (expected[0, 0] - expected[0, 5]).abs().max() > 1e-3  # frames differ
    np.testing.assert_allclose(out.frame_times.mean(1).numpy(), 0.96 * np.arange(11), atol=1e-12)
    np.testing.assert_allclose(timestamps[0].numpy(), 0.96 * np.arange(11), atol=1e-6)
    assert out.frame_times[0, 0] == -0.5


def test_centred_batch_matches_single_clips_and_ignores_padding_values():
    teacher = OpenL3Teacher(_CheapNet()).eval()
    torch.manual_seed(9)
    short = 0.1 * torch.randn(int(0.4 * SR))
    long = 0.1 * torch.randn(HOP_SAMPLES + WINDOW_SAMPLES + 100)
    batch = torch.full((2, long.numel()), 5.0)  # garbage past the first clip's length
    batch[0, : short.numel()] = short
    batch[1] = long
    with torch.inference_mode():
        together = teacher.embed(batch, torch.tensor([short.numel(), long.numel()]))
        alone = [teacher.embed(x[None], torch.tensor([x.numel()])) for x in (short, long)]
    assert together.num_frames.tolist() == [1, 3]
    # batch size changes the DFT convolution's rounding a little: values are ~4 here
    torch.testing.assert_close(
        together.embeddings[0, :1], alone[0].embeddings[0], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(together.embeddings[1], alone[1].embeddings[0], atol=1e-5, rtol=1e-5)
    # the short clip's one window: half a window of zeros, the clip, zeros
    window = torch.nn.functional.pad(
        short, (CENTRE_PAD, WINDOW_SAMPLES - CENTRE_PAD - short.numel())
    )
    with torch.inference_mode():
        by_hand = teacher.net(window[None])
    torch.testing.assert_close(alone[0].embeddings[0], by_hand, atol=1e-5, rtol=1e-5)


def test_batched_real_network_shapes_and_padding():
    torch.manual_seed(4)
    teacher = OpenL3Teacher(_randomise(OpenL3Net(), seed=4), framing="uncentred")
    one = 0.1 * torch.randn(WINDOW_SAMPLES)
    two = 0.1 * torch.randn(HOP_SAMPLES + WINDOW_SAMPLES)
    batch = torch.full((2, two.numel()), 5.0)  # garbage past the first clip's length
    batch[0, : one.numel()] = one
    batch[1] = two
    with torch.inference_mode():
        together = teacher.embed(batch, torch.tensor([one.numel(), two.numel()]))
        alone = teacher.embed(one[None], torch.tensor([one.numel()]))
    assert together.embeddings.shape == (2, 2, 512)
    assert together.num_frames.tolist() == [1, 2]
    assert torch.all(together.embeddings[0, 1] == 0)
    torch.testing.assert_close(together.embeddings[0, :1], alone.embeddings[0], rtol=0, atol=1e-5)


def test_front_end_runs_in_float32_under_autocast():
    # CPU bfloat16 convolutions are too slow for a unit test: the stand-in network checks the
    # part autocast could break (the dB front-end must stay float32) and the float32 output.
    teacher = OpenL3Teacher(_CheapNet()).eval()
    torch.manual_seed(6)
    waveforms = 0.1 * torch.randn(1, WINDOW_SAMPLES)
    lengths = torch.tensor([WINDOW_SAMPLES])
    with torch.inference_mode():
        full = teacher.embed(waveforms, lengths).embeddings
        with torch.autocast("cpu", dtype=torch.bfloat16):
            spec = teacher.net.speclayer(waveforms)
            mixed = teacher.embed(waveforms, lengths).embeddings
    assert spec.dtype == torch.float32
    assert mixed.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(full.flatten(), mixed.flatten(), dim=0)
    assert cos > 0.99


def test_registered_info():
    info = teacher_info("openl3")
    assert (info.sample_rate, info.embedding_dim, info.window_s, info.hop_s) == (
        48000,
        512,
        1.0,
        0.96,
    )
    assert info.weights == (OPENL3_WEIGHTS,)
    assert OPENL3_WEIGHTS.git_blob_sha1 == OPENL3_GIT_BLOB_SHA1
    assert OPENL3_WEIGHTS.url.startswith("https://github.com/torchopenl3/torchopenl3-models/raw/")
    assert OPENL3_WEIGHTS.url.endswith("/torchopenl3_mel128_music_512.pth.tar")
    assert info.framing == "official"
    old = teacher_info("openl3-uncentred")
    assert (old.framing, old.window_s, old.hop_s, old.weights) == (
        "uncentred",
        1.0,
        0.96,
        info.weights,
    )


def test_store_of_another_framing_is_refused_on_resume(tmp_path):
    from east.cache_schema import create_store
    from east.extract.runner import ExtractConfig, TeacherSpec, prepare_store, provenance_for
    from east_tiny_teacher import make_dataset

    manifest = make_dataset(tmp_path / "audio", 2)
    cfg = ExtractConfig(num_workers=0, progress=False, device="cpu")
    spec = TeacherSpec("openl3", "random")
    teacher = OpenL3Teacher(_CheapNet())
    provenance = provenance_for(manifest, spec, teacher, cfg)
    assert provenance["framing"] == "official"
    for framing in (None, "uncentred"):  # None: a store written before framing was recorded
        attrs = {k: v for k, v in {**provenance, "framing": framing}.items() if v is not None}
        path = tmp_path / f"{framing}.zarr"
        create_store(path, provenance=attrs, clip_ids=manifest.clip_ids, max_frames=2, dim=512)
        with pytest.raises(CacheError, match="framing"):
            prepare_store(manifest, path, spec, teacher, cfg)


def test_git_blob_sha1_is_gits_object_id(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"hello\n")
    # `printf 'hello\n' | git hash-object --stdin`
    assert git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert git_blob_sha1(path) == hashlib.sha1(b"blob 6\0hello\n").hexdigest()


def test_missing_weights_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EAST_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(WeightsError) as excinfo:
        create_teacher("openl3")
    message = str(excinfo.value)
    assert "\n" not in message
    assert OPENL3_WEIGHTS.filename in message
    assert OPENL3_WEIGHTS.url in message
    assert str(tmp_path / "weights") in message


def test_wrong_pinned_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EAST_WEIGHTS_DIR", str(tmp_path))
    (tmp_path / OPENL3_WEIGHTS.filename).write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match=OPENL3_GIT_BLOB_SHA1):
        openl3(None, "cpu")


def test_loads_checkpoint_path_strictly_and_stamps_its_sha256(tmp_path):
    reference = _randomise(OpenL3Net(), seed=5)
    path = tmp_path / "openl3.pth.tar"
    torch.save(reference.state_dict(), path)
    teacher = openl3(path, "cpu")
    assert teacher.weights_sha256 == sha256_file(path)
    for key, value in reference.state_dict().items():
        assert torch.equal(teacher.net.state_dict()[key], value), key
    broken = {k: v for k, v in reference.state_dict().items() if "conv2d_7" not in k}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(WeightsError, match="missing keys"):
        openl3(tmp_path / "broken.pt", "cpu")


def test_random_weights_are_explicit_and_reproducible():
    first, second = openl3("random", "cpu"), openl3_uncentred("random", "cpu")
    assert (first.info.framing, second.info.framing) == ("official", "uncentred")
    assert first.weights_sha256 == "random"
    assert not any(p.requires_grad for p in first.parameters())
    weight = first.net.audio_embedding_layer.weight
    assert torch.equal(weight, second.net.audio_embedding_layer.weight)
