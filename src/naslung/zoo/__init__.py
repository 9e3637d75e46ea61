"""Bundled real-CT models: the registry of names and recipes (:mod:`naslung.zoo.registry`), their model
cards (:mod:`naslung.zoo.card`), and their rebuild (:mod:`naslung.zoo.build`);
loading them for prediction is :mod:`naslung.serving.bundled`."""
