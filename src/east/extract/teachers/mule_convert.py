"""Convert the official MULE Keras weights into a state dict for :class:`SFNFNetF0`.

No TensorFlow: the official ``supporting_data/model/model.keras`` (sxmp-mule ≥ 1.1.2) is a
zip of ``config.json`` (the Keras layer graph) and ``model.weights.h5`` (the variables), which
are read with :mod:`zipfile`, :mod:`json` and ``h5py``.

How Keras 2.13 lays the variables out (checked on a file saved by tensorflow 2.13.1 from
the upstream model, see ``scripts/mule_parity.py``): one HDF5 group per layer under
``_layer_checkpoint_dependencies/``, named not by the layer's name but by its snake-cased
class plus a counter over the model's layer list (a layer with weights is listed twice, so
the counters skip), e.g. ``weight_standardization_2/vars/0``. Hence:

1. sorting a class's groups by counter gives that class's weighted layers in ``model.layers``
   order, which ``config.json`` lists with their real names;
2. Keras names layers ``weight_standardization``, ``weight_standardization_1``, … in creation
   order, and upstream's ``SfNfNetF0._make_layers`` creates them in a fixed order
   (:func:`creation_order`), which gives the torch module of every Keras layer.

Name map (``k`` = rank in creation order among the layers of that class, ``g`` = h5 group):

==========================  =====================================  ===========================
Keras variable              torch key                              transform
==========================  =====================================  ===========================
WS ``g/vars/0`` kernel      ``<conv>.weight``                      ``(kh,kw,in,out)→(out,in,kh,kw)``
WS ``g/vars/1`` gain        ``<conv>.gain``                        —
WS ``g/layer/vars/0`` bias  ``<conv>.bias``                        —
Dense ``g/vars/0`` kernel   ``<block>.se.fc1|fc2.weight``          transpose
Dense ``g/vars/1`` bias     ``<block>.se.fc1|fc2.bias``            —
ScalarMultiply ``vars/0``   ``<block>.skip_gain``                  — (learnable ones only)
==========================  =====================================  ===========================

WS (``WeightStandardization``) layers in creation order: ``slow_stem.0-3``,
``fast_stem.0-3``, then every slow block ``slow_stages.S.B.conv1-4`` (+ ``.shortcut`` for the
first block of a stage), every fast block likewise, then ``fusions.S.temporal`` and
``fusions.S.pointwise``. Dense layers: ``se.fc1``, ``se.fc2`` of every slow then fast block.

Learnable ScalarMultiply layers (the SkipInit ``skip_gain``) are *not* placed by name:
upstream's ``ScalarMultiply.get_config()`` omits ``name``, so a file that was loaded and saved
again renumbers them in layer-list order, and all 24 gains have shape ``()`` (strict loading
cannot notice a swap). They are placed from the ``config.json`` graph instead
(:func:`skip_gain_map`): upstream's residual path ends
``conv4 → squeeze-excite → ScalarMultiply(0, learnable) → ScalarMultiply(alpha)``, and the
squeeze-excite output is ``tf.math.multiply`` ops joining ``conv4`` (a WS layer) and ``se.fc2``
(a Dense layer) — so walking back from a gain through unweighted layers must reach exactly one
block's ``conv4`` and ``se.fc2``. WS and Dense names are safe (their configs keep ``name``).
A file whose graph does not tie every gain to a distinct block is refused.

The output file records the sha256 of the source file, which the teacher stamps into cache
provenance, so a cache made from converted weights still names the official file.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from east.errors import WeightsError

__all__ = [
    "CONVERTER_VERSION",
    "WS",
    "KerasArchive",
    "convert",
    "convert_archive",
    "find_source",
    "name_map",
    "read_keras_archive",
    "skip_gain_map",
    "variable_map",
]

CONVERTER_VERSION = 2  # 2: skip gains placed from the layer graph, not by name
# Where the model sits in a clone of PandoraMedia/music-audio-representations.
REPO_MODEL_PATH = Path("supporting_data/model/model.keras")
LFS_POINTER_PREFIX = b"version https://git-lfs"

WS = "WeightStandardization"
DENSE = "Dense"
SCALAR = "ScalarMultiply"


@dataclass
class KerasArchive:
    """What the converter needs of a ``.keras`` file."""

    layers: list[dict[str, Any]]  # config.json layers, in model.layers order
    variables: dict[str, np.ndarray]  # h5 dataset path -> array
    metadata: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- reading


def find_source(path: str | Path) -> Path:
    """The ``model.keras`` in ``path`` (a file, a repository clone or its model folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidates = [path / REPO_MODEL_PATH, path / "model" / "model.keras", path / "model.keras"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            if (path / "saved_model.pb").is_file() or any(path.glob("**/saved_model.pb")):
                raise WeightsError(
                    f"{path} holds a TensorFlow SavedModel (MULE releases before 1.1.2); "
                    "use the model.keras of the current official repository instead"
                )
            raise WeightsError(
                f"no model.keras in {path} (expected {REPO_MODEL_PATH} of a clone of "
                "PandoraMedia/music-audio-representations)"
            )
        path = found
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    with path.open("rb") as f:
        head = f.read(len(LFS_POINTER_PREFIX))
    if head == LFS_POINTER_PREFIX:
        raise WeightsError(
            f"{path} is a Git LFS pointer, not the model: install git-lfs and run "
            "`git lfs pull` in the repository clone"
        )
    return path


def read_keras_archive(path: str | Path) -> KerasArchive:
    """Layer list and variables of a Keras v3 ``.keras`` zip (no TensorFlow needed)."""
    import h5py

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights_blob = archive.read("model.weights.h5")
            metadata = (
                json.loads(archive.read("metadata.json"))
                if "metadata.json" in archive.namelist()
                else {}
            )
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:  # (JSON/UTF-8: ValueError)
        raise WeightsError(f"{path} is not a Keras .keras archive ({exc})") from None
    variables: dict[str, np.ndarray] = {}

    def collect(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            variables[name] = np.asarray(obj[()])

    try:
        with h5py.File(io.BytesIO(weights_blob), "r") as h5:
            h5.visititems(collect)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: model.weights.h5 is not an HDF5 file ({exc})") from None
    try:
        layers = config["config"]["layers"]
    except (KeyError, TypeError):
        raise WeightsError(f"{path}: config.json holds no functional model layers") from None
    return KerasArchive(layers=layers, variables=variables, metadata=metadata)


# --------------------------------------------------------------------------- mapping


def creation_order() -> dict[str, list[str]]:
    """Torch module of every weighted upstream layer, per Keras class, in creation order."""
    from east.extract.teachers.mule import STAGE_DEPTHS

    ws = [f"slow_stem.{i}" for i in range(4)] + [f"fast_stem.{i}" for i in range(4)]
    dense: list[str] = []
    scalar: list[str] = []
    for path in ("slow_stages", "fast_stages"):
        for stage, depth in enumerate(STAGE_DEPTHS):
            for block in range(depth):
                prefix = f"{path}.{stage}.{block}"
                ws += [f"{prefix}.conv{i}" for i in range(1, 5)]
                if block == 0:  # transition block: projected shortcut, created after the SE
                    ws.append(f"{prefix}.shortcut")
                dense += [f"{prefix}.se.fc1", f"{prefix}.se.fc2"]
                scalar.append(f"{prefix}.skip_gain")
    for stage in range(len(STAGE_DEPTHS)):
        ws += [f"fusions.{stage}.temporal", f"fusions.{stage}.pointwise"]
    return {WS: ws, DENSE: dense, SCALAR: scalar}


def _snake(class_name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", class_name).lower()


def _counter(name: str, base: str) -> int | None:
    """``base`` → 0, ``base_12`` → 12, anything else → None."""
    match = re.fullmatch(re.escape(base) + r"(?:_(\d+))?", name)
    if match is None:
        return None
    return int(match.group(1) or 0)


def _layer_name(layer: Mapping[str, Any]) -> str:
    # Functional configs name every layer at the top level; ScalarMultiply's own config
    # (upstream ``get_config``) has no name.
    return str(layer.get("name") or layer.get("config", {}).get("name", ""))


def _has_weights(layer: Mapping[str, Any]) -> bool:
    cls = layer.get("class_name")
    if cls == SCALAR:
        return bool(layer.get("config", {}).get("learnable", False))
    return cls in (WS, DENSE)


def _groups_by_class(variables: Mapping[str, np.ndarray], base: str) -> list[str]:
    """h5 group paths of one class's layers, sorted by their counter (= layer order)."""
    groups: dict[str, int] = {}
    for key in variables:
        parts = key.split("/")
        for i, part in enumerate(parts[:-1]):
            n = _counter(part, base)
            if n is not None and parts[i + 1] in ("vars", "layer"):
                groups["/".join(parts[: i + 1])] = n
                break
    return sorted(groups, key=groups.__getitem__)


def name_map(archive: KerasArchive) -> dict[str, str]:
    """Keras layer name → torch module path, for the weighted layers of the archive."""
    order = creation_order()
    mapping: dict[str, str] = {}
    for cls in (WS, DENSE):
        modules = order[cls]
        base = _snake(cls)
        named = [
            layer
            for layer in archive.layers
            if layer.get("class_name") == cls
            and _has_weights(layer)
            # Auto-named layers only: named heads ("fc", "projector_0") are not in the trunk.
            and _counter(_layer_name(layer), base) is not None
        ]
        if len(named) != len(modules):
            raise WeightsError(
                f"expected {len(modules)} weighted {cls} layers in the MULE model, found "
                f"{len(named)}: not an SF-NFNet-F0 MULE model"
            )
        by_creation = sorted(named, key=lambda layer: _counter(_layer_name(layer), base))
        for layer, module in zip(by_creation, modules, strict=True):
            mapping[_layer_name(layer)] = module
    mapping.update(skip_gain_map(archive, mapping))
    return mapping


# --------------------------------------------------------------------------- layer graph


def _is_ref(obj: Any) -> bool:
    # Keras 2 node data: [layer_name, node_index, tensor_index(, kwargs)].
    return (
        len(obj) >= 3
        and isinstance(obj[0], str)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in obj[1:3])
        and obj[0] != "_CONSTANT_VALUE"
    )


def _references(obj: Any) -> list[str]:
    """Names of the layers an ``inbound_nodes`` structure refers to (Keras 2 and 3 forms)."""
    found: list[str] = []
    if isinstance(obj, dict):
        history = obj.get("keras_history")  # Keras 3: {"config": {"keras_history": [...]}}
        if isinstance(history, list) and history and isinstance(history[0], str):
            found.append(history[0])
        else:
            for value in obj.values():
                found += _references(value)
    elif isinstance(obj, list | tuple):
        if _is_ref(obj):
            found.append(obj[0])
            obj = obj[3:]  # kwargs can hold more tensors (tf.math.multiply's ``y``)
        for item in obj:
            found += _references(item)
    return found


def _weighted_ancestors(
    start: str, inbound: Mapping[str, list[str]], classes: Mapping[str, str], stops: set[str]
) -> set[str]:
    """The weighted layers (or ``stops``) first reached walking back from ``start``."""
    reached: set[str] = set()
    seen = {start}
    todo = list(inbound[start])
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in classes:
            raise WeightsError(f"config.json refers to a layer {name!r} it does not define")
        if name in stops or classes[name] in (WS, DENSE, "InputLayer"):
            reached.add(name)
        else:
            todo += inbound[name]
    return reached


def skip_gain_map(archive: KerasArchive, trunk: Mapping[str, str]) -> dict[str, str]:
    """Learnable ScalarMultiply layer name → ``<block>.skip_gain``, read from the graph.

    ``trunk`` maps WS and Dense layer names to modules (:func:`name_map`).
    """
    gains = [
        _layer_name(layer)
        for layer in archive.layers
        if layer.get("class_name") == SCALAR and _has_weights(layer)
    ]
    blocks = creation_order()[SCALAR]
    if len(gains) != len(blocks):
        raise WeightsError(
            f"expected {len(blocks)} weighted {SCALAR} layers in the MULE model, found "
            f"{len(gains)}: not an SF-NFNet-F0 MULE model"
        )
    classes = {_layer_name(layer): str(layer.get("class_name")) for layer in archive.layers}
    if len(classes) != len(archive.layers):
        raise WeightsError("config.json names two layers alike: its layer graph is ambiguous")
    inbound = {
        _layer_name(layer): _references(layer.get("inbound_nodes", [])) for layer in archive.layers
    }
    mapping: dict[str, str] = {}
    for gain in gains:
        if not inbound[gain]:
            raise WeightsError(
                f"config.json gives no inputs (inbound_nodes) for {SCALAR} {gain!r}: its "
                "block cannot be told, and its name is not reliable"
            )
        mapping[gain] = _block_of_gain(gain, inbound, classes, trunk, set(gains))
    taken: dict[str, str] = {}
    for gain, module in mapping.items():
        if module in taken:
            raise WeightsError(
                f"{SCALAR} layers {taken[module]!r} and {gain!r} both follow the "
                f"squeeze-excite of {module.removesuffix('.skip_gain')}: ambiguous layer graph"
            )
        taken[module] = gain
    return mapping


def _block_of_gain(
    gain: str,
    inbound: Mapping[str, list[str]],
    classes: Mapping[str, str],
    trunk: Mapping[str, str],
    gains: set[str],
) -> str:
    # Walking back also stops at other gains, so a gain wired to the wrong place is caught.
    reached = _weighted_ancestors(gain, inbound, classes, set(trunk) | gains)
    modules = sorted(trunk.get(name, name) for name in reached)
    convs = [m.removesuffix(".conv4") for m in modules if m.endswith(".conv4")]
    if len(modules) == 2 and len(convs) == 1 and f"{convs[0]}.se.fc2" in modules:
        return f"{convs[0]}.skip_gain"
    raise WeightsError(
        f"{SCALAR} {gain!r} does not follow one block's conv4 and squeeze-excite in "
        f"config.json (it follows {', '.join(modules) or 'nothing'}): cannot place its skip gain"
    )


def variable_map(archive: KerasArchive) -> dict[str, tuple[str, str]]:
    """h5 variable path → (torch key, transform) with transform in ``conv``/``dense``/``none``."""
    layer_to_module = name_map(archive)
    result: dict[str, tuple[str, str]] = {}
    for cls in (WS, DENSE, SCALAR):
        base = _snake(cls)
        layer_names = [
            _layer_name(layer)
            for layer in archive.layers
            if layer.get("class_name") == cls and _layer_name(layer) in layer_to_module
        ]
        groups = _groups_by_class(archive.variables, base)
        if len(groups) != len(layer_names):
            raise WeightsError(
                f"{len(groups)} {cls} weight groups for {len(layer_names)} layers in config.json"
            )
        for group, layer_name in zip(groups, layer_names, strict=True):
            module = layer_to_module[layer_name]
            own = {
                k[len(group) + 1 :]: v.shape
                for k, v in archive.variables.items()
                if k.startswith(group + "/")
            }
            for rel, shape in own.items():
                key = f"{group}/{rel}"
                if cls == WS:
                    if len(shape) == 4:
                        result[key] = (f"{module}.weight", "conv")
                    elif rel.startswith("layer/"):
                        result[key] = (f"{module}.bias", "none")
                    else:
                        result[key] = (f"{module}.gain", "none")
                elif cls == DENSE:
                    suffix = "weight" if len(shape) == 2 else "bias"
                    result[key] = (f"{module}.{suffix}", "dense" if len(shape) == 2 else "none")
                else:
                    result[key] = (module, "none")
    return result


def convert_archive(archive: KerasArchive) -> dict[str, Any]:
    """The torch state dict (float32 tensors) of :class:`SFNFNetF0` from a read archive."""
    import torch

    state: dict[str, torch.Tensor] = {}
    for h5_key, (torch_key, transform) in variable_map(archive).items():
        array = np.asarray(archive.variables[h5_key], dtype=np.float32)
        if transform == "conv":
            array = array.transpose(3, 2, 0, 1)
        elif transform == "dense":
            array = array.T
        if torch_key in state:
            raise WeightsError(f"two Keras variables map to {torch_key}")
        state[torch_key] = torch.from_numpy(np.array(array, order="C"))  # keeps 0-d scalars
    return state


def convert(source: str | Path, out: str | Path) -> dict[str, Any]:
    """Convert ``source`` (file or folder, see :func:`find_source`) and write ``out``.

    Returns a summary: source path and sha256, number of tensors and parameters, and
    whether the source is the pinned official file.
    """
    import torch

    from east.extract.teachers.mule import OFFICIAL_WEIGHTS, SFNFNetF0
    from east.extract.weights import load_strict, sha256_file

    source = find_source(source)
    archive = read_keras_archive(source)
    state = convert_archive(archive)
    net = SFNFNetF0()
    load_strict(net, state, source)  # every key present with its shape, nothing extra
    digest = sha256_file(source)
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": state,
        "source": source.name,
        "source_sha256": digest,
        "keras_version": str(archive.metadata.get("keras_version", "")),
        "converter_version": CONVERTER_VERSION,
    }
    tmp = out.with_name(out.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(out)
    return {
        "source": str(source),
        "source_sha256": digest,
        "official": digest == OFFICIAL_WEIGHTS.sha256,
        "tensors": len(state),
        "parameters": int(sum(t.numel() for t in state.values())),
        "out": str(out),
    }
