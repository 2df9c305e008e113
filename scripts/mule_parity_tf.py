"""TensorFlow half of the MULE parity check: runs in the isolated ``.venv-mule`` only.

Builds the upstream ``sxmp-mule`` SF-NFNet-F0 (``mule.models.sfnfnetf0.SfNfNetF0``) with random
weights — every variable, SkipInit gains included, is drawn away from its initial value so no
branch is trivially zero — saves it as ``model.keras`` (the format of the official release),
then runs upstream's own pipeline (``MelSpectrogram`` → ``EmbeddingFeature`` with the
``SliceExtractor``, configured as ``supporting_data/configs/mule_embedding_timeline.yml``)
on the given 16 kHz waveforms, loading the model back through upstream's ``load_model``.

Usage (``scripts/mule_parity.py`` calls it): ``python mule_parity_tf.py WAVES.npz OUTDIR``
Writes ``OUTDIR/model.keras`` and ``OUTDIR/tf_outputs.npz``.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
from mule.features.transform_features.embedding_feature import EmbeddingFeature
from mule.features.transform_features.mel_spectrogram import MelSpectrogram
from mule.models.sfnfnetf0 import SfNfNetF0
from scooch import Config

SEED = 20221204

# The values of the official mule_embedding_timeline.yml (sxmp-mule 1.1.2).
MEL_CONFIG = {
    "MelSpectrogram": {
        "n_fft": 2048,
        "hop_length": 160,
        "win_length": 400,
        "window": "hann",
        "n_mels": 96,
        "fmin": 0.0,
        "fmax": 8000.0,
        "norm": 2.0,
        "mag_compression": "log10_nonneg",
        "htk": True,
        "power": 2.0,
        "mag_range": None,
        "extractor": {"BlockExtractor": None},
    }
}


def embedding_config(model_path: str) -> dict:
    return {
        "EmbeddingFeature": {
            "model_location": model_path,
            "extractor": {
                "SliceExtractor": {"look_forward": 150, "look_backward": 150, "hop": 200}
            },
        }
    }


class Waveform:
    """Stands in for upstream's ``AudioWaveform`` (which decodes files with ffmpeg)."""

    sample_rate = 16000

    def __init__(self, samples: np.ndarray) -> None:
        self.data = samples.reshape(1, -1).astype(np.float32)

    def __len__(self) -> int:
        return self.data.shape[1]


def build_random_model(holder: dict | None = None) -> tf.keras.Model:
    # Bypass SCOOCH construction (it insists on optimizer/loss configs for training) and
    # give the parameters directly, as the official embedding model has them: no projector,
    # no fc, 1728-d output.
    net = SfNfNetF0.__new__(SfNfNetF0)
    net._config_instances = {
        "projector_activation": "relu",
        "projector_layers": [],
        "include_fc": False,
        "alpha": 0.2,
        "scaled_activation_type": "gelu",
        "f_value": 0,
    }
    net._input_shapes = [[None, 96, 300, 1]]
    net._output_shapes = [[None, 1728]]
    model = net._make_model()
    if holder is not None:  # the fixture script needs upstream's layer lists
        holder["net"] = net
    rng = np.random.default_rng(SEED)
    for var in model.weights:
        shape = tuple(var.shape)
        name = var.name
        if len(shape) == 0:  # SkipInit gain (0 at init): make every residual branch count
            value = rng.uniform(0.3, 1.0)
        elif len(shape) == 1 and "Variable" in name:  # weight-standardisation gains
            value = rng.uniform(0.6, 1.4, shape)
        elif len(shape) == 1:  # biases (0 at init)
            value = rng.normal(0.0, 0.1, shape)
        else:  # kernels: fresh draws, not the initialiser's
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        var.assign(np.asarray(value, dtype=np.float32))
    return model


def main(waves_path: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    model = build_random_model()
    model_path = os.path.join(out_dir, "model.keras")
    model.save(model_path)
    waves = np.load(waves_path)
    mel_feature = MelSpectrogram(Config(MEL_CONFIG))
    embed_feature = EmbeddingFeature(Config(embedding_config(model_path)))  # upstream load
    results: dict[str, np.ndarray] = {"param_count": np.array(model.count_params())}
    for name in waves.files:
        mel_feature.clear()
        embed_feature.clear()
        mel_feature.from_feature(Waveform(waves[name]))
        embed_feature.from_feature(mel_feature)
        mel = np.array(mel_feature.data)
        slices = embed_feature._extractor.extract_range(mel_feature, 0, len(mel_feature))
        results[f"mel__{name}"] = mel
        results[f"slices__{name}"] = slices[..., 0]
        results[f"embedding__{name}"] = np.array(embed_feature.data).T  # (T, 1728)
        print(f"{name}: {mel.shape[1]} mel frames, {slices.shape[0]} slices", flush=True)
    np.savez(os.path.join(out_dir, "tf_outputs.npz"), **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
