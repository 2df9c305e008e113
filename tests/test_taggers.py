"""FCN / Musicnn / CRNN taggers (Won et al. 2020): front-end against librosa, shapes and frame
times with random weights, and the real checkpoints loaded strictly on real audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from east.errors import WeightsError
from east.extract.teachers import create_teacher, list_teachers, teacher_info
from east.extract.teachers.taggers import (
    HOP_LENGTH,
    N_FFT,
    SAMPLE_RATE,
    TAGS,
    MelSpectrogram,
    TaggerTeacher,
    mel_filterbank,
    power_to_db,
)

ARCH_TEACHERS = ["fcn-msd", "musicnn-mtat", "crnn-msd"]  # one per architecture
ALL_TAGGERS = [
    "fcn-msd",
    "fcn-mtat",
    "fcn-jamendo",
    "musicnn-mtat",
    "musicnn-jamendo",
    "crnn-msd",
    "crnn-mtat",
    "crnn-jamendo",
]
MTAT_CLIP = "mtat_joram-moments_of_clarity-08-solipsism-59-88.mp3"


@pytest.fixture(scope="module")
def random_teachers() -> dict[str, TaggerTeacher]:
    return {name: create_teacher(name, "random") for name in ARCH_TEACHERS}  # type: ignore[misc]


@pytest.fixture
def real_weights(tagger_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # WeightFile names are namespaced, so the shared weights folder *is* a weights dir
    monkeypatch.setenv("EAST_WEIGHTS_DIR", str(tagger_weights.parent))
    return tagger_weights


# --------------------------------------------------------------------------- front-end


def _numpy_power_stft(x: np.ndarray) -> np.ndarray:
    """Reference |STFT|²: reflect-pad n_fft/2, periodic hann, hop 256, one-sided rfft."""
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    starts = np.arange(0, len(padded) - N_FFT + 1, HOP_LENGTH)
    frames = np.stack([padded[s : s + N_FFT] * window for s in starts], axis=1)
    return np.abs(np.fft.rfft(frames, axis=0)) ** 2  # (257, F)


def test_front_end_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1
    ours = MelSpectrogram()(torch.from_numpy(x)[None])[0].numpy()
    ref = mel_filterbank().numpy().T.astype(np.float64) @ _numpy_power_stft(x)
    assert ours.shape == ref.shape == (96, 1 + len(x) // HOP_LENGTH)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
    # AmplitudeToDB(stype="power"), ref 1, amin 1e-10, no top_db; silence floors at -100 dB
    ref[:, :3] = 0.0
    db = power_to_db(torch.from_numpy(ref)).numpy()
    np.testing.assert_allclose(db, 10 * np.log10(np.maximum(ref, 1e-10)), rtol=1e-6, atol=1e-5)
    assert db[:, :3].max() == pytest.approx(-100.0)


def test_stored_front_end_equals_ours(tagger_weights: Path) -> None:
    # the checkpoints carry their window and filter bank: ours must be the same, so that
    # "random" weights see the same spectrogram as the real ones
    sd = torch.load(
        tagger_weights / "mtat" / "fcn" / "best_model.pth", map_location="cpu", weights_only=True
    )
    torch.testing.assert_close(sd["spec.spectrogram.window"], torch.hann_window(N_FFT))
    torch.testing.assert_close(sd["spec.mel_scale.fb"], mel_filterbank(), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- random weights


def test_registry_facts() -> None:
    names = {info.name for info in list_teachers()}
    assert set(ALL_TAGGERS) <= names
    for name in ALL_TAGGERS:
        info = teacher_info(name)
        assert info.sample_rate == 16000 and info.licence == "MIT"
        (wf,) = info.weights
        model, dataset = name.split("-")
        assert wf.filename == f"sota-music-taggers/{dataset}/{model}/best_model.pth"
        assert wf.url.endswith(f"/models/{dataset}/{model}/best_model.pth")
        assert len(wf.sha256) == 64


@pytest.mark.parametrize("name", ARCH_TEACHERS)
@pytest.mark.parametrize("seconds", [1.0, 5.0, 29.1])
def test_shapes_and_frame_times(
    random_teachers: dict[str, TaggerTeacher], name: str, seconds: float
) -> None:
    teacher = random_teachers[name]
    n = round(seconds * SAMPLE_RATE)
    short = seconds <= 5  # long clips: one clip, no second forward (CPU time in CI)
    x = torch.randn(2 if short else 1, n) * 0.1
    lengths = torch.tensor([n, n // 2] if short else [n])
    with torch.inference_mode():
        out = teacher.embed(x, lengths)
    cell = teacher.net.cell_frames
    assert int(out.num_frames[0]) == max(1, (1 + n // HOP_LENGTH) // cell)
    if short and n >= cell * HOP_LENGTH:
        # independent count: what the network itself gives on the unpadded clip
        with torch.inference_mode():
            direct = teacher.net.embed_spec(teacher.net.front_end(x[:1]))
        assert int(out.num_frames[0]) == direct.shape[1]
        # and the same values, but for the last frames whose receptive field meets the end
        keep = max(0, direct.shape[1] - 3)
        torch.testing.assert_close(out.embeddings[0, :keep], direct[0, :keep])
    elif n < cell * HOP_LENGTH:
        assert int(out.num_frames[0]) == 1
    hop_s = cell * HOP_LENGTH / SAMPLE_RATE
    assert teacher.info.hop_s == pytest.approx(hop_s)
    batch, frames, dim = out.embeddings.shape
    assert batch == len(lengths)
    assert dim == teacher.info.embedding_dim
    assert out.embeddings.dtype == torch.float32
    assert torch.isfinite(out.embeddings).all()
    assert (out.num_frames >= 1).all() and out.num_frames[-1] <= out.num_frames[0]
    assert int(out.num_frames.max()) == frames
    # frames tile the clip: consecutive cells, hop apart, the first starting at 0
    times = out.frame_times
    assert times.shape == (frames, 2) and times.dtype == torch.float64
    assert times[0, 0] == 0.0
    np.testing.assert_allclose(np.diff(times[:, 0].numpy())[1:], hop_s)
    np.testing.assert_allclose(times[1:, 0].numpy(), times[:-1, 1].numpy())
    # valid frames end inside the clip (the trailing partial cell is dropped)
    if seconds * SAMPLE_RATE >= cell * HOP_LENGTH:
        assert float(times[int(out.num_frames[0]) - 1, 1]) <= seconds + 1e-9


def test_known_frame_counts(random_teachers: dict[str, TaggerTeacher]) -> None:
    fcn, crnn = random_teachers["fcn-msd"], random_teachers["crnn-msd"]
    # 29.1 s = 465600 samples -> 1819 STFT frames -> 28 FCN cells of 64, 18 CRNN cells of 96
    assert fcn.num_frames(torch.tensor([465600, 80000, 16000, 1])).tolist() == [28, 4, 1, 1]
    assert crnn.num_frames(torch.tensor([465600, 80000, 16000, 1])).tolist() == [18, 3, 1, 1]


@pytest.mark.parametrize("name", ARCH_TEACHERS)
def test_clip_embedding_does_not_depend_on_batch(
    random_teachers: dict[str, TaggerTeacher], name: str
) -> None:
    teacher = random_teachers[name]
    short = torch.randn(3 * SAMPLE_RATE) * 0.1
    batch = torch.zeros(2, 7 * SAMPLE_RATE)
    batch[0] = torch.randn(7 * SAMPLE_RATE) * 0.1
    batch[1, : short.numel()] = short
    with torch.inference_mode():
        together = teacher.embed(batch, torch.tensor([batch.shape[1], short.numel()]))
        alone = teacher.embed(short[None], torch.tensor([short.numel()]))
    k = int(alone.num_frames[0])
    assert int(together.num_frames[1]) == k
    torch.testing.assert_close(together.embeddings[1, :k], alone.embeddings[0, :k])


def test_cpu_sub_batches_equal_one_batch(random_teachers: dict[str, TaggerTeacher]) -> None:
    teacher = random_teachers["crnn-msd"]
    x = torch.randn(3, 2 * SAMPLE_RATE) * 0.1
    lengths = torch.tensor([x.shape[1]] * 3)
    with torch.inference_mode():
        teacher.cpu_frames_per_pass = 10_000  # all three clips in one pass
        together = teacher.embed(x, lengths).embeddings
        teacher.cpu_frames_per_pass = 1  # one clip per pass
        apart = teacher.embed(x, lengths).embeddings
        teacher.cpu_frames_per_pass = 1024
    torch.testing.assert_close(together, apart)


@pytest.mark.parametrize("name", ARCH_TEACHERS)
def test_long_clips_in_segments_equal_one_pass(name: str) -> None:
    teacher = create_teacher(name, "random")
    n = 13 * teacher.cell_samples - 1000  # 13 cells once padded: segments of 3 + margins
    x = torch.randn(1, n) * 0.1
    with torch.inference_mode():
        whole = teacher.embed(x, torch.tensor([n]))
        teacher.max_cells_per_pass = 3
        segmented = teacher.embed(x, torch.tensor([n]))
    assert segmented.embeddings.shape == whole.embeddings.shape == (1, 12, teacher.embedding_dim)
    torch.testing.assert_close(segmented.embeddings, whole.embeddings, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ARCH_TEACHERS)
def test_frozen_cpu_graph_equals_eager(name: str) -> None:
    teacher = create_teacher(name, "random")
    x = torch.randn(3, 6 * SAMPLE_RATE) * 0.1
    lengths = torch.tensor([x.shape[1], 4 * SAMPLE_RATE, 2 * SAMPLE_RATE])
    with torch.inference_mode():
        eager = teacher.embed(x, lengths)
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert teacher.optimize_for_cpu()
    assert isinstance(teacher._body, torch.jit.ScriptModule)  # the frozen graph is in use
    with torch.inference_mode():
        frozen = teacher.embed(x, lengths)
    torch.testing.assert_close(frozen.num_frames, eager.num_frames)
    torch.testing.assert_close(frozen.embeddings, eager.embeddings, atol=1e-4, rtol=1e-4)
    # the swap does not touch the upstream module or its state dict
    assert teacher.state_dict().keys() == state.keys()


@pytest.mark.parametrize("name", ARCH_TEACHERS)
def test_frame_times_centre_on_receptive_field(
    random_teachers: dict[str, TaggerTeacher], name: str
) -> None:
    # the input samples that influence one embedding frame (gradient support) must lie inside
    # the documented receptive field and be centred on that frame's time span
    teacher = random_teachers[name]
    x = (torch.randn(1, 5 * SAMPLE_RATE) * 0.1).requires_grad_(True)
    with torch.enable_grad():
        out = teacher.embed(x, torch.tensor([x.shape[1]]))
        i = int(out.num_frames[0]) // 2
        out.embeddings[0, i].sum().backward()
    support = torch.nonzero(x.grad[0].abs() > 0).flatten().numpy() / SAMPLE_RATE
    lo, hi = support.min(), support.max()
    start, end = out.frame_times[i].tolist()
    rf = teacher.receptive_field_s
    assert hi - lo <= rf + 1e-3
    assert hi - lo >= 0.5 * rf
    assert abs((lo + hi) / 2 - (start + end) / 2) < 0.15


def test_random_weights_are_deterministic() -> None:
    a = create_teacher("crnn-mtat", "random")
    b = create_teacher("crnn-mtat", "random")
    assert a.weights_sha256 == "random"
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_autocast_is_safe(random_teachers: dict[str, TaggerTeacher]) -> None:
    teacher = random_teachers["fcn-msd"]
    x = torch.randn(2, 3 * SAMPLE_RATE) * 0.1
    lengths = torch.tensor([x.shape[1]] * 2)
    with torch.inference_mode():
        ref = teacher.embed(x, lengths).embeddings
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = teacher.embed(x, lengths).embeddings
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert torch.corrcoef(torch.stack([ref.flatten(), low.flatten()]))[0, 1] > 0.99


def test_missing_weights_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EAST_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        create_teacher("fcn-msd")
    msg = str(err.value)
    assert "\n" not in msg
    assert "sota-music-taggers/msd/fcn/best_model.pth" in msg
    assert "https://github.com/minzwon/sota-music-tagging-models/raw/master/models/msd/fcn" in msg
    assert "east teachers download fcn-msd" in msg


# --------------------------------------------------------------------------- real weights


@pytest.mark.shared
def test_real_checkpoints_load_strictly_on_esc50(real_weights: Path, esc50_root: Path) -> None:
    from east.audio import load_audio

    clips = sorted((esc50_root / "audio").glob("*.flac"))[:2]
    audio = [load_audio(p, sr=SAMPLE_RATE) for p in clips]
    n = min(len(a) for a in audio)
    x = torch.from_numpy(np.stack([a[:n] for a in audio]))
    lengths = torch.tensor([n, n])
    for name in ALL_TAGGERS:
        teacher = create_teacher(name)
        wf = teacher_info(name).weights[0]
        assert teacher.weights_sha256 == wf.sha256  # the pinned file was loaded
        with torch.inference_mode():
            out = teacher.embed(x, lengths)
        cells = (1 + n // HOP_LENGTH) // teacher.net.cell_frames
        assert out.embeddings.shape == (2, cells, teacher.info.embedding_dim), name
        assert cells == 4 if teacher.net.cell_frames == 64 else cells == 3  # 5 s clips
        assert out.num_frames.tolist() == [cells, cells]
        assert torch.isfinite(out.embeddings).all(), name
        assert out.embeddings.std() > 0, name


@pytest.mark.shared
def test_wrong_checkpoint_for_architecture(real_weights: Path) -> None:
    with pytest.raises(WeightsError, match="does not fit CRNN") as err:
        create_teacher("crnn-msd", real_weights / "msd" / "fcn" / "best_model.pth")
    assert "\n" not in str(err.value)


@pytest.mark.shared
def test_real_samples_give_finite_embeddings(real_weights: Path, samples_dir: Path) -> None:
    from east.audio import load_audio

    teacher = create_teacher("musicnn-jamendo")
    for path in sorted(samples_dir.glob("*.*")):
        x = torch.from_numpy(load_audio(path, sr=SAMPLE_RATE, duration=5.0))[None]
        with torch.inference_mode():
            out = teacher.embed(x, torch.tensor([x.shape[1]]))
        expected = int(teacher.num_frames(torch.tensor([x.shape[1]]))[0])
        assert expected == (1 + x.shape[1] // HOP_LENGTH) // 64 == 4
        assert out.embeddings.shape[1:] == (expected, 753), path.name
        assert torch.isfinite(out.embeddings).all(), path.name


@pytest.mark.shared
def test_mtat_tag_heads_agree_on_a_real_clip(real_weights: Path, samples_dir: Path) -> None:
    """Three independently trained MTAT taggers must rank the 50 tags alike on a real MTAT
    clip: a wrong front-end or layer would give unrelated rankings."""
    from scipy.stats import spearmanr

    from east.audio import load_audio

    x = torch.from_numpy(load_audio(samples_dir / MTAT_CLIP, sr=SAMPLE_RATE))[None]
    probs = {}
    for name in ("fcn-mtat", "musicnn-mtat", "crnn-mtat"):
        teacher = create_teacher(name)
        # upstream evaluation input: 29 s for FCN / CRNN, 3 s crops averaged for Musicnn
        crop = 29 * SAMPLE_RATE if name != "musicnn-mtat" else 3 * SAMPLE_RATE
        starts = torch.linspace(0, x.shape[1] - crop, 4 if crop < x.shape[1] // 2 else 1)
        crops = torch.cat([x[:, int(s) : int(s) + crop] for s in starts])
        with torch.inference_mode():
            p = teacher.tag_probabilities(crops).mean(dim=0)
        assert p.shape == (50,) and ((p >= 0) & (p <= 1)).all()
        probs[name] = p.numpy()
        top = np.argsort(-probs[name])[:5]
        print(name, [(TAGS["mtat"][i], round(float(probs[name][i]), 3)) for i in top])
    names = list(probs)
    for a in range(3):
        for b in range(a + 1, 3):
            rho = spearmanr(probs[names[a]], probs[names[b]]).statistic
            print(names[a], names[b], f"spearman {rho:.2f}")
            assert rho > 0.5
    # a random network with the same front-end does not agree like that
    random_p = create_teacher("fcn-mtat", "random").tag_probabilities(x[:, : 29 * SAMPLE_RATE])
    assert spearmanr(random_p[0].detach().numpy(), probs["fcn-mtat"]).statistic < 0.5
