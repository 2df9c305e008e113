"""VGGish teacher: framing, weights handling and parity with torchvggish (harritaylor)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from east.errors import WeightsError
from east.extract.teachers import create_teacher
from east.extract.teachers.vggish import (
    INFO,
    VGGISH_PCA,
    VGGISH_WEIGHTS,
    VGGishNet,
    dequantize,
    load_pca_params,
    waveform_to_patches,
)

SR = 16_000


def _reference_num_patches(num_samples: int) -> int:
    # The reference's arithmetic (mel_features.frame twice), for clips of at least one patch.
    stft_frames = 1 + (num_samples - 400) // 160
    return 1 + (stft_frames - 96) // 96


@pytest.fixture(scope="module")
def random_teacher():
    return create_teacher("vggish", "random")


def test_shapes_and_frame_times_for_1_10_and_29_1_seconds(random_teacher) -> None:
    lengths = torch.tensor([SR, 10 * SR, round(29.1 * SR), 800])  # the last is 50 ms
    waves = 0.1 * torch.randn(4, int(lengths.max()), generator=torch.Generator().manual_seed(0))
    out = random_teacher.embed(waves, lengths)

    expected = [_reference_num_patches(int(n)) for n in lengths[:3]] + [1]
    assert expected == [1, 10, 30, 1]
    assert out.num_frames.tolist() == expected
    assert out.embeddings.shape == (4, 30, 128)
    assert out.embeddings.dtype == torch.float32
    starts = 0.96 * np.arange(30)
    np.testing.assert_allclose(out.frame_times.numpy(), np.stack([starts, starts + 0.96], 1))
    # Quantised values: integers in [0, 255], hence lossless in float16 and uint8.
    valid = out.embeddings[0, :1]
    assert torch.equal(valid, valid.round()) and valid.min() >= 0 and valid.max() <= 255
    assert torch.equal(out.embeddings.half().float(), out.embeddings)
    assert not out.embeddings[0, 1:].any()  # padding frames are zero


def test_padding_does_not_leak_into_shorter_clips(random_teacher) -> None:
    g = torch.Generator().manual_seed(1)
    short, long = 0.3 * torch.randn(SR + 700, generator=g), 0.3 * torch.randn(2 * SR, generator=g)
    batch = torch.zeros(2, 2 * SR)
    batch[0, : short.numel()] = short
    batch[0, short.numel() :] = 5.0  # garbage past the clip's length must be ignored
    batch[1] = long
    together = random_teacher.embed(batch, torch.tensor([short.numel(), long.numel()]))
    alone = random_teacher.embed(short[None], torch.tensor([short.numel()]))
    assert torch.equal(together.embeddings[0, :1], alone.embeddings[0])


def test_dequantize_is_the_reference_rescaling() -> None:
    q = torch.tensor([0.0, 128.0, 255.0])
    assert torch.allclose(dequantize(q), torch.tensor([-0.5, 0.0, 127 / 256]))


def test_frontend_is_not_touched_by_autocast(random_teacher) -> None:
    wave = 0.1 * torch.randn(1, SR, generator=torch.Generator().manual_seed(2))
    length = torch.tensor([SR])
    plain, _, _ = waveform_to_patches(random_teacher.frontend, wave, length)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, _, _ = waveform_to_patches(random_teacher.frontend, wave, length)
        out = random_teacher.embed(wave, length)
    assert torch.equal(plain, autocast)
    assert out.embeddings.dtype == torch.float32 and out.num_frames.tolist() == [1]


# --------------------------------------------------------------------------- weights


def _save_pca(path, matrix: np.ndarray, means: np.ndarray, as_numpy: bool) -> None:
    params = {"pca_eigen_vectors": matrix, "pca_means": means}
    if not as_numpy:
        params = {k: torch.from_numpy(v) for k, v in params.items()}
    # Legacy (pre-zip) format with pickle protocol 2, as torch wrote it in 2019.
    torch.save(params, path, _use_new_zipfile_serialization=False, pickle_protocol=2)


@pytest.mark.parametrize("layout", ["numpy", "numpy1", "tensor"])
def test_pca_params_load_from_numpy_or_tensor_files(tmp_path, layout: str) -> None:
    rng = np.random.default_rng(3)
    matrix, means = rng.standard_normal((128, 128)), rng.standard_normal(128)
    path = tmp_path / "pca.pth"
    _save_pca(path, matrix, means, as_numpy=layout != "tensor")
    if layout == "numpy1":
        # As numpy 1 (2019) pickled it: the reconstructor under its old module name. Protocol 2
        # names globals with newline-terminated strings, so the rename keeps the file valid.
        data = path.read_bytes()
        assert b"numpy._core.multiarray" in data
        path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    got_matrix, got_means = load_pca_params(path)
    np.testing.assert_array_equal(got_matrix.numpy(), matrix.astype(np.float32))
    np.testing.assert_array_equal(got_means.numpy(), means.astype(np.float32))


def test_pca_params_load_under_the_torch_floor_rules(tmp_path, monkeypatch) -> None:
    # torch < 2.5 did not allow `_codecs.encode` by default; protocol 2 needs it for numpy bytes
    import torch._weights_only_unpickler as unpickler

    allowed = unpickler._get_allowed_globals
    monkeypatch.setattr(
        unpickler,
        "_get_allowed_globals",
        lambda: {k: v for k, v in allowed().items() if k != "_codecs.encode"},
    )
    path = tmp_path / "pca.pth"
    rng = np.random.default_rng(4)
    matrix, means = rng.standard_normal((128, 128)), rng.standard_normal(128)
    _save_pca(path, matrix, means, as_numpy=True)
    assert b"_codecs" in path.read_bytes()
    from east.extract.teachers.vggish import _numpy_safe_globals

    without = [g for g in _numpy_safe_globals() if not (isinstance(g, tuple) and "_codecs" in g[1])]
    with (
        pytest.raises(Exception, match=r"_codecs\.encode"),
        torch.serialization.safe_globals(without),
    ):
        torch.load(path, weights_only=True)  # what the list without it gives on torch 2.4
    got_matrix, _ = load_pca_params(path)
    np.testing.assert_array_equal(got_matrix.numpy(), matrix.astype(np.float32))


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pca_loading_refuses_arbitrary_pickles(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"pca_eigen_vectors": _Exploit(), "pca_means": np.zeros(128)}, path)
    with pytest.raises(WeightsError, match="not a VGGish PCA parameter file"):
        load_pca_params(path)


def test_missing_weights_offline_is_one_line_naming_file_url_and_folder(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("EAST_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError) as info:
        create_teacher("vggish")
    message = str(info.value)
    assert "\n" not in message
    assert VGGISH_WEIGHTS.filename in message
    assert VGGISH_WEIGHTS.url in message
    assert str(tmp_path) in message


def test_pins_are_the_torch_hub_prefixes() -> None:
    # torch.hub names files <name>-<first 8 hex digits of the sha256>.<ext>.
    for weightfile in INFO.weights:
        prefix = weightfile.filename.rsplit("-", 1)[1].split(".")[0]
        assert weightfile.sha256.startswith(prefix)
    assert VGGISH_WEIGHTS.url.endswith("/v0.1/" + VGGISH_WEIGHTS.filename)
    assert VGGISH_PCA.url.endswith("/v0.1/" + VGGISH_PCA.filename)


# --------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def official():
    """torchvggish with random weights (no download: only the network and the front-end)."""
    pytest.importorskip("resampy")
    pytest.importorskip("torchvggish")
    from torchvggish import vggish_input
    from torchvggish.torchvggish import Postprocessor, _vgg

    torch.manual_seed(4)
    model = _vgg(postprocess=False).eval()
    return vggish_input, model, Postprocessor


def test_state_dict_has_the_official_keys_and_shapes(official) -> None:
    _, model, _ = official
    ours = {k: tuple(v.shape) for k, v in VGGishNet().state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == theirs


def test_equals_torchvggish_with_identical_random_weights(official, tmp_path) -> None:
    vggish_input, model, Postprocessor = official
    rng = np.random.default_rng(6)
    clips = [0.2 * rng.standard_normal(n).astype(np.float32) for n in (round(1.5 * SR), 3 * SR)]
    examples = [vggish_input.waveform_to_examples(c.astype(np.float64), SR).detach() for c in clips]
    with torch.no_grad():
        raw_ref = [model(e) for e in examples]
    # A random PCA fitted to these embeddings, so that most outputs fall inside the
    # quantiser's [-2, 2] range instead of being clipped.
    stacked = torch.cat(raw_ref).double()
    matrix = rng.standard_normal((128, 128)) / np.sqrt(128) / stacked.std().item()
    means = stacked.mean(0).numpy()
    # The official post-processor; its constructor (which downloads the PCA file) is bypassed.
    postprocessor = Postprocessor.__new__(Postprocessor)
    postprocessor._pca_matrix = torch.from_numpy(matrix).float()
    postprocessor._pca_means = torch.from_numpy(means.reshape(-1, 1)).float()
    # Our loader reads the release layout: a plain state dict and numpy PCA parameters.
    torch.save(model.state_dict(), tmp_path / VGGISH_WEIGHTS.filename)
    _save_pca(tmp_path / VGGISH_PCA.filename, matrix, means, as_numpy=True)
    teacher = create_teacher("vggish", tmp_path)
    assert teacher.weights_sha256.count("+") == 1 and teacher.weights_sha256 != "random"
    # --weights may also name the body file: the PCA file is then found next to it.
    by_file = create_teacher("vggish", tmp_path / VGGISH_WEIGHTS.filename)
    assert by_file.weights_sha256 == teacher.weights_sha256
    assert torch.equal(by_file.postprocessor.pca_means, teacher.postprocessor.pca_means)
    del by_file

    batch = torch.zeros(2, 3 * SR)
    for i, clip in enumerate(clips):
        batch[i, : clip.size] = torch.from_numpy(clip)
    lengths = torch.tensor([c.size for c in clips])
    out = teacher.embed(batch, lengths)
    patches, _, _ = waveform_to_patches(teacher.frontend, batch, lengths)

    max_raw_diff, unclipped, offset = 0.0, 0, 0
    for i, (ref_patches, ref_raw) in enumerate(zip(examples, raw_ref, strict=True)):
        count = ref_patches.shape[0]
        assert out.num_frames[i] == count
        mine = patches[offset : offset + count]
        offset += count
        assert torch.equal(mine, ref_patches)  # the float64 front-end gives identical patches
        max_raw_diff = max(
            max_raw_diff, (teacher.raw_embeddings(mine) - ref_raw).abs().max().item()
        )
        quantised_ref = postprocessor.postprocess(ref_raw).reshape(-1, 128)
        assert torch.equal(out.embeddings[i, :count], quantised_ref)
        unclipped += int(((quantised_ref > 0) & (quantised_ref < 255)).sum())
    print(f"vggish parity: max |raw difference| = {max_raw_diff:.3g}")
    assert max_raw_diff <= 1e-5
    assert unclipped > 0.5 * int(out.num_frames.sum()) * 128


def test_cli_extract_without_weights_exits_2_with_the_one_line_error(tmp_path) -> None:
    from east.testing.layouts import make_esc50

    root = make_esc50(tmp_path / "esc50", clips_per_class=1, num_classes=1, folds=(1,))
    weights = tmp_path / "weights"
    weights.mkdir()
    script = Path(sys.executable).parent / "east"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "east"]
    args = ["extract", "--teacher", "vggish", "--dataset", "esc50", "--root", str(root)]
    env = {**os.environ, "EAST_WEIGHTS_DIR": str(weights), "EAST_CACHE_DIR": str(tmp_path / "c")}
    result = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert result.returncode == 2, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert VGGISH_WEIGHTS.filename in lines[0] and VGGISH_WEIGHTS.url in lines[0]
    assert str(weights) in lines[0]
