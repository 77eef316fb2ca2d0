"""An evaluation's plan and its words, without torch: modes, the paper's attacks, attack and configuration ids, cells.

Kept apart from :mod:`.run` (which imports torch) so that a producer starts
in a fraction of a second and its first batch reaches a queue before torch
could have loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

#: How a job runs on the workers: each stage on its own queue, or all of a batch's stages in one task.
STAGED, FUSED = "staged", "fused"
RUN_MODES = (STAGED, FUSED)


#: What a corpus stores adversarial images as: float, since 8 bits would erase a perturbation of eps 0.004.
CORPUS_DTYPES = ("float16", "float32")
#: Images per batch of a job unless its plan says otherwise.
DEFAULT_BATCH_SIZE = 250
#: The budget robustness benchmarks use on CIFAR-10 (8/255), as plans and reports write it.
EPS_8_255 = round(8 / 255, 6)
#: The published experiment's budgets (L-inf, in [0, 1] pixel units) ...
PAPER_EPS = (0.004, 0.007, 0.01)
#: ... and its attacks, in the order its tables give them: FGSM and BIM at each budget, then DeepFool.
_PAPER = tuple([(name, {"eps": eps}) for name in ("fgsm", "bim") for eps in PAPER_EPS] + [("deepfool", {})])


def paper_attacks() -> list[dict]:
    """The paper's seven attacks as plan entries (``{"name", "params"}``), fresh copies in the paper's order."""
    return [{"name": name, "params": dict(params)} for name, params in _PAPER]


@dataclass(frozen=True)
class ModelPath:
    """A model behind an input defence: one configuration of the grid, one path of the detector.

    ``defence`` None is the raw input. The grid writes a path ``model+defence``
    (:attr:`id`), the detector's cards and records ``model@defence``
    (:attr:`name`); both write ``raw`` for no defence.
    """

    model: str
    defence: str | None = None

    @classmethod
    def of(cls, config: dict) -> ModelPath:
        """The path of a plan's configuration (or an attack's ``through``): ``{"model", "defence"}``."""
        return cls(config["model"], config.get("defence") or None)

    @classmethod
    def named(cls, name: str) -> ModelPath:
        """The path a detector's card names, ``model@defence``."""
        model, sep, defence = name.partition("@")
        if not sep or not model or not defence:
            raise ValueError(f"a detector path is MODEL@DEFENCE (or MODEL@raw), got {name!r}")
        return cls(model, None if defence == "raw" else defence)

    @property
    def id(self) -> str:
        """``model+defence``: the grid's configuration id (messages, counts, reports)."""
        return f"{self.model}+{self.defence or 'raw'}"

    @property
    def name(self) -> str:
        """``model@defence``: the detector's path name (cards, records' ``signal``)."""
        return f"{self.model}@{self.defence or 'raw'}"

    def entry(self) -> dict:
        """The plan's form: ``{"model", "defence"}``."""
        return {"model": self.model, "defence": self.defence}


CLEAN = "clean"


@dataclass(frozen=True, eq=False)
class AttackSpec:
    """One attack of a plan: its name, parameters and, for an adaptive attack, the path it is crafted through.

    Built from a plan's entry once (:meth:`of`); its id, file-name slug and
    labels are derived here and never parsed back. Two specs are the same
    attack when their ids are (``eps=1`` and ``eps=1.0`` are two cells, as
    their ids say).
    """

    name: str
    params: tuple[tuple[str, object], ...] = ()  # sorted by name
    through: ModelPath | None = None

    @classmethod
    def of(cls, entry: dict) -> AttackSpec:
        """The spec of a plan entry ``{"name", "params", "through"?}``."""
        through = entry.get("through")
        return cls(entry["name"], tuple(sorted(entry.get("params", {}).items())),
                   ModelPath.of(through) if through else None)

    @classmethod
    def named(cls, name: str, **params) -> AttackSpec:
        """A transfer attack by name and parameters: ``AttackSpec.named("bim", eps=0.01)``."""
        return cls(name, tuple(sorted(params.items())))

    def entry(self) -> dict:
        """The plan's form: ``{"name", "params", "through"?}``."""
        entry = {"name": self.name, "params": self.kwargs}
        return {**entry, "through": self.through.entry()} if self.through else entry

    def __eq__(self, other) -> bool:
        return isinstance(other, AttackSpec) and self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def kwargs(self) -> dict:
        """The parameters, as the attack function takes them."""
        return dict(self.params)

    @property
    def adaptive(self) -> bool:
        """Crafted through a defended configuration (BPDA), not on the source model."""
        return self.through is not None

    def _text(self, param: Callable[[str, object], str]) -> str:
        """The name, each parameter as ``param`` writes it, and the path crafted through."""
        via = f" via {self.through.id}" if self.through else ""
        return " ".join([self.name, *(param(k, v) for k, v in self.params)]) + via

    @property
    def id(self) -> str:
        """A stable, readable id: ``bim eps=0.007``, ``pgd eps=0.01 via haar+haar``."""
        return self._text(lambda k, v: f"{k}={v}")

    @property
    def slug(self) -> str:
        """A folder name: ``bim_eps0.007``."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "", self.id.replace(" ", "_").replace("=", ""))

    @property
    def label(self) -> str:
        """The id with eps also in /255, as report tables show it: ``bim eps=0.007 (1.8/255)``."""
        return self._text(lambda k, v: f"eps={v} ({float(v) * 255:.2g}/255)" if k == "eps" else f"{k}={v}")

    @property
    def short_label(self) -> str:
        """A bar's label: the name and the parameters' values, ``bim 0.007``."""
        return " ".join([self.name, *(str(v) if k == "eps" else f"{k}={v}" for k, v in self.params)])


def paper_plan(batch_size: int = DEFAULT_BATCH_SIZE, *, adaptive: bool = False) -> dict:
    """The experiment of the paper as a plan.

    ``adaptive`` adds what the paper did not run: BIM and PGD at its eps and
    at 8/255, crafted through the full Haar defence (the Haar-trained model
    behind Haar reconstruction) with BPDA.
    """
    attack_list = [{"name": CLEAN, "params": {}}]
    attack_list += paper_attacks()
    if adaptive:
        through = {"model": "haar", "defence": "haar"}
        attack_list += [{"name": n, "params": {"eps": e}, "through": through}
                        for n in ("bim", "pgd") for e in (*PAPER_EPS, EPS_8_255)]
    configurations = [
        {"model": "standard", "defence": None},
        {"model": "standard", "defence": "haar"},
        {"model": "haar", "defence": "haar"},
        {"model": "standard", "defence": "daubechies"},
        {"model": "daubechies", "defence": "daubechies"},
    ]
    return {"source_model": "standard", "attacks": attack_list, "configurations": configurations, "batch_size": batch_size}


def model_plan(model: str, defence: str, twin: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, *,
               adaptive: bool = False) -> dict:
    """The paper's experiment on any model: its attacks crafted on ``model``, classified by ``model`` raw, behind
    ``defence``, and (with a DWT-trained ``twin``) by the twin behind ``defence``.

    ``adaptive`` adds BIM and PGD at the paper's eps and 8/255 crafted through the full defence (the twin behind
    the defence, else the model behind it) with BPDA, as :func:`paper_plan` does through Haar.
    """
    attack_list = [{"name": CLEAN, "params": {}}, *paper_attacks()]
    full = {"model": twin or model, "defence": defence}
    if adaptive:
        attack_list += [{"name": n, "params": {"eps": e}, "through": dict(full)}
                        for n in ("bim", "pgd") for e in (*PAPER_EPS, EPS_8_255)]
    configurations = [{"model": model, "defence": None}, {"model": model, "defence": defence}]
    if twin:
        configurations.append(dict(full))
    return {"source_model": model, "attacks": attack_list, "configurations": configurations, "batch_size": batch_size}


@dataclass
class Cell:
    """Correct/total of one (attack, configuration) pair."""

    attack: AttackSpec
    path: ModelPath
    correct: int = 0
    total: int = 0

    @property
    def configuration(self) -> str:
        return self.path.id

    @property
    def model(self) -> str:
        return self.path.model

    @property
    def defence(self) -> str | None:
        return self.path.defence

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else float("nan")

    def as_dict(self) -> dict:
        return {"attack": self.attack.id, "configuration": self.configuration, "model": self.model,
                "defence": self.defence, "correct": self.correct, "total": self.total, "accuracy": self.accuracy}
