"""Write the small TensorFlow-made fixtures of ``tests/test_teacher_mule.py`` (run in ``.venv-mule``).

``.venv-mule/bin/python scripts/mule_make_fixture.py tests/data``

* ``mule_keras_layout.json``: the layer list (class, name, learnable) and every variable path
  and shape of a ``model.keras`` that tensorflow 2.13.1 saved from upstream's SF-NFNet-F0 —
  the layout the converter has to map, without the 250 MB of values;
* ``mule_tf_layers.npz``: inputs, weights (TensorFlow layout) and TensorFlow outputs of two
  upstream pieces on odd-sized inputs, so the tests check east's layers against TensorFlow
  without TensorFlow: the first slow-stem conv (3 × 1 kernel, stride 2 × 8, asymmetric "same"
  padding) and the fast path's stage-2 transition block (grouped convs, frequency stride 2
  with average-pooled shortcut, squeeze-excite, SkipInit gain).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py
import numpy as np
import tensorflow as tf
from mule_parity_tf import build_random_model


def layout(model: tf.keras.Model) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            meta = json.loads(archive.read("metadata.json"))
            archive.extract("model.weights.h5", tmp)
        shapes: dict[str, list[int]] = {}
        with h5py.File(os.path.join(tmp, "model.weights.h5"), "r") as h5:
            h5.visititems(
                lambda n, o: (
                    shapes.__setitem__(n, list(o.shape)) if isinstance(o, h5py.Dataset) else None
                )
            )
    layers = [
        [layer["class_name"], layer["name"], layer["config"].get("learnable")]
        for layer in config["config"]["layers"]
    ]
    return {"keras_version": meta.get("keras_version"), "layers": layers, "variables": shapes}


def _ws_arrays(prefix: str, layer: tf.keras.layers.Layer, out: dict) -> None:
    out[f"{prefix}.kernel"] = layer.v.numpy()
    out[f"{prefix}.gain"] = layer.gain.numpy()
    out[f"{prefix}.bias"] = layer.layer.bias.numpy()


def _flatten(layers: list) -> list:
    flat = []
    for item in layers:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _randomise(layers: list, rng: np.random.Generator) -> None:
    # Fresh upstream layers start with zero biases and SkipInit gains: draw every variable.
    for layer in layers:
        for var in layer.weights:
            shape = tuple(var.shape)
            if len(shape) >= 2:
                value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
            elif len(shape) == 0:
                value = rng.uniform(0.3, 1.0)
            else:
                value = (
                    rng.uniform(0.6, 1.4, shape)
                    if "Variable" in var.name
                    else rng.normal(0.0, 0.1, shape)
                )
            var.assign(np.asarray(value, dtype=np.float32))


def layer_fixture(net_holder: dict) -> dict:
    # Fresh layers made by upstream's own factory methods, built on odd-sized inputs (the
    # model's layers are locked to their 96 x 300 input shapes).
    net = net_holder["net"]
    rng = np.random.default_rng(7)
    out: dict[str, np.ndarray] = {}
    # The first slow-stem conv: 3 x 1 kernel, stride 2 x 8.
    stem = net.get_conv(channels=16, kernel=[3, 1], strides=[2, 8], groups=1)[0]
    x = rng.standard_normal((2, 11, 37, 1)).astype(np.float32)
    stem(x)
    _randomise([stem], rng)
    out["stem.x"] = x
    out["stem.y"] = stem(x).numpy()
    _ws_arrays("stem", stem, out)
    # The fast path's stage-2 transition block (32 -> 64 channels, frequency stride 2).
    block = net._make_nfnet_block(
        [[1, 1], [1, 3], [3, 1], [1, 1]], 2, 32, 64, 16, 0.2, 1 / 1.04**0.5, 0.0, True
    )
    x = rng.standard_normal((2, 7, 9, 32)).astype(np.float32)
    net._apply_nfnet_block(block, tf.constant(x))
    _randomise(_flatten(block), rng)
    out["block.x"] = x
    out["block.y"] = net._apply_nfnet_block(block, tf.constant(x)).numpy()
    residual, skip = block[1], block[2]
    convs = [lyr for lyr in residual if type(lyr).__name__ == "WeightStandardization"]
    for i, conv in enumerate(convs, start=1):
        _ws_arrays(f"block.conv{i}", conv, out)
    se = next(lyr for lyr in residual if isinstance(lyr, list))
    dense = [lyr for lyr in se if isinstance(lyr, tf.keras.layers.Dense)]
    for i, layer in enumerate(dense, start=1):
        out[f"block.fc{i}.kernel"] = layer.kernel.numpy()
        out[f"block.fc{i}.bias"] = layer.bias.numpy()
    gains = [lyr for lyr in residual if type(lyr).__name__ == "ScalarMultiply" and lyr._learnable]
    out["block.skip_gain"] = np.asarray(gains[0].gain.numpy())
    shortcut = next(lyr for lyr in skip if type(lyr).__name__ == "WeightStandardization")
    _ws_arrays("block.shortcut", shortcut, out)
    return out


def main(out_dir: str) -> None:
    holder: dict = {}
    model = build_random_model(holder)
    with open(os.path.join(out_dir, "mule_keras_layout.json"), "w") as f:
        json.dump(layout(model), f, separators=(",", ":"))
    np.savez_compressed(os.path.join(out_dir, "mule_tf_layers.npz"), **layer_fixture(holder))


if __name__ == "__main__":
    main(sys.argv[1])
