"""Bundled real-CT models: the registry of names and recipes (:mod:`naslung.zoo.registry`), their model
cards (:mod:`naslung.zoo.card`), their rebuild (:mod:`naslung.zoo.build`) and loading them for prediction
(:mod:`naslung.zoo.load`)."""
