"""east.audio: decoding real files, resampling, cropping, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from east.audio import MAX_PEAK, audio_info, crop_or_pad, load_audio, quiet_native_stderr
from east.errors import AudioError, EastError


def _write(path: Path, x: np.ndarray, sr: int, **kw) -> Path:
    sf.write(str(path), x, sr, **kw)
    return path


def _sine(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------- real files


@pytest.mark.parametrize(
    "name",
    [
        "openmic_000046_3840.ogg",
        "fma_small_000002.mp3",
        "mtat_joram-moments_of_clarity-08-solipsism-59-88.mp3",
    ],
)
def test_real_samples_decode_like_soundfile(samples_dir: Path, name: str) -> None:
    path = samples_dir / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    sr, frames, channels = audio_info(path)
    reference, ref_sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert ref_sr == sr and reference.shape[1] == channels
    np.testing.assert_allclose(x, reference.mean(axis=1), atol=1e-6)
    # the header's frame count is exact for Ogg and an estimate (within 2 %) for MP3
    assert abs(len(x) - frames) <= 0.02 * frames
    assert np.abs(x).max() > 0.05  # music, not silence
    # seeking (offset) lands on the same samples as decoding from the start
    np.testing.assert_allclose(
        load_audio(path, offset=2.0, duration=1.0), x[2 * sr : 3 * sr], atol=1e-6
    )

    # resampled to 16 kHz: length scales with the rate, content equals soxr on the mono mix
    y = load_audio(path, 16000)
    np.testing.assert_allclose(
        y, soxr.resample(reference.mean(axis=1), sr, 16000, quality="HQ"), atol=1e-5
    )
    assert abs(len(y) - len(x) * 16000 / sr) <= 1


def test_real_esc50_flac(esc50_root: Path) -> None:
    files = sorted((esc50_root / "audio").glob("4-*.flac"))[:4]
    assert files
    for path in files:
        assert audio_info(path) == (44100, 220500, 1)
        x = load_audio(path)
        ref, _ = sf.read(str(path), dtype="float32")
        np.testing.assert_array_equal(x, ref)
        y = load_audio(path, 16000, offset=1.0, duration=2.5)
        assert y.shape == (40000,)
        np.testing.assert_allclose(
            y, soxr.resample(ref[44100 : 44100 + 110250], 44100, 16000, quality="HQ"), atol=1e-5
        )


# ---------------------------------------------------------------- behaviour


def test_offset_duration_exact_samples(tmp_path: Path) -> None:
    sr = 8000
    ramp = (np.arange(3 * sr) / (3 * sr)).astype(np.float32)
    path = _write(tmp_path / "ramp.wav", ramp, sr, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, offset=0.5, duration=1.0), ramp[4000:12000])
    # a duration past the end gives what is there
    np.testing.assert_array_equal(load_audio(path, offset=2.5, duration=5.0), ramp[20000:])


def test_downmix_is_channel_mean(tmp_path: Path) -> None:
    sr = 16000
    left, right = _sine(440, 0.5, sr), _sine(660, 0.5, sr) * 0.5
    path = _write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), sr, subtype="FLOAT")
    assert audio_info(path) == (sr, len(left), 2)
    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("target_sr", [8000, 22050, 48000])
def test_resampling_keeps_pitch_and_level(tmp_path: Path, target_sr: int) -> None:
    path = _write(tmp_path / "a.flac", _sine(1000.0, 1.0, 44100), 44100)
    y = load_audio(path, target_sr)
    assert len(y) == target_sr
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spectrum) * target_sr / len(y)
    assert abs(peak_hz - 1000.0) <= 2.0
    core = y[target_sr // 10 : -target_sr // 10]  # away from the filter edges
    assert np.sqrt(np.mean(core**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_silence_is_valid(tmp_path: Path) -> None:
    path = _write(tmp_path / "silence.wav", np.zeros(4000, dtype=np.float32), 8000)
    x = load_audio(path, 16000, min_duration=0.4)
    assert x.shape == (8000,) and not x.any()


def test_min_duration(tmp_path: Path) -> None:
    path = _write(tmp_path / "short.wav", _sine(440, 0.5, 8000), 8000)
    assert len(load_audio(path, min_duration=0.5)) == 4000
    with pytest.raises(AudioError, match="too short"):
        load_audio(path, min_duration=1.0)
    with pytest.raises(AudioError, match="too short"):
        load_audio(path, offset=0.4, min_duration=0.2)


# ---------------------------------------------------------------- bad input


def _truncate(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    sr = 16000
    tone = _sine(440, 2.0, sr)
    nan = tone.copy()
    nan[100] = np.nan
    inf = tone.copy()
    inf[5] = np.inf
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.flac").write_text("this is a text file, not audio\n" * 20)
    (tmp_path / "a_dir.wav").mkdir()
    return {
        "missing": (tmp_path / "missing.wav", "not found"),
        "empty": (tmp_path / "empty.wav", "0 bytes"),
        "text": (tmp_path / "notes.flac", "not an audio file"),
        "directory": (tmp_path / "a_dir.wav", "directory"),
        "nan": (_write(tmp_path / "nan.wav", nan, sr, subtype="FLOAT"), "non-finite"),
        "inf": (_write(tmp_path / "inf.wav", inf, sr, subtype="FLOAT"), "non-finite"),
        "truncated_wav": (_truncate(_write(tmp_path / "t.wav", tone, sr), 0.5), "truncated"),
        "truncated_flac": (_truncate(_write(tmp_path / "t.flac", tone, sr), 0.5), "truncated"),
        "truncated_ogg": (
            _truncate(_write(tmp_path / "t.ogg", tone, sr, format="OGG", subtype="VORBIS"), 0.5),
            "truncated",
        ),
        "truncated_mp3": (
            _truncate(_write(tmp_path / "t.mp3", tone, sr, format="MP3"), 0.5),
            "truncated",
        ),
        "header_only_wav": (_truncate(_write(tmp_path / "h.wav", tone, sr), 0.0005), "decode"),
    }


def test_every_bad_file_is_one_typed_error(tmp_path: Path) -> None:
    for kind, (path, reason) in _bad_files(tmp_path).items():
        with pytest.raises(AudioError) as info:
            load_audio(path, 16000)
        err = info.value
        assert isinstance(err, EastError), kind
        assert err.path == str(path), kind
        assert reason in err.reason, f"{kind}: {err.reason!r}"
        assert str(path) in str(err) and "\n" not in str(err), kind


def test_audio_info_reports_header_problems(tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    for kind in ("missing", "empty", "text", "truncated_wav", "header_only_wav"):
        with pytest.raises(AudioError):
            audio_info(bad[kind][0])


def test_offset_past_end(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.wav", _sine(440, 1.0, 8000), 8000)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, offset=1.5)


def test_peak_limit(tmp_path: Path) -> None:
    """Float files up to MAX_PEAK decode; beyond it (integer-scale floats) they are refused."""
    x = _sine(440, 0.5, 8000)
    ok = _write(tmp_path / "loud.wav", x * 2 * MAX_PEAK * 0.99, 8000, subtype="FLOAT")
    assert np.abs(load_audio(ok)).max() == pytest.approx(MAX_PEAK * 0.99, rel=1e-3)
    scaled = _write(tmp_path / "int_scale.wav", x * 65536, 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="far outside full scale"):
        load_audio(scaled, 16000)


def test_quiet_native_stderr_restores_fd2_across_threads() -> None:
    import os
    import threading
    import time

    def ident(fd: int) -> tuple[int, int, int]:
        st = os.fstat(fd)
        return st.st_dev, st.st_ino, st.st_rdev

    before, devnull = ident(2), os.stat(os.devnull).st_rdev
    inside: list[int] = []

    def work(k: int) -> None:
        for _ in range(20):
            with quiet_native_stderr():
                inside.append(ident(2)[2])
                time.sleep(0.0001 * (k % 3))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(inside) == {devnull}
    assert ident(2) == before


# ---------------------------------------------------------------- crop_or_pad


def test_crop_modes() -> None:
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(x, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(crop_or_pad(x, 4, "center"), [3, 4, 5, 6])
    a = crop_or_pad(x, 4, "random", rng=np.random.default_rng(3))
    b = crop_or_pad(x, 4, "random", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    starts = {int(crop_or_pad(x, 4, "random", rng=s)[0]) for s in range(200)}
    assert starts == set(range(7))  # every window start is reachable


def test_pad_modes() -> None:
    x = np.ones(3, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(x, 6), [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(crop_or_pad(x, 6, "center"), [0, 1, 1, 1, 0, 0])
    batch = crop_or_pad(np.ones((2, 3), dtype=np.float32), 5)
    assert batch.shape == (2, 5) and batch[:, 3:].sum() == 0
    with pytest.raises(ValueError):
        crop_or_pad(x, 4, "middle")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 50),
    length=st.integers(0, 50),
    mode=st.sampled_from(["start", "center", "random"]),
    seed=st.integers(0, 1000),
)
def test_crop_or_pad_property(n: int, length: int, mode: str, seed: int) -> None:
    x = np.arange(1, n + 1, dtype=np.float32)
    y = crop_or_pad(x, length, mode, rng=seed)  # type: ignore[arg-type]
    assert y.shape == (length,) and y.dtype == x.dtype
    kept = y[y != 0]
    # what survives is one contiguous run of the input, in order
    if kept.size:
        assert np.all(np.diff(kept) == 1) and kept[0] >= 1 and kept[-1] <= n
    assert kept.size == min(n, length)
