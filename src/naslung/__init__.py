"""naslung: efficient, explainable 3-D CNNs for pulmonary-nodule classification (NAS-Lung)."""

__version__ = "0.1.0"
