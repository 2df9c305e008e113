"""Stage 2 against the authors' reference code (suncerock/EAsT-music-classification) and the
papers: the shipped configs' schedules, the students' initialisation and parameter counts.
Each test is named in docs/fidelity.md."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import yaml

from east.config import load_config
from east.features import stride_frame_times
from east.train.losses import DistillationLoss, RegularizerSpec, TeacherBatch, kd_loss
from east.train.students import StudentOutput, create_student
from east.train.systems import regularizers

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("east_configs_generate", CONFIGS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def configs(generate: ModuleType) -> dict[str, dict]:
    return {**generate.paper1(), **generate.paper2()}


def test_shipped_configs_are_what_generate_py_writes(configs: dict[str, dict]) -> None:
    for rel, cfg in configs.items():
        path = CONFIGS / rel
        assert path.is_file(), f"{rel} missing: run python configs/generate.py"
        assert yaml.safe_load(path.read_text()) == cfg, f"{rel} stale: run configs/generate.py"


# reference config/{magna,openmic}/lr_*.json: "lr" of the SGD optimiser
REFERENCE_TEACHER_LR = {
    ("mtat", "vggish"): 0.1,
    ("mtat", "openl3"): 0.1,
    ("mtat", "passt"): 0.2,
    ("mtat", "panns"): 0.1,
    ("openmic", "vggish"): 0.2,
    ("openmic", "openl3"): 0.1,
    ("openmic", "passt"): 0.1,
    ("openmic", "panns"): 0.1,
}


@pytest.mark.parametrize(("dataset", "teacher"), sorted(REFERENCE_TEACHER_LR))
def test_teacher_lr_learning_rate_is_the_references(
    configs: dict[str, dict], dataset: str, teacher: str
) -> None:
    cfg = configs[f"paper1/{dataset}/teacher_lr_{teacher}.yaml"]
    assert cfg["teacher_lr"]["lr"] == REFERENCE_TEACHER_LR[(dataset, teacher)]
    # the schedule around it is the same for every probe (lr_*.json)
    assert {k: v for k, v in cfg["teacher_lr"].items() if k != "lr"} == {
        "factor": 0.1,
        "patience": 1,
        "early_stopping": 3,
    }


def test_paper2_mtat_passt_probe_uses_the_mtat_rate(configs: dict[str, dict]) -> None:
    assert configs["paper2/mtat/short_chunk_cnn/teacher_lr_passt.yaml"]["teacher_lr"]["lr"] == 0.2
    assert configs["paper2/esc50/short_chunk_cnn/teacher_lr_passt.yaml"]["teacher_lr"]["lr"] == 0.1


@pytest.mark.parametrize(
    ("rel", "plateau", "stop"),
    [
        # reference first commit: config/magna/mobile_fcn.json, config/openmic/cp_resnet.json
        ("paper1/mtat/baseline.yaml", 8, 15),
        ("paper1/openmic/baseline.yaml", 8, 20),
        ("paper2/mtat/short_chunk_cnn/baseline.yaml", 8, 15),
        # the teacher systems keep the reference's east_*.json schedules
        ("paper1/mtat/east_final_vggish.yaml", 5, 12),
        ("paper1/openmic/east_final_vggish.yaml", 8, 15),
    ],
)
def test_baseline_schedules(configs: dict[str, dict], rel: str, plateau: int, stop: int) -> None:
    cfg = configs[rel]
    assert cfg["scheduler"] == {"factor": 0.2, "patience": plateau}
    assert cfg["early_stopping"] == {"patience": stop}


def test_openmic_baseline_keeps_the_papers_rho(configs: dict[str, dict]) -> None:
    # the reference's baseline config says rho 3; paper 1 section 4 says rho 7 (followed)
    assert configs["paper1/openmic/baseline.yaml"]["student"]["kwargs"]["rho"] == 7


def test_shipped_configs_load(configs: dict[str, dict]) -> None:
    for rel in ("paper1/openmic/baseline.yaml", "paper2/mtat/short_chunk_cnn/baseline.yaml"):
        load_config(CONFIGS / rel)


def test_paper2_sc_cnn_configs_build_the_9_1_m_student(configs: dict[str, dict]) -> None:
    kwargs = [c["student"]["kwargs"] for r, c in configs.items() if "short_chunk_cnn" in r]
    assert kwargs and all(k == {"shortcut_kernel": 1} for k in kwargs)
    student = create_student("short_chunk_cnn", 50, **kwargs[0])
    total = student.num_parameters(backbone_only=False)
    assert round(total / 1e6, 1) == 9.1  # paper 2, Table 2
    default = create_student("short_chunk_cnn", 50)  # what `east students list` shows
    assert default.num_parameters(backbone_only=False) == total


def test_cp_resnet_init_matches_the_reference_fixup() -> None:
    # reference initialize_weights_fixup: shortcut conv N(0, sqrt(2 / (k*k*C_out))),
    # first block conv N(0, L^-1/2 sqrt(2 / (k*k*C_out))), second block conv zero
    student = create_student("cp_resnet", 20)
    blocks = [b for stage in student.stages for b in stage if hasattr(b, "conv1")]
    assert len(blocks) == 12
    shortcuts = [b.shortcut[0].weight for b in blocks if hasattr(b.shortcut, "__getitem__")]
    assert [w.shape[0] for w in shortcuts] == [256, 512]
    for weight, expected in zip(shortcuts, (0.0884, 0.0625), strict=True):
        assert math.sqrt(2.0 / weight.shape[0]) == pytest.approx(expected, abs=1e-4)
        assert weight.std().item() == pytest.approx(expected, rel=0.03)
    for block in blocks:
        k = block.conv1.kernel_size
        std = 12**-0.5 * math.sqrt(2.0 / (k[0] * k[1] * block.conv1.out_channels))
        assert block.conv1.weight.std().item() == pytest.approx(std, rel=0.05)
        assert block.conv2.weight.abs().max().item() == 0.0


def _reference_epsilon_kd(zs: torch.Tensor, zt: torch.Tensor, tau: float) -> torch.Tensor:
    """The reference's soft KD (models/reg_loss_fn/kd.py): p_t (s_t − s_s) +
    log((1 − p_t + ε) / (1 − p_s + ε)) with s = z/τ, p = sigmoid(s), ε = 1e-9, mean, ×τ²."""
    st, ss = zt / tau, zs / tau
    pt, ps = st.sigmoid(), ss.sigmoid()
    eps = 1e-9
    return (pt * (st - ss) + ((1 - pt + eps) / (1 - ps + eps)).log()).mean() * tau**2


def test_kd_equals_the_reference_form_where_it_does_not_saturate() -> None:
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(8, 20, generator=g) * 6, torch.randn(8, 20, generator=g) * 6
    assert kd_loss(zs, zt, 2.0).item() == pytest.approx(
        _reference_epsilon_kd(zs, zt, 2.0).item(), abs=1e-4
    )


@pytest.mark.parametrize("z", [30.0, 40.0, 80.0])
def test_kd_stays_exact_where_the_reference_form_saturates(z: float) -> None:
    # deliberate difference (docs/fidelity.md): east keeps the exact binary KL in log-sigmoid
    # form; the epsilon form loses 1 − p_s to float32 rounding once z/τ ≳ 15
    zs, zt = torch.tensor([[z]]), torch.zeros(1, 1)
    exact = kd_loss(zs.double(), zt.double(), 2.0).item()
    assert kd_loss(zs, zt, 2.0).item() == pytest.approx(exact, rel=1e-6)
    assert abs(_reference_epsilon_kd(zs, zt, 2.0).item() - exact) > 0.5


def _reference_dcor_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 − dCor per frame over the batch, mean over frames, with the reference's 1e-12 / 1e-9
    guards (models/reg_loss_fn/feature_space_reg.py)."""
    x, y = x.transpose(0, 1), y.transpose(0, 1)  # (T, N, C)

    def centred(z: torch.Tensor) -> torch.Tensor:
        d = ((z.unsqueeze(-3) - z.unsqueeze(-2)) ** 2).sum(-1).add(1e-12).sqrt()
        return d - d.mean(-2, keepdim=True) - d.mean(-1, keepdim=True) + d.mean((-2, -1), True)

    a, b = centred(x), centred(y)
    r = (a * b).mean((-2, -1)) / ((a * a).mean((-2, -1)) * (b * b).mean((-2, -1)) + 1e-9).sqrt()
    return (1 - r).mean()


def _clip_level_loss(clip_frames: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    times = stride_frame_times(62, 1, 0.16)
    feats = [torch.randn(6, 62, 4, generator=g) for _ in range(3)]
    # the last two frames differ in kind, so dropping them changes the loss
    feats[2][:, 60:] = torch.randn(6, 2, 4, generator=g) * 50
    out = StudentOutput(torch.randn(6, 3, generator=g), feats, [times] * 3)
    panns = torch.randn(6, 1, 16, generator=g)
    spec = RegularizerSpec("dcor", "panns", stages="final", clip_frames=clip_frames)
    loss = DistillationLoss([spec], 0.9, feature_dims=[4, 4, 4])
    terms = loss(out, torch.zeros(6, 3), None, {"panns": TeacherBatch(panns)})
    return terms.reg, feats[2], panns


def test_clip_level_teacher_covers_60_frames_the_reference_way() -> None:
    reg, student, panns = _clip_level_loss(60)
    # reference: teacher repeat_interleave 60, student 62 frames cut to the shorter
    expected = _reference_dcor_loss(student[:, :60], panns.repeat_interleave(60, dim=1))
    assert reg.item() == pytest.approx(expected.item(), abs=1e-5)
    broadcast, _, _ = _clip_level_loss(None)  # east's other way: all 62 frames
    full = _reference_dcor_loss(student, panns.repeat_interleave(62, dim=1))
    assert broadcast.item() == pytest.approx(full.item(), abs=1e-5)
    assert abs(broadcast.item() - reg.item()) > 1e-3


def test_paper1_openmic_panns_configs_cover_60_frames(configs: dict[str, dict]) -> None:
    for system in ("east_final", "east_kd", "east_all", "east_cos_diff"):
        cfg = configs[f"paper1/openmic/{system}_panns.yaml"]
        assert cfg["teachers"][0]["clip_frames"] == 60
        specs = regularizers(load_config(CONFIGS / f"paper1/openmic/{system}_panns.yaml"))
        assert [s.clip_frames for s in specs if s.measure != "kd"] == [60]
    # MTAT: teacher_expand 30/15/15 equals Mobile FCN's frames, i.e. east's broadcast
    assert "clip_frames" not in configs["paper1/mtat/east_final_panns.yaml"]["teachers"][0]


# ----------------------------------------------------------------- OpenMIC log-mel mixup
def _frontend(**overrides: object):
    from east.features import frontend_for

    frontend = frontend_for("cp_resnet", **overrides).train()
    frontend.jitter_per_clip = True
    return frontend


def _multilabel(num_classes: int = 4) -> object:
    from types import SimpleNamespace

    return SimpleNamespace(multilabel=True, num_classes=num_classes)


def test_logmel_mixup_mixes_each_clips_own_masked_jittered_logmel() -> None:
    from east.train.trainer import logmel_mixup_batch

    g = torch.Generator().manual_seed(0)
    n = 3
    wave = torch.randn(2 * n, 8000, generator=g)  # clips 0..2, then their partners
    target = (torch.rand(2 * n, 4, generator=g) > 0.5).float()
    mask = torch.rand(2 * n, 4, generator=g) > 0.5
    emb = torch.randn(2 * n, 5, 6, generator=g)
    counts = torch.tensor([5, 4, 3, 5, 5, 2])
    teachers = [TeacherBatch(emb, torch.zeros(5, 2), counts)]
    frontend = _frontend(time_mask=8)
    torch.manual_seed(5)
    spec, tgt, msk, (mixed,) = logmel_mixup_batch(
        frontend, wave, target, mask, teachers, 0.3, np.random.default_rng(1), _multilabel()
    )
    torch.manual_seed(5)  # the same masks and jitter: each clip's own normalised log-mel
    own = frontend(wave)
    beta = torch.from_numpy(np.random.default_rng(1).beta(0.3, 0.3, size=n))
    lam = torch.maximum(beta, 1 - beta)
    w = lam.float().view(-1, 1, 1)
    torch.testing.assert_close(spec, w * own[:n] + (1 - w) * own[n:])
    # labels and teacher embeddings with the same λ (reference _mixup_data), masks OR-ed
    torch.testing.assert_close(
        tgt, lam.float()[:, None] * target[:n] + (1 - lam.float()[:, None]) * target[n:]
    )
    torch.testing.assert_close(mixed.embeddings, w * emb[:n] + (1 - w) * emb[n:])
    assert torch.equal(msk, mask[:n] | mask[n:])
    assert mixed.num_frames.tolist() == [5, 4, 2]
    assert bool((lam >= 0.5).all())


def test_logmel_mixup_masks_and_jitters_every_clip_on_its_own() -> None:
    wave = torch.randn(1, 8000, generator=torch.Generator().manual_seed(1)).repeat(6, 1)
    torch.manual_seed(0)
    masked = _frontend(fmin_aug_range=0.0, fmax_aug_range=0.0, freq_mask=48, time_mask=10)(wave)
    floor = (0.0 + 3.7) / 3.1  # the reference masks with 0 in the log domain
    where = {
        (tuple((m == floor).all(dim=1).tolist()), tuple((m == floor).all(dim=0).tolist()))
        for m in masked
    }
    assert len(where) > 1  # six copies of one clip, masked in different places
    jittered = _frontend(freq_mask=0, time_mask=0)
    torch.manual_seed(0)
    per_clip = jittered(wave)
    assert not torch.allclose(per_clip[0], per_clip[1])  # one mel range per clip
    jittered.jitter_per_clip = False  # east's waveform mode: one draw per batch
    per_batch = jittered(wave)
    torch.testing.assert_close(per_batch[0], per_batch[5])


def test_logmel_mixup_partners_come_from_the_whole_training_set(tmp_path: Path) -> None:
    from east.train.data import ClipStream, TeacherSource, collate
    from train_helpers import TINY_TEACHER_SR, make_cache, make_dataset

    manifest = make_dataset(tmp_path / "esc", num_classes=3, clips_per_class=4, seconds=0.5)
    cache = make_cache(manifest, tmp_path / "c.zarr", dim=4, chunk_clips=2)
    rows = np.arange(len(manifest))

    def rank(r: int) -> ClipStream:
        return ClipStream(
            manifest,
            rows,
            [TeacherSource(cache)],
            TINY_TEACHER_SR,
            training=True,
            shuffle=True,
            seed=2,
            buffer_size=2,
            rank=r,
            world_size=2,
            partners=True,
        )

    stream, outside, seen = rank(0), set(), set()
    for epoch in range(4):
        stream.set_epoch(epoch)
        items = list(stream)
        partners = {it["partner"]["row"] for it in items}
        outside |= partners - {it["row"] for it in items}
        seen |= partners
    assert outside, "partners only from this rank's share"
    assert seen == set(rows.tolist())  # the whole training set, not a buffer or a batch
    again = rank(0)
    again.set_epoch(3)  # seeded by seed and epoch: a resumed epoch gets the same partners
    assert [it["partner"]["row"] for it in again] == [it["partner"]["row"] for it in items]
    batch = collate(items[:3])
    assert batch["pairs"] == 3 and batch["wave"].shape[0] == 6
    assert batch["rows"][3:].tolist() == [it["partner"]["row"] for it in items[:3]]


def test_paper1_openmic_configs_mix_logmels_and_waveform_stays_the_default(
    configs: dict[str, dict],
) -> None:
    from east.config import AugmentConfig

    assert AugmentConfig().mixup_domain == "waveform"
    # every OpenMIC student run (the teacher_lr probes train on embeddings, no audio)
    openmic = [k for k in configs if k.startswith("paper1/openmic/") and "teacher_lr" not in k]
    assert len(openmic) == 21
    for name in openmic:
        assert configs[name]["augment"]["mixup_domain"] == "logmel"
        assert load_config(CONFIGS / name).augment.mixup_domain == "logmel"
    assert "mixup_domain" not in configs["paper1/mtat/east_final_vggish.yaml"]["augment"]


def test_logmel_mixup_training_resumes_to_the_same_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from east.train import trainer
    from east.train.trainer import train

    calls = []
    original = trainer.logmel_mixup_batch

    def counted(*args, **kwargs):
        calls.append(args[1].shape[0])  # clips + partners
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "logmel_mixup_batch", counted)
    from train_helpers import make_cache, make_dataset, tiny_config, write_config

    manifest = make_dataset(tmp_path / "esc", num_classes=3, clips_per_class=4, seconds=1.0)
    cache = make_cache(manifest, tmp_path / "c.zarr", dim=8)
    common = dict(
        augment={"mixup_alpha": 0.3, "mixup_domain": "logmel", "freq_mask": 8, "time_mask": 10},
        early_stopping={"patience": 50},
    )
    train_cfg = {"max_steps": 100, "batch_size": 3, "shuffle_buffer": 4}
    straight = write_config(
        tmp_path / "a.yaml",
        tiny_config(
            tmp_path / "esc",
            cache,
            tmp_path / "runs",
            train={**train_cfg, "max_epochs": 2},
            **common,
        ),
    )
    first = write_config(
        tmp_path / "b.yaml",
        tiny_config(
            tmp_path / "esc",
            cache,
            tmp_path / "runs",
            train={**train_cfg, "max_epochs": 1},
            **common,
        ),
    )
    a = train(load_config(straight, ["name=straight"]), progress=False)
    b = train(load_config(first, ["name=resumed"]), progress=False)
    saved = b / "config.yaml"
    cfg = yaml.safe_load(saved.read_text())
    cfg["train"]["max_epochs"] = 2
    saved.write_text(yaml.safe_dump(cfg, sort_keys=False))
    train(None, resume=b, progress=False)  # type: ignore[arg-type]

    def lines(run: Path) -> list[dict]:
        keep = ("epoch", "step", "train_loss", "val_loss")
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: r[k] for k in keep} for r in rows]

    assert lines(a) == lines(b) and len(lines(a)) == 2
    assert calls and set(calls) == {6}  # batches of 3 clips and their 3 partners
