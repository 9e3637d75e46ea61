"""The ``schema`` strings of naslung's files, and the few other file contracts, with no heavy import.

Each JSON or HDF5 file naslung writes carries ``"schema": "naslung-..."``. The module that owns a file writes
and checks its schema from here; code that only recognises files (``naslung.outputs``, ``naslung.report``)
imports this module instead of the owner, so that recognising a file never imports torch or h5py. A new
file kind adds its schema here, beside the others.
"""

from __future__ import annotations

# ---- data -----------------------------------------------------------------------------------------------
#: A crop dataset (HDF5 attribute ``schema``; :mod:`naslung.data.dataset`).
CROPS = "naslung-crops"
#: ``phantom.json`` of a LIDC phantom tree (:mod:`naslung.data.phantom.manifest`).
PHANTOM = "naslung-phantom"
#: The list of scans ``data prepare`` refused (:mod:`naslung.data.prepare_guards`).
PREPARE_ERRORS = "naslung-prepare-errors"
#: The eight LIDC characteristics, averaged over readers, in a label table.
CHARACTERISTICS = (
    "subtlety", "internalStructure", "calcification", "sphericity",
    "margin", "lobulation", "spiculation", "texture",
)
#: The columns of a label table (``naslung data labels``; :mod:`naslung.data.labels`).
LABEL_COLUMNS = (
    "seriesuid", "subset", "nodule_id", "n_readers", "malignancy_mean", "malignancy_median",
    "malignancy_ratings", "label", "diameter_mm", "centroid_x_vox", "centroid_y_vox", "centroid_z_vox",
    "coordX", "coordY", "coordZ", *CHARACTERISTICS,
)

# ---- models ---------------------------------------------------------------------------------------------
#: The ONNX metadata key that holds the model's config (:mod:`naslung.models.onnx`).
ONNX_METADATA_KEY = "naslung_model_config"

# ---- train ----------------------------------------------------------------------------------------------
#: A run folder's ``config.json`` (:mod:`naslung.train.engine` writes it, :mod:`naslung.train.rundir` reads).
TRAIN_CONFIG = "naslung-train-config"
#: A run folder's ``result.json`` (:mod:`naslung.train.result`).
TRAIN_RESULT = "naslung-train-result"
#: A checkpoint's ``schema`` entry (:mod:`naslung.train.checkpoint`).
CHECKPOINT = "naslung-checkpoint"
#: A cv folder's ``cv.json`` (:mod:`naslung.train.cv`).
CV = "naslung-cv"
#: ``ablation.json`` (:mod:`naslung.train.ablation`).
ABLATION = "naslung-ablation"

# ---- search ---------------------------------------------------------------------------------------------
#: One record of ``trials.jsonl`` (:mod:`naslung.search.records`).
SEARCH_TRIAL = "naslung-search-trial"
#: ``search_config.json``.
SEARCH_CONFIG = "naslung-search-config"
#: ``pareto.json``.
SEARCH_PARETO = "naslung-search-pareto"
#: ``members.json`` (:mod:`naslung.search.members`).
MEMBERS = "naslung-members"
#: ``latency_model.json`` (:mod:`naslung.search.latency_model`).
LATENCY_MODEL = "naslung-latency-model"

# ---- ensemble, explain, zoo, pipeline ----------------------------------------------------------------------
#: The JSON beside an ``ensemble-size`` plot.
ENSEMBLE_SIZE = "naslung-ensemble-size"
#: ``explain.json`` (:mod:`naslung.explain.pipeline`).
EXPLAIN = "naslung-explain"
#: The errors file of study prediction.
STUDY_ERRORS = "naslung-study-errors"
#: ``naslung evaluate --data --out``: a model re-run on a dataset (:mod:`naslung.serving.evaluate`).
EVALUATION = "naslung-evaluation"
#: A bundled model's ``card.json`` (:mod:`naslung.zoo.card`).
MODEL_CARD = "naslung-model-card"
#: ``reproduce.json``, the status of ``naslung reproduce`` (:mod:`naslung.pipeline.status`).
REPRODUCE = "naslung-reproduce"
#: ``results.json`` of ``naslung reproduce``.
REPRODUCE_RESULTS = "naslung-reproduce-results"
