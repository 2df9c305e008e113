"""MULE teacher: architecture, front-end, slicing and the Keras converter — no TensorFlow.

TensorFlow-made references live in ``tests/data`` (written by ``scripts/mule_make_fixture.py``
in the isolated ``.venv-mule``); the end-to-end comparison with upstream is ``make mule-parity``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from east.errors import WeightsError
from east.extract.teachers import create_teacher, teacher_info
from east.extract.teachers.mule import (
    EMBEDDING_DIM,
    MuleFrontEnd,
    MuleTeacher,
    NFBlock,
    WSConv2d,
    num_slices,
    slice_starts,
    standardise_slices,
)
from east.extract.teachers.mule_convert import (
    KerasArchive,
    convert_archive,
    find_source,
    name_map,
    read_keras_archive,
    variable_map,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def teacher() -> MuleTeacher:
    torch.manual_seed(0)
    return MuleTeacher().eval()


@pytest.fixture(scope="module")
def layout() -> dict:
    return json.loads((DATA / "mule_keras_layout.json").read_text())


@pytest.fixture(scope="module")
def tf_layers() -> dict[str, np.ndarray]:
    with np.load(DATA / "mule_tf_layers.npz") as f:
        return dict(f)


# --------------------------------------------------------------------------- architecture


def _spec_parameter_count() -> int:
    """SF-NFNet-F0 parameters from the upstream spec, counted independently of the module."""

    def conv(c_in: int, c_out: int, kh: int, kw: int, groups: int = 1) -> int:
        return c_out * (c_in // groups) * kh * kw + 2 * c_out  # kernel + bias + WS gain

    def block(c_in: int, c_out: int, group_width: int, transition: bool) -> int:
        mid = c_out // 2
        g = mid // group_width
        n = conv(c_in, mid, 1, 1) + conv(mid, mid, 1, 3, g) + conv(mid, mid, 3, 1, g)
        n += conv(mid, c_out, 1, 1)
        n += (c_out * mid + mid) + (mid * c_out + c_out)  # squeeze-excite
        n += 1  # SkipInit gain
        return n + (conv(c_in, c_out, 1, 1) if transition else 0)

    total = 0
    for stem in ([1, 16, 32, 64, 128], [1, 2, 4, 8, 16]):
        kernels = [(3, 1)] * 3 + [(3, 3)] if stem[1] == 16 else [(3, 3)] * 4
        total += sum(conv(a, b, *k) for a, b, k in zip(stem[:-1], stem[1:], kernels, strict=True))
    slow_in, fast_in = 128, 16
    for depth, slow, fast, temporal, fused in zip(
        (1, 2, 6, 3),
        (256, 512, 1536, 1536),
        (32, 64, 192, 192),
        (32, 32, 64, 192),
        (128, 256, 512, 3072),
        strict=True,
    ):
        total += conv(fast_in, temporal, 1, 7) + conv(temporal, fused, 1, 1)
        slow_in += fused
        for i in range(depth):
            total += block(slow_in if i == 0 else slow, slow, 128, i == 0)
            total += block(fast_in if i == 0 else fast, fast, 16, i == 0)
        slow_in, fast_in = slow, fast
    return total


def test_parameter_count_is_sf_nfnet_f0(teacher: MuleTeacher) -> None:
    n = sum(p.numel() for p in teacher.net.parameters())
    assert n == _spec_parameter_count()
    assert abs(n / 1e6 - 62.3) < 0.1  # "62M parameters" upstream, 62.3 M in the paper's table


def test_registry_entry() -> None:
    info = teacher_info("mule")
    assert (info.sample_rate, info.embedding_dim, info.window_s, info.hop_s) == (
        16000,
        1728,
        3.0,
        2.0,
    )
    assert "CC BY-NC" in info.licence
    assert info.weights[0].note and "east teachers convert mule" in info.weights[0].note


def test_ws_conv_matches_tensorflow(tf_layers: dict[str, np.ndarray]) -> None:
    kernel = tf_layers["stem.kernel"]
    kh, kw, c_in, c_out = kernel.shape
    conv = WSConv2d(c_in, c_out, (kh, kw), stride=(2, 8))
    _load_ws(conv, tf_layers, "stem")
    x = torch.from_numpy(tf_layers["stem.x"]).permute(0, 3, 1, 2)
    y = conv(x).permute(0, 2, 3, 1).detach().numpy()
    assert y.shape == tf_layers["stem.y"].shape  # ceil(11/2) × ceil(37/8): TF "same" padding
    np.testing.assert_allclose(y, tf_layers["stem.y"], atol=1e-5, rtol=1e-5)


def test_nf_block_matches_tensorflow(tf_layers: dict[str, np.ndarray]) -> None:
    # Fast stage 2, block 1: beta 1/sqrt(1.04), frequency stride 2, two groups of 16.
    block = NFBlock(32, 64, 16, freq_stride=2, beta=1 / 1.04**0.5, transition=True)
    for name in ("conv1", "conv2", "conv3", "conv4", "shortcut"):
        _load_ws(getattr(block, name), tf_layers, f"block.{name}")
    with torch.no_grad():
        for i, fc in enumerate((block.se.fc1, block.se.fc2), start=1):
            fc.weight.copy_(torch.from_numpy(tf_layers[f"block.fc{i}.kernel"].T))
            fc.bias.copy_(torch.from_numpy(tf_layers[f"block.fc{i}.bias"]))
        block.skip_gain.copy_(torch.from_numpy(tf_layers["block.skip_gain"]))
    assert block.skip_gain.item() != 0.0  # otherwise the residual branch goes untested
    x = torch.from_numpy(tf_layers["block.x"]).permute(0, 3, 1, 2)
    y = block(x).permute(0, 2, 3, 1).detach().numpy()
    assert y.shape == tf_layers["block.y"].shape  # 7 frequency rows → 4 (odd: padded pool)
    np.testing.assert_allclose(y, tf_layers["block.y"], atol=1e-5, rtol=1e-4)


def _load_ws(conv: WSConv2d, arrays: dict[str, np.ndarray], prefix: str) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(arrays[f"{prefix}.kernel"]).permute(3, 2, 0, 1))
        conv.gain.copy_(torch.from_numpy(arrays[f"{prefix}.gain"]))
        conv.bias.copy_(torch.from_numpy(arrays[f"{prefix}.bias"]))


# --------------------------------------------------------------------------- front-end


def test_frontend_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(1)
    wave = (0.3 * rng.standard_normal(16000)).astype(np.float32)
    mel = librosa.feature.melspectrogram(
        y=wave,
        sr=16000,
        n_fft=2048,
        hop_length=160,
        win_length=400,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=2.0,
        n_mels=96,
        fmin=0.0,
        fmax=8000.0,
        norm=2.0,
        htk=True,
    )
    expected = np.log10(10000.0 * mel + 1.0)
    ours = MuleFrontEnd()(torch.from_numpy(wave)).numpy()
    assert ours.shape == expected.shape == (96, 1 + 16000 // 160)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)


def test_slice_placement() -> None:
    # Upstream centres slices on every 2 s strictly inside the clip and clamps the last one:
    # a 6 s clip (601 frames) gives 3 embeddings, as in the official README.
    assert slice_starts(601) == [50, 250, 301]
    assert slice_starts(1001) == [50, 250, 450, 650, 701]
    assert slice_starts(300) == [0]
    assert num_slices(6 * 16000) == 3
    assert num_slices(100) == 1  # short clips are padded to one slice
    with pytest.raises(ValueError):
        slice_starts(299)


def test_standardise_slices() -> None:
    x = torch.randn(3, 96, 300) * 5 + 2
    z = standardise_slices(x)
    torch.testing.assert_close(z.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(1, 2), unbiased=False), torch.ones(3))
    flat = standardise_slices(torch.full((1, 96, 300), 7.0))  # std floored at 0.01
    assert torch.all(flat == 0)


def test_network_forward(teacher: MuleTeacher) -> None:
    x = standardise_slices(torch.randn(1, 96, 300)).unsqueeze(1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one small forward: extra threads only spin on a busy CI box
    try:
        with torch.no_grad():
            y = teacher.net(x)
    finally:
        torch.set_num_threads(threads)
    assert y.shape == (1, EMBEDDING_DIM)
    assert torch.isfinite(y).all()
    assert (y > -0.3).all()  # a scaled GELU output is bounded below (≈ -0.17 · 1.7)


class _SliceProbe(torch.nn.Module):
    """Stands in for the 62 M-parameter net: the first 1728 values of each slice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :EMBEDDING_DIM]


def test_embed_shapes_frame_times_and_padding(teacher: MuleTeacher) -> None:
    # Slicing, padding and batching only: the network itself is checked above and by
    # `make mule-parity`; a cheap stand-in keeps this test fast.
    # (nn.Module attributes do not survive monkeypatch.undo, hence the manual swap.)
    real_net = teacher.net
    teacher.net = _SliceProbe()
    try:
        _check_embed(teacher)
    finally:
        teacher.net = real_net


def _check_embed(teacher: MuleTeacher) -> None:
    rng = np.random.default_rng(2)
    short, long = 16000, 104000  # 1 s (padded to one slice) and 6.5 s (651 frames: 3 slices)
    waves = torch.zeros(2, long)
    waves[0, :short] = torch.from_numpy(rng.standard_normal(short).astype(np.float32))
    waves[1] = torch.from_numpy(rng.standard_normal(long).astype(np.float32))
    out = teacher.embed(waves, torch.tensor([short, long]))
    assert out.embeddings.shape == (2, 3, EMBEDDING_DIM)
    assert out.num_frames.tolist() == [1, 3]
    assert [teacher.num_output_frames(n) for n in (short, long)] == [1, 3]
    expected_times = torch.tensor([[0.5, 3.5], [2.5, 5.5], [4.5, 7.5]], dtype=torch.float64)
    torch.testing.assert_close(out.frame_times, expected_times)
    assert torch.all(out.embeddings[0, 1:] == 0)  # padding frames
    # Slices are the standardised log-mel at the upstream positions (the last one clamped).
    mel = teacher.frontend(waves[1])
    for k, start in enumerate([50, 250, 351]):
        expected = standardise_slices(mel[None, :, start : start + 300])[0]
        torch.testing.assert_close(out.embeddings[1, k], expected.flatten()[:EMBEDDING_DIM])
    # A clip's embeddings do not depend on its batch mates or on the padding after it.
    alone = teacher.embed(waves[:1, :short], torch.tensor([short]))
    torch.testing.assert_close(alone.embeddings[0, 0], out.embeddings[0, 0])
    padded = torch.nn.functional.pad(waves[0, :short], (0, 47840 - short))
    torch.testing.assert_close(
        out.embeddings[0, 0],
        standardise_slices(teacher.frontend(padded)[None])[0].flatten()[:EMBEDDING_DIM],
    )


# --------------------------------------------------------------------------- converter


def _synthetic_archive(layout: dict) -> KerasArchive:
    # Each variable is filled with its own index (cheap, and shows where every value went);
    # the first fast-stem kernel is random so that its transposition is checked too.
    layers = [
        {"class_name": cls, "name": name, "config": {"learnable": learnable}}
        for cls, name, learnable in layout["layers"]
    ]
    variables = {
        path: np.full(shape, i, dtype=np.float32)
        for i, (path, shape) in enumerate(layout["variables"].items())
    }
    return KerasArchive(layers=layers, variables=variables)


def test_converter_maps_every_keras_variable(layout: dict, teacher: MuleTeacher) -> None:
    archive = _synthetic_archive(layout)
    names = name_map(archive)
    # Keras names layers in creation order; upstream creates stems, stages, then fusions.
    assert names["weight_standardization"] == "slow_stem.0"
    assert names["weight_standardization_4"] == "fast_stem.0"
    assert names["weight_standardization_8"] == "slow_stages.0.0.conv1"
    assert names["weight_standardization_119"] == "fusions.3.pointwise"
    assert names["dense"] == "slow_stages.0.0.se.fc1"
    mapping = variable_map(archive)
    fast_stem_kernel = next(g for g, (key, _) in mapping.items() if key == "fast_stem.0.weight")
    rng = np.random.default_rng(0)
    archive.variables[fast_stem_kernel] = rng.standard_normal(
        archive.variables[fast_stem_kernel].shape
    ).astype(np.float32)
    state = convert_archive(archive)
    expected = teacher.net.state_dict()
    assert sorted(state) == sorted(expected)  # every torch key from exactly one variable
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: tuple(v.shape) for k, v in expected.items()
    }
    index = {path: i for i, path in enumerate(layout["variables"])}
    for path, (key, _) in mapping.items():
        if path != fast_stem_kernel:
            assert torch.all(state[key] == index[path]), key
    torch.testing.assert_close(
        state["fast_stem.0.weight"],
        torch.from_numpy(archive.variables[fast_stem_kernel]).permute(3, 2, 0, 1),
    )


def test_converter_rejects_other_models(layout: dict) -> None:
    archive = _synthetic_archive(layout)
    archive.layers = [layer for layer in archive.layers if layer["name"] != "dense_7"]
    with pytest.raises(WeightsError, match="Dense"):
        convert_archive(archive)


def test_read_keras_archive_and_lfs_pointer(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5["_layer_checkpoint_dependencies/dense/vars/0"] = np.ones((3, 2), np.float32)
        h5["_layer_checkpoint_dependencies/scalar_multiply/vars/0"] = np.float32(0.5)
    config = {"class_name": "Functional", "config": {"layers": [{"class_name": "Dense"}]}}
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "2.13.1"}))
        archive.writestr("model.weights.h5", buffer.getvalue())
    read = read_keras_archive(path)
    assert read.layers == [{"class_name": "Dense"}]
    assert read.metadata["keras_version"] == "2.13.1"
    assert read.variables["_layer_checkpoint_dependencies/dense/vars/0"].shape == (3, 2)
    assert float(read.variables["_layer_checkpoint_dependencies/scalar_multiply/vars/0"]) == 0.5
    repo = tmp_path / "music-audio-representations"
    pointer = repo / "supporting_data" / "model" / "model.keras"
    pointer.parent.mkdir(parents=True)
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:1da1\n")
    with pytest.raises(WeightsError, match="git lfs pull"):
        find_source(repo)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match=r"no model\.keras"):
        find_source(empty)


# --------------------------------------------------------------------------- factory


def test_factory_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EAST_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="east teachers convert mule"):
        create_teacher("mule", weights=None)
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"slow_stem.0.weight": torch.zeros(1)}, "source_sha256": "x"}, wrong)
    with pytest.raises(WeightsError, match="does not fit"):
        create_teacher("mule", weights=wrong)
    random_teacher = create_teacher("mule", weights="random")
    assert random_teacher.weights_sha256 == "random"
    assert not random_teacher.training
