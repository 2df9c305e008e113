"""PANNs Cnn14 teachers: framing, weights handling and parity with panns_inference."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from east.errors import WeightsError
from east.extract.teachers import create_teacher
from east.extract.teachers.panns import CNN14_WEIGHTS, Cnn14, PannsTeacher
from east.extract.teachers.panns import LogmelFilterBank as OurLogmel
from east.extract.teachers.panns import Spectrogram as OurSpectrogram

SR = 32_000


@pytest.fixture(scope="module")
def official_cnn14(tmp_path_factory):
    """``panns_inference.models.Cnn14``, imported with ``HOME`` in a temp dir.

    Importing panns_inference runs its ``config.py``, which ``wget``s the AudioSet label CSV
    into ``~/panns_data`` unless the file exists (offline it leaves a 0-byte file). A
    placeholder in a temporary HOME makes the import touch nothing real; the number of
    classes is passed explicitly, so the labels are not needed.
    """
    pytest.importorskip("torchlibrosa")
    pytest.importorskip("librosa")
    if "panns_inference" not in sys.modules:
        if importlib.util.find_spec("panns_inference") is None:
            pytest.skip("panns_inference not installed")
        home = tmp_path_factory.mktemp("home")
        (home / "panns_data").mkdir()
        (home / "panns_data" / "class_labels_indices.csv").write_text("index,mid,display_name\n")
        saved = os.environ.get("HOME")
        os.environ["HOME"] = str(home)
        try:
            import panns_inference.models  # noqa: F401
        finally:
            if saved is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = saved
    from panns_inference.models import Cnn14 as OfficialCnn14

    return OfficialCnn14


@pytest.fixture(scope="module")
def randomised_official(official_cnn14) -> torch.nn.Module:
    """Official Cnn14 (AudioSet settings), random: its own Xavier init for the convolutions
    and linears, plus random BN statistics, BN affine and biases (identity BN would hide a
    wrong normalisation axis). The STFT and mel weights stay the exact DFT and filters."""
    torch.manual_seed(7)
    model = official_cnn14(
        sample_rate=SR, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000,
        classes_num=527,
    ).eval()  # fmt: skip
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_var", "bn0.weight", "bn1.weight", "bn2.weight")):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=g))
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=g))
    return model


def test_state_dict_has_the_official_keys_and_shapes(randomised_official) -> None:
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in Cnn14().state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in randomised_official.state_dict().items()}
    assert ours == theirs


def test_builtin_front_end_weights_equal_torchlibrosa(official_cnn14) -> None:
    # Without a checkpoint ("random"), the STFT and mel weights must still be the exact ones
    # torchlibrosa derives from librosa for the official settings.
    from torchlibrosa.stft import LogmelFilterBank, Spectrogram

    official = {
        **Spectrogram(n_fft=1024, hop_length=320, win_length=1024).state_dict(),
        **LogmelFilterBank(sr=SR, n_fft=1024, n_mels=64, fmin=50, fmax=14000).state_dict(),
    }
    ours = {**OurSpectrogram().state_dict(), **OurLogmel().state_dict()}
    assert ours.keys() == official.keys()
    for name, reference in official.items():
        difference = (ours[name] - reference).abs().max()
        assert difference <= 1e-6 * reference.abs().max(), name


def test_equals_panns_inference_with_identical_random_weights(
    randomised_official, tmp_path
) -> None:
    official = randomised_official
    block6 = {}
    official.conv_block6.register_forward_hook(lambda m, i, out: block6.update(out=out))
    # The release layout: {"model": state_dict, ...}, loaded strictly through the factory.
    checkpoint = tmp_path / "Cnn14_random.pth"
    torch.save({"model": official.state_dict(), "iteration": 0}, checkpoint)
    clip_teacher = create_teacher("panns", checkpoint)
    checkpoint.unlink()  # 327 MB: do not leave it in pytest's kept temp dirs
    assert clip_teacher.weights_sha256 not in ("", "random")
    frame_teacher = PannsTeacher(frame_level=True, net=clip_teacher.net)

    g = torch.Generator().manual_seed(9)
    lengths = torch.tensor([SR, round(1.5 * SR)])
    batch = 0.1 * torch.randn(2, int(lengths.max()), generator=g)
    batch[0, SR:] = 3.0  # past the first clip's end: must be ignored
    clip_out = clip_teacher.embed(batch, lengths)
    frame_out = frame_teacher.embed(batch, lengths)

    clip_diff = frame_diff = 0.0
    for i, n in enumerate(lengths.tolist()):
        with torch.no_grad():
            reference = official(batch[i : i + 1, :n])["embedding"][0]
        reference_frames = block6["out"].mean(dim=3)[0].T  # (T, 2048) before pooling
        assert frame_out.num_frames[i] == reference_frames.shape[0]
        clip_diff = max(clip_diff, (clip_out.embeddings[i, 0] - reference).abs().max().item())
        got_frames = frame_out.embeddings[i, : frame_out.num_frames[i]]
        frame_diff = max(frame_diff, (got_frames - reference_frames).abs().max().item())
    print(f"panns parity: clip max |diff| = {clip_diff:.3g}, frames max |diff| = {frame_diff:.3g}")
    assert clip_diff <= 1e-5 and frame_diff <= 1e-5
    assert reference.abs().max() > 1e-3  # the comparison is not between zeros


@pytest.fixture(scope="module")
def random_teachers():
    """Both teachers on one random net whose CNN runs once per distinct input: the two shape
    tests feed the same 40 s of audio, and Cnn14 on it is the slowest part of the suite."""
    clip_teacher = create_teacher("panns", "random")
    frame_teacher = PannsTeacher(frame_level=True, net=clip_teacher.net)
    compute, seen = clip_teacher.net.frame_features, []

    def memoised(clips: torch.Tensor) -> torch.Tensor:
        for previous, features in seen:
            if previous.shape == clips.shape and torch.equal(previous, clips):
                return features
        seen.append((clips.clone(), compute(clips)))
        return seen[-1][1]

    clip_teacher.net.frame_features = memoised
    return clip_teacher, frame_teacher


@pytest.fixture(scope="module")
def long_batch():
    lengths = torch.tensor([SR, 10 * SR, round(29.1 * SR), 1000])  # the last is 31 ms
    waves = 0.1 * torch.randn(4, int(lengths.max()), generator=torch.Generator().manual_seed(10))
    return waves, lengths


def test_frame_teacher_shapes_and_times_for_1_10_and_29_1_seconds(
    random_teachers, long_batch
) -> None:
    waves, lengths = long_batch
    out = random_teachers[1].embed(waves, lengths)
    # 1 + L // 320 STFT frames, 32 of them per output frame, partial group dropped.
    expected = [(1 + n // 320) // 32 for n in lengths[:3].tolist()] + [1]
    assert expected == [3, 31, 90, 1]
    assert out.num_frames.tolist() == expected
    assert out.embeddings.shape == (4, 90, 2048)
    starts = 0.32 * np.arange(90)
    np.testing.assert_allclose(out.frame_times.numpy(), np.stack([starts, starts + 0.32], 1))
    assert not out.embeddings[0, 3:].any() and out.embeddings[0, :3].any()


def test_clip_teacher_shapes_and_times_for_1_10_and_29_1_seconds(
    random_teachers, long_batch
) -> None:
    waves, lengths = long_batch
    teacher = random_teachers[0]
    out = teacher.embed(waves, lengths)
    assert teacher.info.clip_level and teacher.embedding_dim == 2048
    assert out.embeddings.shape == (4, 1, 2048)
    assert out.num_frames.tolist() == [1, 1, 1, 1]
    np.testing.assert_allclose(out.frame_times.numpy(), [[0.0, 29.1]], atol=1e-4)
    assert out.embeddings.abs().sum(dim=-1).gt(0).all()


def test_missing_weights_offline_is_one_line_naming_file_url_and_folder(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("EAST_WEIGHTS_DIR", str(tmp_path))
    for name in ("panns", "panns-frames"):
        with pytest.raises(WeightsError) as info:
            create_teacher(name)
        message = str(info.value)
        assert "\n" not in message
        assert CNN14_WEIGHTS.filename in message
        assert CNN14_WEIGHTS.url in message
        assert str(tmp_path) in message


@pytest.mark.parametrize("module", ["panns", "vggish"])
def test_product_code_never_imports_the_official_packages(module: str) -> None:
    # panns_inference's import runs wget; torchvggish pulls resampy: parity tests only.
    path = Path(importlib.import_module(f"east.extract.teachers.{module}").__file__)
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "torch" in imported  # the walk sees the imports
    assert not imported & {"panns_inference", "torchlibrosa", "librosa", "torchvggish", "resampy"}
