"""Classification heads."""

from naslung.models.heads.angular import AngularHead

__all__ = ["AngularHead"]
