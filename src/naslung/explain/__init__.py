"""naslung.explain: explanations of trained runs (paper sections 4.4-4.5). Runs are
loaded through :mod:`naslung.serving.runs`; prediction on new CT lives in :mod:`naslung.serving`.

* :mod:`~naslung.explain.attention`: stage-2 spatial attention, upsampled to the input (Fig. 5);
* :mod:`~naslung.explain.montage`: per-nodule attention PNGs and the montage;
* :mod:`~naslung.explain.features`: penultimate features over a dataset;
* :mod:`~naslung.explain.tsne`: t-SNE panels (Fig. 6);
* :mod:`~naslung.explain.dbi`: S0, S1, M01 and DBI (eq. 12-14, Table 4);
* :mod:`~naslung.explain.pipeline`: ``naslung explain``.
"""
