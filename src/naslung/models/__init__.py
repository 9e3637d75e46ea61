"""naslung.models: architecture spec, building blocks, heads, the model factory and cost measures."""

from naslung.models.attention import attention_maps, capture_attention
from naslung.models.factory import NASLungNet, build_model, model_from_config
from naslung.models.spec import MODEL_1, ArchSpec, coerce_spec, in_search_space, space_violations

__all__ = [
    "MODEL_1",
    "ArchSpec",
    "NASLungNet",
    "attention_maps",
    "build_model",
    "capture_attention",
    "coerce_spec",
    "in_search_space",
    "model_from_config",
    "space_violations",
]
