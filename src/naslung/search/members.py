"""The members file: the contract between a search and the training of its chosen architectures.

``naslung search select --out S`` writes ``S/members.json``::

    {"schema": "naslung-members", "schema_version": 1,
     "search": "<search folder>", "exclude_folds": [1, 2, 3, 4, 5], "dataset_fingerprint": "...",
     "selection": {"top": 9, "weight": 0.02, "min_auc": 0.6, "dropped": [...], ...},
     "members": [{"name": "m01-...", "config": {<full TrainConfig>}, "record": {<selection record>}}, ...]}

Each member's ``config`` is the full :class:`~naslung.train.config.TrainConfig` the search trained that
candidate with (:meth:`SearchConfig.candidate <naslung.search.config.SearchConfig.candidate>`: the search's
training recipe with the candidate's ``arch`` and seed, as the search's evaluator used it), with the final
epoch budget when ``select --epochs`` asks for one. ``naslung cv --members``, ``naslung ensemble`` and the
demo read it, so nobody pastes specs between the stages. ``exclude_folds`` travels with it: training a
member on a fold that the search saw is refused (:mod:`naslung.protocol`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naslung import schemas
from naslung.atomic import read_json, write_json_atomic
from naslung.train.config import TrainConfig

if TYPE_CHECKING:
    from naslung.data.dataset import NoduleDataset
    from naslung.progress import Progress
    from naslung.train.cv import CVResult

MEMBERS = "members.json"
SCHEMA = schemas.MEMBERS
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Member:
    """One selected architecture and the exact configuration to train it with."""

    name: str
    config: TrainConfig
    record: dict[str, Any]


@dataclass(frozen=True)
class Members:
    """A members file read back."""

    path: Path
    search: str
    exclude_folds: tuple[int, ...]
    dataset_fingerprint: str | None
    members: tuple[Member, ...]


def member_name(rank: int, spec: str) -> str:
    """``m01-4-4_4-4_4-8_8-8``: the rank, then the spec as a folder name (digits, dashes, underscores)."""
    body = re.sub(r"[^0-9,\[\]]", "", spec)
    stages = re.findall(r"\[([0-9,]*)\]", body[1:-1])
    stem = body[1:-1].split(",[", 1)[0].replace(",", "-")
    return f"m{rank:02d}-{stem}_" + "_".join(s.replace(",", "-") for s in stages)


def write_members(search_dir: str | Path, chosen: list[dict[str, Any]], *, top: int, weight: float,
                  epochs: int | None = None, selection: dict[str, Any] | None = None) -> Path:
    """Write ``search_dir/members.json`` for the ``chosen`` selection records (``select_members``).

    Reads the search's settings in either form of ``search_config.json`` (nested, or the flat form of older
    searches, whose unrecorded training fields take today's TrainConfig defaults). ``selection``
    (:meth:`naslung.search.select.Selection.to_dict`: the floor and the trials it dropped) joins the file's
    ``selection`` entry.
    """
    from naslung.search.records import read_config, read_trials
    from naslung.search.resume import saved_config

    search_dir = Path(search_dir)
    saved = read_config(search_dir)
    search = saved_config(search_dir)
    seeds = {r["index"]: r.get("seed") for r in read_trials(search_dir)}
    members = []
    for record in chosen:
        train = search.candidate(record["spec"], int(seeds.get(record["index"]) or 0))
        if epochs is not None:
            train = train.replace(epochs=int(epochs))
        members.append({"name": member_name(int(record["rank"]), record["spec"]), "config": train.to_dict(),
                        "record": record})
    payload = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "search": str(search_dir),
        "exclude_folds": list(search.exclude_folds),
        "dataset_fingerprint": (saved.get("dataset") or {}).get("fingerprint"),
        "selection": {**(selection or {}), "top": int(top), "weight": float(weight), "epochs": epochs},
        "members": members,
    }
    return write_json_atomic(search_dir / MEMBERS, payload)


def read_members(path: str | Path) -> Members:
    """Read a members file (or the ``members.json`` of a search folder); errors name the file."""
    path = Path(path)
    if path.is_dir():
        path = path / MEMBERS
    data = read_json(path, "members file")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a naslung members file (run `naslung search select` to write one)")
    if int(data.get("schema_version", 0)) > SCHEMA_VERSION:
        raise ValueError(f"{path}: members file version {data.get('schema_version')} is newer than "
                         "this naslung")
    members = []
    for i, item in enumerate(data.get("members") or []):
        try:
            members.append(Member(name=str(item["name"]), config=TrainConfig.from_dict(item["config"]),
                                  record=dict(item.get("record") or {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: member {i + 1} is malformed ({exc})") from None
    if not members:
        raise ValueError(f"{path}: lists no member")
    return Members(path=path, search=str(data.get("search", "")),
                   exclude_folds=tuple(int(f) for f in data.get("exclude_folds") or ()),
                   dataset_fingerprint=data.get("dataset_fingerprint"), members=tuple(members))


def run_members_cv(
    dataset: NoduleDataset,
    members: Members,
    folds: Sequence[int],
    out_dir: str | Path,
    *,
    budget: str | None = None,
    epochs: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    source: str | None = None,
    jobs: int = 1,
) -> dict[str, CVResult]:
    """:func:`naslung.train.cv.run_cv` for every member of a members file, in ``out_dir/<member name>``.

    Each member trains with its own recorded :class:`TrainConfig` (the search's settings); only the budget
    (``budget``/``epochs``), ``threads`` and ``device`` may change. Refused before any training: a test fold
    the search trained or validated on (:mod:`naslung.protocol`), and a dataset other than the search's.
    ``jobs > 1`` trains that many (member, fold) runs at once, as in :func:`~naslung.train.cv.run_cv`.
    """
    from naslung.fingerprint import check_same, fingerprint_of
    from naslung.protocol import check_test_fold_unseen
    from naslung.train.cv import run_cv, validate_cv
    from naslung.train.rundir import CVDir

    for fold in folds:
        check_test_fold_unseen(fold, members.exclude_folds, where=f"search {members.search}")
    if members.dataset_fingerprint:
        check_same(members.dataset_fingerprint, fingerprint_of(dataset), members.path,
                   "train its members")
    configs = {m.name: TrainConfig.resolve(m.config.to_dict(), budget, epochs=epochs, num_threads=threads,
                                           device=device) for m in members.members}
    for config in configs.values():
        validate_cv(dataset, config, folds)
    out = Path(out_dir)
    if jobs > 1:
        from naslung.train.parallel import fit_side_by_side

        fit_side_by_side(source or "", [(config, int(f), CVDir(out / name).run(f).path)
                                        for name, config in configs.items() for f in folds], jobs, progress)
    return {name: run_cv(dataset, config, folds, out / name, progress=progress, source=source)
            for name, config in configs.items()}
