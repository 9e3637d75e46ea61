"""Run budgets of ``naslung demo`` and ``naslung reproduce``: one table, scaled by data, not by code.

A :class:`Budget` fixes how much work every stage does: the search (trials, minutes, epochs per candidate,
the corner of the space), the members and their final training, the ablations and the report's bootstrap.
``small`` is the demo (about 12-15 minutes on 2 CPU cores with the phantom and an empty cache; 8 epochs per
candidate: at 4, most candidates were still at the benign share of the inner validation split); ``paper`` is
section 4.1.3: 10 epochs per candidate and a search of about 8 hours that stops once POP's front stops
changing ("several iterations": we read 10 trials), the whole space of eq. 5-6, 9 members trained for 700
epochs with A-Softmax and early stopping on the inner validation split (``train.config.BUDGETS["paper"]``),
and the ablations over the best 5 architectures (section 4.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from naslung.models.spec import PAPER_CHANNELS, PAPER_DEPTH
from naslung.train.config import BUDGETS as TRAIN_BUDGETS


@dataclass(frozen=True)
class Budget:
    """How much work each stage does (see the module docstring; ``None`` disables that stop).

    Attributes:
        name: the table entry it came from (overrides keep the name and are listed in ``overrides``).
        search_trials, search_minutes, search_patience: when the POP search stops (trials trained,
            wall-clock minutes, trials without a change of the front).
        search_epochs: training epochs per candidate (paper: 10).
        search_channels, search_depth: the corner of the space searched (eq. 6; paper: all of it).
        latency_samples, latency_repeats: candidates timed to fit the latency model, timed runs each.
        members: architectures selected from the search (paper: 9).
        epochs: final training epochs per member and test fold (paper: 700).
        train_budget: a ``train.config.BUDGETS`` entry applied to the members' training (paper: early
            stopping), or None.
        ablation_archs: the best members whose architectures the ablations use (paper: 5).
        ablation_epochs: training epochs of every ablation variant.
        bootstrap: bootstrap replicates of the report's confidence intervals.
        overrides: the fields changed from the table entry, for the record.
    """

    name: str
    search_trials: int | None
    search_minutes: float | None
    search_patience: int | None
    search_epochs: int
    search_channels: tuple[int, ...]
    search_depth: tuple[int, int]
    latency_samples: int
    latency_repeats: int
    members: int
    epochs: int
    train_budget: str | None
    ablation_archs: int
    ablation_epochs: int
    bootstrap: int
    overrides: tuple[str, ...] = ()
    #: ``search select``'s floor (naslung.search.select): a member must beat chance on its inner validation.
    #: Settable for tests whose tiny searches cannot learn (``--set min_auc=0``).
    min_auc: float = 0.6
    min_balanced_accuracy: float = 0.6

    def __post_init__(self) -> None:
        object.__setattr__(self, "search_channels", tuple(int(c) for c in self.search_channels))
        object.__setattr__(self, "search_depth", (int(self.search_depth[0]), int(self.search_depth[1])))
        object.__setattr__(self, "overrides", tuple(self.overrides))
        for name in ("search_epochs", "latency_samples", "latency_repeats", "members", "epochs",
                     "ablation_archs", "ablation_epochs", "bootstrap"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"budget {self.name}: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("search_trials", "search_patience"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"budget {self.name}: {name} must be >= 1 or None, got {value}")
        if self.search_minutes is not None and not self.search_minutes > 0:
            raise ValueError(f"budget {self.name}: search_minutes must be positive, "
                             f"got {self.search_minutes}")
        if self.search_trials is None and self.search_minutes is None and self.search_patience is None:
            raise ValueError(f"budget {self.name}: the search needs a stop (search_trials, search_minutes "
                             "or search_patience)")
        if self.train_budget is not None and self.train_budget not in TRAIN_BUDGETS:
            raise ValueError(f"budget {self.name}: unknown train_budget {self.train_budget!r}; valid: "
                             f"{', '.join(TRAIN_BUDGETS)}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("search_channels", "search_depth", "overrides"):
            data[key] = list(data[key])
        return data

    def floor(self) -> dict[str, float]:
        """``search select``'s floor as :func:`naslung.search.select.selection_from_dir` takes it."""
        return {"min_auc": float(self.min_auc), "min_balanced_accuracy": float(self.min_balanced_accuracy)}

    def search_stop(self) -> str:
        """The search's stops in words, e.g. ``"6 trials"`` or ``"480 min, or 10 trials without ..."``."""
        parts = []
        if self.search_trials is not None:
            parts.append(f"{self.search_trials} trials")
        if self.search_minutes is not None:
            parts.append(f"{self.search_minutes:g} min")
        if self.search_patience is not None:
            parts.append(f"{self.search_patience} trials without a change of the front")
        return ", or ".join(parts)

    def override(self, changes: Mapping[str, Any] | None = None) -> Budget:
        """This budget with ``changes`` (``None`` clears a stop); unknown fields raise, naming the valid."""
        changes = dict(changes or {})
        known = {f.name for f in fields(self)} - {"name", "overrides"}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown budget fields {unknown}; valid: {', '.join(sorted(known))}")
        if not changes:
            return self
        return replace(self, **changes, overrides=tuple(dict.fromkeys([*self.overrides, *changes])))


_PAPER_TRAIN = TRAIN_BUDGETS["paper"]

#: The budgets by name; the only place their numbers live.
BUDGETS: dict[str, Budget] = {
    "small": Budget(name="small", search_trials=6, search_minutes=None, search_patience=None,
                    search_epochs=8, search_channels=(4, 8, 16, 32), search_depth=(3, 6), latency_samples=20,
                    latency_repeats=10, members=3, epochs=8, train_budget=None, ablation_archs=1,
                    ablation_epochs=8, bootstrap=200),
    "medium": Budget(name="medium", search_trials=30, search_minutes=None, search_patience=None,
                     search_epochs=10, search_channels=(4, 8, 16, 32, 64), search_depth=(3, 7),
                     latency_samples=40, latency_repeats=10, members=5, epochs=60, train_budget=None,
                     ablation_archs=3, ablation_epochs=30, bootstrap=1000),
    "paper": Budget(name="paper", search_trials=None, search_minutes=8 * 60.0, search_patience=10,
                    search_epochs=10, search_channels=PAPER_CHANNELS, search_depth=PAPER_DEPTH,
                    latency_samples=40, latency_repeats=10, members=9, epochs=int(_PAPER_TRAIN["epochs"]),
                    train_budget="paper", ablation_archs=5, ablation_epochs=int(_PAPER_TRAIN["epochs"]),
                    bootstrap=1000),
}


def budget_for(name: str, overrides: Mapping[str, Any] | None = None) -> Budget:
    """The budget ``name`` with ``overrides`` applied; an unknown name raises, listing the valid ones."""
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; valid: {', '.join(BUDGETS)}")
    return BUDGETS[name].override(overrides)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["search_trials=2", "search_minutes=null"]`` -> ``{"search_trials": 2, "search_minutes": None}``.

    :func:`naslung.options.parse_field_values` over :class:`Budget`'s fields (``null`` clears a stop);
    :meth:`Budget.override` checks the values.
    """
    from naslung.options import parse_field_values

    return parse_field_values(items, Budget, "budget", exclude=("name", "overrides"))
