"""MULE teacher: architecture, front-end, slicing and the Keras converter — no TensorFlow.

TensorFlow-made references live in ``tests/data`` (written by ``scripts/mule_make_fixture.py``
in the isolated ``.venv-mule``); the end-to-end comparison with upstream is ``make mule-parity``.
"""

from __future__ import annotations

import copy
import io
import json
import re
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from east.errors import WeightsError
from east.extract.teachers import create_teacher, teacher_info
from east.extract.teachers.mule import (
    EMBEDDING_DIM,
    STAGE_DEPTHS,
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
    creation_order,
    find_source,
    name_map,
    read_keras_archive,
    skip_gain_map,
    variable_map,
)

DATA = Path(__file__).parent / "data"
WS_CLS = "WeightStandardization"


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


class _UpstreamGraph:
    """Upstream's SF-NFNet-F0 layer graph with Keras' auto-names, rebuilt without TensorFlow.

    Follows ``SfNfNetF0._make_layers`` (Keras names a layer ``<snake class>_<k>`` when it is
    created) and ``_apply_layers`` (``tf.*`` ops are named when called), writing each call as
    tf.keras 2.13 ``inbound_nodes``: ``[[[name, 0, 0, kwargs], ...]]``. The layout fixture has
    names only; ``test_upstream_graph_matches_layout`` checks this rebuild names every layer of
    it alike.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.classes = {"input_1": "InputLayer"}
        self.inbound: dict[str, list] = {"input_1": []}
        self.learnable: dict[str, bool] = {}
        self.gain_block: dict[str, str] = {}  # learnable ScalarMultiply name -> torch block
        stems = [self._stem(), self._stem()]
        stages = {path: [self._stage(s) for s in range(4)] for path in ("slow", "fast")}
        fusions = [[self._new(c) for c in (WS_CLS, WS_CLS, "Concatenate")] for _ in range(4)]
        head = [
            self._new(c) for c in ("GlobalAveragePooling2D",) * 2 + ("Concatenate", "Activation")
        ]
        self._apply(stems, stages, fusions, head)

    def _new(self, cls: str, base: str | None = None) -> str:
        base = base or re.sub(r"(?<!^)(?=[A-Z])", "_", cls).lower().replace("2_d", "2d")
        n = self.counts[base]
        self.counts[base] += 1
        name = base if n == 0 else f"{base}_{n}"
        self.classes[name] = cls
        return name

    def _call(self, layer: str, *inputs: str, **kwargs: Any) -> str:
        self.inbound[layer] = [[[x, 0, 0, kwargs] for x in inputs]]
        return layer

    def _op(self, op: str, x: str, **kwargs: Any) -> str:
        return self._call(self._new("TFOpLambda", op), x, **kwargs)

    def _conv(self, activation: bool) -> list[str]:
        return [self._new("WeightStandardization")] + (
            [self._new("Activation")] if activation else []
        )

    def _stem(self) -> list[str]:
        return [name for i in range(4) for name in self._conv(i < 3)]

    def _stage(self, stage: int) -> list[dict[str, Any]]:
        return [
            self._block(first=b == 0, pool=b == 0 and stage > 0) for b in range(STAGE_DEPTHS[stage])
        ]

    def _block(self, first: bool, pool: bool) -> dict[str, Any]:
        block: dict[str, Any] = {"first": first, "pre": [self._new("Activation")]}
        block["pre"].append(self._scalar(learnable=False))  # beta
        block["convs"] = [name for i in range(4) for name in self._conv(i < 3)]
        block["se"] = [self._new("GlobalAveragePooling2D"), self._new("Dense"), self._new("Dense")]
        block["gains"] = [
            self._scalar(learnable=True),
            self._scalar(learnable=False),
        ]  # skip, alpha
        block["skip"] = [self._new("AveragePooling2D")] if pool else []
        block["skip"] += [self._new("WeightStandardization")] if first else []
        block["out"] = self._new("StochDepth")
        return block

    def _scalar(self, learnable: bool) -> str:
        name = self._new("ScalarMultiply")
        self.learnable[name] = learnable
        return name

    def _seq(self, layers: list[str], x: str) -> str:
        for layer in layers:
            x = self._call(layer, x)
        return x

    def _apply_block(self, block: dict[str, Any], x: str, prefix: str) -> str:
        if block["first"]:  # transition block: activation and beta before the split
            x = res = self._seq(block["pre"], x)
        else:
            res = self._seq(block["pre"], x)
        conv = self._seq(block["convs"], res)
        gate = self._op("tf.math.multiply", self._seq(block["se"], conv), y=2.0, name=None)
        gate = self._op("tf.expand_dims", self._op("tf.expand_dims", gate, axis=1), axis=1)
        res = self._op("tf.math.multiply", gate, y=[conv, 0, 0], name=None)
        self.gain_block[block["gains"][0]] = f"{prefix}.skip_gain"
        res = self._seq(block["gains"], res)
        return self._call(block["out"], self._seq(block["skip"], x), res)

    def _apply(self, stems: list, stages: dict, fusions: list, head: list[str]) -> None:
        slow, fast = (self._seq(stem, "input_1") for stem in stems)
        for s, (temporal, pointwise, concat) in enumerate(fusions):
            slow = self._call(concat, slow, self._seq([temporal, pointwise], fast))
            for b, block in enumerate(stages["slow"][s]):
                slow = self._apply_block(block, slow, f"slow_stages.{s}.{b}")
            for b, block in enumerate(stages["fast"][s]):
                fast = self._apply_block(block, fast, f"fast_stages.{s}.{b}")
        pooled = [self._call(head[0], slow), self._call(head[1], fast)]
        self._call(head[3], self._call(head[2], *pooled))


@pytest.fixture(scope="module")
def graph() -> _UpstreamGraph:
    return _UpstreamGraph()


def _synthetic_archive(layout: dict, graph: _UpstreamGraph | None = None) -> KerasArchive:
    # Each variable is filled with its own index (cheap, and shows where every value went);
    # the first fast-stem kernel is random so that its transposition is checked too.
    inbound = graph.inbound if graph is not None else {}
    layers = [
        {
            "class_name": cls,
            "name": name,
            "config": {"learnable": learnable},
            "inbound_nodes": copy.deepcopy(inbound.get(name, [])),
        }
        for cls, name, learnable in layout["layers"]
    ]
    variables = {
        path: np.full(shape, i, dtype=np.float32)
        for i, (path, shape) in enumerate(layout["variables"].items())
    }
    return KerasArchive(layers=layers, variables=variables)


def test_converter_maps_every_keras_variable(
    layout: dict, graph: _UpstreamGraph, teacher: MuleTeacher
) -> None:
    archive = _synthetic_archive(layout, graph)
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


def test_converter_rejects_other_models(layout: dict, graph: _UpstreamGraph) -> None:
    archive = _synthetic_archive(layout, graph)
    archive.layers = [layer for layer in archive.layers if layer["name"] != "dense_7"]
    with pytest.raises(WeightsError, match="Dense"):
        convert_archive(archive)


def test_upstream_graph_matches_layout(layout: dict, graph: _UpstreamGraph) -> None:
    # The rebuilt graph names every layer of the file TensorFlow saved, with its class and
    # learnable flag: so its wiring is upstream's, under the file's own names.
    assert {name: cls for cls, name, _ in layout["layers"]} == graph.classes
    learnable = {name for cls, name, flag in layout["layers"] if cls == "ScalarMultiply" and flag}
    assert learnable == {name for name, flag in graph.learnable.items() if flag}
    assert set(graph.inbound) == set(graph.classes)
    assert len(graph.gain_block) == 24


def _skip_gains(state: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in state.items() if k.endswith("skip_gain")}


def _ref_rename(obj: Any, new: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        return {k: _ref_rename(v, new) for k, v in obj.items()}
    if isinstance(obj, list):
        if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
            return [new.get(obj[0], obj[0]), *(_ref_rename(x, new) for x in obj[1:])]
        return [_ref_rename(x, new) for x in obj]
    return obj


def _renumbered(archive: KerasArchive) -> KerasArchive:
    """The archive as tf.keras would save it again after loading it.

    ``ScalarMultiply.get_config()`` has no name, so loading names those layers afresh in
    layer-list order; the graph, the other names and the h5 groups (named by a counter over
    the layer list) stay as they were.
    """
    scalars = [lyr["name"] for lyr in archive.layers if lyr["class_name"] == "ScalarMultiply"]
    new = {old: "scalar_multiply" + (f"_{i}" if i else "") for i, old in enumerate(scalars)}
    layers = [
        {**_ref_rename(lyr, new), "name": new.get(lyr["name"], lyr["name"])}
        for lyr in archive.layers
    ]
    return KerasArchive(layers=layers, variables=dict(archive.variables))


def test_skip_gains_follow_the_graph_not_the_names(layout: dict, graph: _UpstreamGraph) -> None:
    original = _synthetic_archive(layout, graph)
    # On the file as TensorFlow first saved it, names and graph agree.
    gains = skip_gain_map(original, name_map(original))
    assert gains == graph.gain_block
    assert gains["scalar_multiply_1"] == "slow_stages.0.0.skip_gain"
    assert gains["scalar_multiply_37"] == "fast_stages.0.0.skip_gain"
    expected = _skip_gains(convert_archive(original))
    assert len(set(expected.values())) == 24  # every block's gain has its own value

    renumbered = _renumbered(original)
    old_names = {lyr["name"] for lyr in original.layers}
    moved = [lyr["name"] for lyr in renumbered.layers if lyr["name"] not in old_names]
    assert not moved  # the same names, on other layers
    learnable = [
        lyr["name"]
        for lyr in renumbered.layers
        if lyr["class_name"] == "ScalarMultiply" and lyr["config"]["learnable"]
    ]
    assert set(learnable) != set(gains)  # the learnable gains now carry other numbers
    # What the name order would give (the converter's old rule): 23 of 24 gains misplaced.
    by_name = sorted(learnable, key=lambda n: int(n.rpartition("_")[2] or 0))
    old_rule = dict(zip(by_name, creation_order()["ScalarMultiply"], strict=True))
    truth = {
        new: graph.gain_block[old]
        for old, new in zip(
            [lyr["name"] for lyr in original.layers],
            [lyr["name"] for lyr in renumbered.layers],
            strict=True,
        )
        if old in graph.gain_block
    }
    assert sum(old_rule[n] != truth[n] for n in learnable) == 23
    # The converter follows the graph: every block gets its own gain back.
    assert skip_gain_map(renumbered, name_map(renumbered)) == truth
    state = convert_archive(renumbered)
    assert _skip_gains(state) == expected
    reference = convert_archive(original)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def _gain_layer(archive: KerasArchive, block: str, graph: _UpstreamGraph) -> dict:
    name = next(n for n, b in graph.gain_block.items() if b == block)
    return next(lyr for lyr in archive.layers if lyr["name"] == name)


@pytest.mark.parametrize(
    ("break_graph", "message"),
    [
        ("no_graph", "no inputs"),
        ("two_gains_one_block", "both follow"),
        ("after_wrong_layer", "does not follow one block"),
        ("undefined_input", "does not define"),
        ("duplicate_name", "two layers alike"),
    ],
)
def test_converter_refuses_a_graph_that_does_not_place_the_gains(
    layout: dict, graph: _UpstreamGraph, break_graph: str, message: str
) -> None:
    archive = _synthetic_archive(layout, graph)
    gain = _gain_layer(archive, "slow_stages.2.3.skip_gain", graph)
    other = _gain_layer(archive, "slow_stages.2.4.skip_gain", graph)
    if break_graph == "no_graph":
        for layer in archive.layers:
            layer.pop("inbound_nodes")
    elif break_graph == "two_gains_one_block":
        gain["inbound_nodes"] = copy.deepcopy(other["inbound_nodes"])
    elif break_graph == "after_wrong_layer":  # after the block's alpha, not its squeeze-excite
        alpha = next(
            lyr for lyr in archive.layers if lyr["inbound_nodes"] == [[[gain["name"], 0, 0, {}]]]
        )
        gain["inbound_nodes"] = [[[alpha["name"], 0, 0, {}]]]
    elif break_graph == "undefined_input":
        gain["inbound_nodes"] = [[["tf.math.multiply_999", 0, 0, {}]]]
    else:
        other["name"] = gain["name"]
    with pytest.raises(WeightsError, match=message) as info:
        convert_archive(archive)
    assert "\n" not in str(info.value)


def test_graph_references_in_keras_2_and_3_forms() -> None:
    from east.extract.teachers.mule_convert import _references

    keras2 = [[["tf.expand_dims_1", 0, 0, {"y": ["weight_standardization_11", 0, 0]}]]]
    assert _references(keras2) == ["tf.expand_dims_1", "weight_standardization_11"]
    assert _references([[["dense_1", 0, 0, {"y": 2.0, "name": None}]]]) == ["dense_1"]
    keras3 = [
        {
            "args": [{"class_name": "__keras_tensor__", "config": {"keras_history": ["a", 0, 0]}}],
            "kwargs": {"y": {"config": {"shape": [None, 2], "keras_history": ["b", 0, 0]}}},
        }
    ]
    assert _references(keras3) == ["a", "b"]
    assert _references([[["_CONSTANT_VALUE", -1, 0.5, {}]]]) == []


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
