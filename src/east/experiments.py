"""The experiments of the two papers, as one table: which students, teachers and systems each
dataset is run with. ``configs/generate.py`` writes a config per cell, ``east.reproduce`` plans
a step per cell and seed, and ``east.report.tables`` lays out a table per experiment; all three
read it from here. (The hyperparameters of each cell live in ``configs/generate.py``.)
"""

from __future__ import annotations

from dataclasses import dataclass

from east.systems import system_info

__all__ = [
    "EXTENSION",
    "GENERALIZABILITY",
    "LIMITED",
    "PAPER1",
    "PAPER1_SYSTEMS",
    "PAPER1_TEACHERS",
    "PAPER2",
    "PAPER2_SYSTEMS",
    "Experiment",
    "Extension",
    "Generalizability",
    "LimitedData",
]

PAPER1_TEACHERS = ("vggish", "openl3", "passt", "panns")
# baseline first, then the Teacher_LR probe (KD and EAsT_KD read it), then the students
PAPER1_SYSTEMS = (
    "baseline",
    "teacher_lr",
    "kd",
    "east_cos_diff",
    "east_final",
    "east_all",
    "east_kd",
)
PAPER2_SYSTEMS = (
    "baseline",
    "teacher_lr",
    "east_fitnet",
    "east_fitnet_linear",
    "east_dc",
    "east_dc_linear",
)


@dataclass(frozen=True)
class Experiment:
    """One (dataset, student) of a paper: every system with every teacher (the baseline once).

    ``paper_teachers``: teachers the paper also reports that east cannot run (DisCogs has no
    public PyTorch weights); they are columns of the report's table, never runs.
    """

    paper: str  # "paper1" | "paper2"
    dataset: str
    student: str
    teachers: tuple[str, ...]
    systems: tuple[str, ...]
    paper_teachers: tuple[str, ...] = ()

    @property
    def teacher_systems(self) -> tuple[str, ...]:
        """The systems trained once per teacher (all but the baseline), probe first."""
        return tuple(s for s in self.systems if system_info(s).uses_teachers)

    @property
    def table_teachers(self) -> tuple[str, ...]:
        """The report's columns: no teacher (the baseline), ours, then the paper's others."""
        return ("none", *self.teachers, *self.paper_teachers)


PAPER1 = (
    Experiment("paper1", "openmic", "cp_resnet", PAPER1_TEACHERS, PAPER1_SYSTEMS),
    Experiment("paper1", "mtat", "mobile_fcn", PAPER1_TEACHERS, PAPER1_SYSTEMS),
)
PAPER2 = (
    Experiment(
        "paper2",
        "mtat",
        "short_chunk_cnn",
        ("passt", "panns", "mule"),
        PAPER2_SYSTEMS,
        ("discogs",),
    ),
    Experiment(
        "paper2", "mtat", "harmonic_cnn", ("passt", "panns", "mule"), PAPER2_SYSTEMS, ("discogs",)
    ),
    Experiment("paper2", "esc50", "short_chunk_cnn", ("passt", "mule"), PAPER2_SYSTEMS),
    Experiment("paper2", "fma_small", "short_chunk_cnn", ("passt", "mule"), PAPER2_SYSTEMS),
)


@dataclass(frozen=True)
class LimitedData:
    """Paper 1 §5.3: the paper-1 experiments on a fraction of the training clips."""

    fractions: tuple[float, ...]
    teachers: tuple[str, ...]
    systems: tuple[str, ...]


LIMITED = LimitedData(
    (0.25, 0.5, 0.75),
    ("vggish", "passt"),
    ("baseline", "teacher_lr", "kd", "east_cos_diff", "east_final"),
)


@dataclass(frozen=True)
class Generalizability:
    """Paper 2 Table 1: runs of ``source`` with ``teachers`` (and its baseline), evaluated on
    ``target`` through ``label_map`` (under the configs folder)."""

    source: Experiment
    teachers: tuple[str, ...]
    target: str
    label_map: str


GENERALIZABILITY = Generalizability(
    PAPER2[0], ("passt", "mule"), "openmic", "label_maps/mtat_to_openmic.yaml"
)


@dataclass(frozen=True)
class Extension:
    """Our extension (marked as such): the paper-2 systems with the offline tagger teachers,
    from the paper-2 configs of ``template_teacher`` with the tagger's cache and ``sets``."""

    datasets: tuple[str, ...]
    student: str
    teachers: tuple[str, ...]
    template_teacher: str
    sets: tuple[str, ...]


EXTENSION = Extension(
    ("esc50", "fma_small", "mtat"),
    "short_chunk_cnn",
    ("fcn-msd", "musicnn-jamendo"),
    "passt",
    # the taggers' post-ReLU embeddings are tiny (|x| ~ 0.003): z-score them per dimension, as
    # the ESC-50 tagger configs of configs/generate.py do (else the probe stays at chance)
    ("teachers.0.rescale=standardize",),
)
