"""Students: parameter counts against the papers, forward/backward, tap shapes, frame times."""

from __future__ import annotations

import itertools

import pytest
import torch

from east.errors import ConfigError
from east.train.students import STUDENTS, StudentOutput, create_student, list_students

pytestmark = pytest.mark.usefixtures("single_thread")


def test_registry_names_and_unknown_student():
    assert list_students() == ["cp_resnet", "harmonic_cnn", "mobile_fcn", "short_chunk_cnn"]
    with pytest.raises(ConfigError, match="cp_resnet"):
        create_student("resnet9000", 10)


def _conv(c_in: int, c_out: int, k: int, bias: bool = False, groups: int = 1) -> int:
    return c_out * (c_in // groups) * k * k + (c_out if bias else 0)


def _bn(c: int) -> int:
    return 2 * c


@pytest.mark.parametrize(
    ("name", "kwargs", "backbone_only", "paper_m"),
    [
        ("cp_resnet", {}, True, 5.52),  # paper 1 counts the backbone
        ("harmonic_cnn", {}, True, 3.6),
        ("harmonic_cnn", {}, False, 3.6),
        ("short_chunk_cnn", {}, False, 9.1),  # 1x1 shortcuts by default (docs/students.md)
    ],
)
def test_parameter_counts_within_two_percent_of_paper(name, kwargs, backbone_only, paper_m):
    student = create_student(name, 50, **kwargs)
    count = student.num_parameters(backbone_only=backbone_only)
    assert abs(count / 1e6 - paper_m) / paper_m < 0.02, count


def test_mobile_fcn_count_is_the_reference_architecture():
    # The released reference model: 2 plain conv layers + 6 depthwise-separable ones, no conv
    # biases. 0.301 M (backbone) — paper 1's 0.34 M is not reachable (docs/students.md).
    expected = _conv(1, 64, 3) + _bn(64) + _conv(64, 128, 3) + _bn(128)
    for c_in, c_out in [(128, 128)] * 3 + [(128, 256), (256, 256), (256, 256)]:
        expected += (
            _conv(c_in, c_in, 3, groups=c_in) + _bn(c_in) + _conv(c_in, c_out, 1) + _bn(c_out)
        )
    student = create_student("mobile_fcn", 50)
    assert student.num_parameters(backbone_only=True) == expected
    assert student.num_parameters(backbone_only=False) == expected + 256 * 50 + 50


@pytest.mark.parametrize(("kwargs", "k"), [({}, 1), ({"shortcut_kernel": 3}, 3)])
def test_short_chunk_cnn_shortcut_layouts(kwargs, k):
    # default: 1x1 projection shortcuts (paper 2's 9.1 M); shortcut_kernel=3: the original
    # sota-music-tagging-models layout (12.10 M)
    widths = [1, 128, 128, 256, 256, 256, 256, 512]
    expected = _bn(1)
    for c_in, c_out in itertools.pairwise(widths):
        expected += _conv(c_in, c_out, 3, True) + _conv(c_out, c_out, 3, True) + 2 * _bn(c_out)
        expected += _conv(c_in, c_out, k, True) + _bn(c_out)  # projection shortcut
    student = create_student("short_chunk_cnn", 50, **kwargs)
    assert student.num_parameters(backbone_only=True) == expected


def test_cp_resnet_rho_changes_kernels():
    small = create_student("cp_resnet", 20, rho=5, base_channels=8).num_parameters()
    default = create_student("cp_resnet", 20, base_channels=8).num_parameters()
    large = create_student("cp_resnet", 20, rho=9, base_channels=8).num_parameters()
    assert small < default < large


# Small widths keep these fast; the time axis does not depend on the width.
SMALL = {
    "cp_resnet": {"base_channels": 8},
    "mobile_fcn": {},
    "short_chunk_cnn": {"n_channels": 8},
    "harmonic_cnn": {"n_channels": 8},
}
# Shortest inputs that leave every tap at least one frame (HCNN pools time by 288 frames).
SECONDS = {"cp_resnet": 1.0, "mobile_fcn": 2.0, "short_chunk_cnn": 1.0, "harmonic_cnn": 5.0}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward_taps_and_frame_times(name):
    torch.manual_seed(0)
    student = create_student(name, 7, **SMALL[name])
    student.train()
    x = torch.randn(2, int(student.sample_rate * SECONDS[name]))
    out = student(x)
    assert isinstance(out, StudentOutput)
    assert out.logits.shape == (2, 7)
    assert len(out.features) == len(out.frame_times) == len(student.feature_dims) == 3
    spec_frames = student.frontend.num_frames(x.shape[1])
    for feat, times, dim, stride in zip(
        out.features, out.frame_times, student.feature_dims, student.tap_strides, strict=True
    ):
        assert feat.shape[0] == 2 and feat.shape[2] == dim
        assert times.shape == (feat.shape[1], 2)
        assert feat.shape[1] <= spec_frames // stride + 1
        hop = stride * student.hop_seconds
        torch.testing.assert_close(
            times[:, 1] - times[:, 0], torch.full((feat.shape[1],), hop, dtype=torch.float64)
        )
    loss = out.logits.square().mean() + sum(f.mean() for f in out.features)
    loss.backward()
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_short_clips_are_padded_with_silence(name):
    student = create_student(name, 3, **SMALL[name]).eval()
    short = torch.randn(2, int(student.sample_rate * 0.1))
    padded = torch.nn.functional.pad(short, (0, max(0, student.min_samples - short.shape[1])))
    with torch.no_grad():
        out, expected = student(short), student(padded)
    assert out.logits.shape == (2, 3)
    torch.testing.assert_close(out.logits, expected.logits)
    assert all(f.shape[1] >= 1 for f in out.features)
    # the minimum is tight enough to be real: a clip of min_samples is not padded
    assert student.min_samples <= student.sample_rate * SECONDS[name]


def test_cp_resnet_ten_seconds_gives_62_frames():
    student = create_student("cp_resnet", 20, base_channels=8).eval()
    with torch.no_grad():
        out = student(torch.randn(1, 32000 * 10))
    assert [f.shape[1] for f in out.features] == [62, 62, 62]
    assert [f.shape[2] for f in out.features] == [8, 16, 32]
    assert out.frame_times[-1][1, 0].item() == pytest.approx(0.16)


def test_mobile_fcn_mtat_clip_gives_30_and_15_frames():
    student = create_student("mobile_fcn", 50).eval()
    with torch.no_grad():
        out = student(torch.randn(1, int(16000 * 29.1)))
    assert [f.shape[1] for f in out.features] == [30, 15, 15]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_frontend_bypass_gives_the_same_output(name):
    student = create_student(name, 3, **SMALL[name]).eval()
    x = torch.randn(2, int(student.sample_rate * SECONDS[name]))
    with torch.no_grad():
        direct = student(x)
        spec = student.frontend(x)
        bypass = student(spec, is_spectrogram=True)
    torch.testing.assert_close(direct.logits, bypass.logits)
    example = student.example_spectrogram(1, 64)
    assert example.shape[1:-1] == spec.shape[1:-1]


def test_harmonic_frontend_learns_its_bandwidth():
    student = create_student("harmonic_cnn", 5, n_channels=8).train()
    out = student(torch.randn(2, 16000 * 5))
    out.logits.sum().backward()
    q = student.frontend.bw_q
    assert q.grad is not None and q.grad.abs().item() > 0
    assert student.frontend.bands == 128  # C1..E6 at 16 kHz, two bands per semitone


def test_registry_entries_carry_paper_counts():
    assert {n: STUDENTS[n].paper_params_m for n in STUDENTS} == {
        "cp_resnet": 5.52,
        "mobile_fcn": 0.34,
        "short_chunk_cnn": 9.1,
        "harmonic_cnn": 3.6,
    }


def test_cli_students_list_prints_counts_and_rates():
    from typer.testing import CliRunner

    from east.cli.main import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        ["students", "list", "--iters", "1", "--warmup", "0", "--frames", "300", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    for name in list_students():
        assert name in result.output
    assert "5.52" in result.output and "it/s" in result.output
    bad = runner.invoke(app, ["students", "list", "--mode", "fast"])
    assert bad.exit_code != 0
