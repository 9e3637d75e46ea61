"""naslung.report: one self-contained HTML page of an experiment folder (``naslung report``).

* :mod:`~naslung.report.stats`: scan-grouped bootstrap CIs, paired bootstrap, calibration (ECE);
* :mod:`~naslung.report.discover`: what an experiment folder holds (runs, cv folders, figures, explanations);
* :mod:`~naslung.report.analysis`: the numbers of the page (models, ensembles, diameter baseline);
* :mod:`~naslung.report.html`: rendering, images inlined as base64;
* :mod:`~naslung.report.build`: ``build_report``.
"""
