"""naslung.serving: prediction with trained models on new CT (``naslung predict``, ``evaluate``).

* :mod:`~naslung.serving.runs`: load a finished run for inference (``load_run_model``) and its crop settings;
* :mod:`~naslung.serving.bundled`: a bundled model (:mod:`naslung.zoo`) loaded for prediction;
* :mod:`~naslung.serving.predict`: ``naslung predict`` on a CT file and world coordinates;
* :mod:`~naslung.serving.study`: ``naslung predict --scans`` over a whole LUNA16-style study.

Layer: beside :mod:`naslung.explain` (its overlays draw explain's attention maps, and explain loads runs
through :mod:`~naslung.serving.runs`); it may import data, models, train, ensemble and zoo, which never
import it.
"""
