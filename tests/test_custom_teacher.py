"""User models as teachers: TorchScript / torch.export files and ``py:module:factory`` specs."""

from __future__ import annotations

import hashlib
import json
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from east.errors import ConfigError, EastError, WeightsError
from east.extract.teachers import Teacher, create_teacher, teacher_info
from east.extract.teachers.custom import create_custom_teacher, is_custom_spec

SR = 8000
WIN, HOP = 4000, 2000  # 0.5 s window, 0.25 s hop


class Framer(nn.Module):
    """Frames the waveform (window 0.5 s, hop 0.25 s at 8 kHz) and projects each frame."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(WIN, dim)
        self.sample_rate = SR
        self.embedding_dim = dim
        self.window_s = WIN / SR
        self.hop_s = HOP / SR
        self.win, self.hop = WIN, HOP  # attributes: TorchScript does not close over globals

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x.unfold(1, self.win, self.hop))


class FramerWithLengths(Framer):
    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:  # type: ignore[override]
        # zero the frames past each clip's end: proves the lengths arrive
        out = self.proj(x.unfold(1, self.win, self.hop))
        valid = torch.div(lengths - self.win, self.hop, rounding_mode="floor") + 1
        keep = torch.arange(out.shape[1], device=x.device)[None, :] < valid[:, None]
        return out * keep[..., None]


def _script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in recent torch
        torch.jit.script(module).save(str(path))
    return path


@pytest.fixture
def scripted(tmp_path: Path) -> Path:
    return _script(Framer(), tmp_path / "framer.pt")


def _expected_frames(n: int) -> int:
    return max(1, (n - WIN) // HOP + 1)


def test_torchscript_with_sidecar(tmp_path: Path, scripted: Path) -> None:
    (tmp_path / "framer.yaml").write_text(
        "name: my-framer\nsample_rate: 8000\ndim: 6\nwindow_s: 0.5\nhop_s: 0.25\nlicence: MIT\n"
    )
    spec = f"torchscript:{scripted}"
    assert is_custom_spec(spec)
    teacher = create_teacher(spec)
    assert isinstance(teacher, Teacher)
    info = teacher.info
    assert (info.name, info.sample_rate, info.embedding_dim, info.window_s, info.hop_s) == (
        "my-framer",
        8000,
        6,
        0.5,
        0.25,
    )
    assert teacher_info(spec) == info
    assert teacher.weights_sha256 == hashlib.sha256(scripted.read_bytes()).hexdigest()

    lengths = [SR * 2, SR, 4100]
    x = torch.randn(3, SR * 2)
    out = teacher.embed(x, torch.tensor(lengths))
    assert out.num_frames.tolist() == [_expected_frames(n) for n in lengths]  # 7, 3, 1
    assert out.embeddings.shape == (3, 7, 6)
    reference = Framer()
    with torch.no_grad():
        for i, n in enumerate(lengths):
            alone = reference(x[i : i + 1, :n])[0]
            torch.testing.assert_close(out.embeddings[i, : alone.shape[0]], alone)
    torch.testing.assert_close(
        out.frame_times[:3],
        torch.tensor([[0.0, 0.5], [0.25, 0.75], [0.5, 1.0]], dtype=torch.float64),
    )


def test_facts_from_model_attributes_and_keyword_override(scripted: Path) -> None:
    spec = f"torchscript:{scripted}"
    teacher = create_custom_teacher(spec)  # no sidecar: the scripted attributes
    assert (teacher.info.sample_rate, teacher.info.embedding_dim) == (SR, 6)
    assert teacher.info.name == "framer"
    assert (teacher.info.window_s, teacher.info.hop_s) == (0.5, 0.25)
    renamed = create_custom_teacher(spec, name="other", description="d")
    assert renamed.info.name == "other" and renamed.info.description == "d"


def test_missing_declarations_are_one_line(tmp_path: Path) -> None:
    class Bare(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.unfold(1, 4, 4)

    path = _script(Bare(), tmp_path / "bare.pt")
    with pytest.raises(ConfigError) as err:
        create_custom_teacher(f"torchscript:{path}")
    msg = str(err.value)
    assert "\n" not in msg and "sample_rate" in msg and "dim" in msg
    assert str(tmp_path / "bare.yaml") in msg
    with pytest.raises(ConfigError, match="both window_s and hop_s"):
        create_custom_teacher(f"torchscript:{path}", sample_rate=SR, dim=4, window_s=1.0)
    (tmp_path / "bare.json").write_text(json.dumps({"sample_rate": SR, "dim": 4, "colour": 1}))
    with pytest.raises(ConfigError, match="colour"):
        create_custom_teacher(f"torchscript:{path}")


def test_model_file_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        create_teacher(f"torchscript:{tmp_path / 'nope.pt'}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="not a loadable torchscript model") as err:
        create_teacher(f"torchscript:{junk}")
    assert "\n" not in str(err.value)


def test_wrong_output_dim_is_reported(scripted: Path) -> None:
    teacher = create_custom_teacher(f"torchscript:{scripted}", dim=7)
    with pytest.raises(EastError, match="returned dim 6, declared 7"):
        teacher.embed(torch.randn(1, SR), torch.tensor([SR]))


def test_padded_batching_and_lengths_argument(tmp_path: Path) -> None:
    path = _script(FramerWithLengths(), tmp_path / "withlen.pt")
    teacher = create_custom_teacher(f"torchscript:{path}", batching="padded")
    lengths = torch.tensor([SR * 2, SR])
    out = teacher.embed(torch.randn(2, SR * 2), lengths)
    assert out.num_frames.tolist() == [7, 3]
    assert out.embeddings.shape == (2, 7, 6)
    # the model zeroed frames past the second clip's end, so it did get the lengths
    assert out.embeddings[1, 3:].abs().sum() == 0
    assert out.embeddings[1, :3].abs().sum() > 0


def test_export_program(tmp_path: Path) -> None:
    model = Framer().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    example = torch.randn(2, SR * 2)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # pragma: no cover - depends on the torch build
        pytest.skip(f"torch.export cannot export the test model here: {exc}")
    path = tmp_path / "framer.pt2"
    torch.export.save(program, str(path))
    # exported programs keep no Python attributes: the facts come from the sidecar
    with pytest.raises(ConfigError, match="sample_rate"):
        create_teacher(f"export:{path}")
    (tmp_path / "framer.json").write_text(
        json.dumps({"sample_rate": SR, "dim": 6, "window_s": 0.5, "hop_s": 0.25})
    )
    teacher = create_teacher(f"export:{path}")
    out = teacher.embed(example, torch.tensor([SR * 2, SR * 2]))
    with torch.no_grad():
        torch.testing.assert_close(out.embeddings, model(example))
    assert out.num_frames.tolist() == [7, 7]


MODULE = textwrap.dedent(
    """
    import torch
    from torch import nn

    from east.extract.teachers.base import Teacher


    class ClipModel(nn.Module):
        sample_rate = 16000
        dim = 3

        def forward(self, x):
            return torch.stack([x.mean(1), x.std(1), x.abs().amax(1)], dim=1)


    def make_clip(device="cpu"):
        return ClipModel().to(device)


    def make_with_weights(weights=None):
        model = ClipModel()
        model.loaded = weights
        return model


    def make_teacher():
        from east.extract.teachers import create_teacher

        return create_teacher("fcn-msd", "random")


    not_callable = 3
    """
)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "user_teachers_mod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_teachers_mod"


def test_py_factory_clip_level(user_module: str, tmp_path: Path) -> None:
    teacher = create_teacher(f"py:{user_module}:make_clip")
    assert teacher.info.clip_level and teacher.info.sample_rate == 16000
    assert teacher.weights_sha256.startswith("source:")
    src = (tmp_path / "user_teachers_mod.py").read_bytes()
    assert teacher.weights_sha256 == "source:" + hashlib.sha256(src).hexdigest()
    x = torch.randn(2, 32000)
    out = teacher.embed(x, torch.tensor([32000, 16000]))
    assert out.embeddings.shape == (2, 1, 3)
    assert out.num_frames.tolist() == [1, 1]
    torch.testing.assert_close(out.frame_times, torch.tensor([[0.0, 2.0]], dtype=torch.float64))
    # each clip is embedded over its own samples only
    torch.testing.assert_close(out.embeddings[1, 0, 0], x[1, :16000].mean())


def test_py_factory_weights_and_ready_teacher(user_module: str, tmp_path: Path) -> None:
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    teacher = create_teacher(f"py:{user_module}:make_with_weights", weights)
    assert teacher.model.loaded == weights
    assert teacher.weights_sha256 == hashlib.sha256(b"weights").hexdigest()
    ready = create_teacher(f"py:{user_module}:make_teacher")
    assert ready.info.name == "fcn-msd"


def test_py_factory_errors(user_module: str) -> None:
    with pytest.raises(ConfigError, match="cannot import no_such_module_xyz"):
        create_teacher("py:no_such_module_xyz:f")
    with pytest.raises(ConfigError, match="has no attribute missing"):
        create_teacher(f"py:{user_module}:missing")
    with pytest.raises(ConfigError, match="not callable"):
        create_teacher(f"py:{user_module}:not_callable")
    with pytest.raises(ConfigError, match=r"py:package\.module:factory"):
        create_teacher("py:justamodule")
