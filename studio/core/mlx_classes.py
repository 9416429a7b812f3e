"""mlx-lm's model classes for a config.json, picked as `mlx_lm.load` picks them.

    model_classes(config) -> (Model, ModelArgs)

mlx-lm has no public function for this (only its private `utils._get_classes`),
so this follows its documented convention: the model type, remapped by the
public `MODEL_ARCHITECTURE_REMAPPING` (model type and architecture) or
`MODEL_REMAPPING` tables, names a module `mlx_lm.models.<type>` holding `Model`
and `ModelArgs`. tests/test_calibration_pass.py checks it agrees with what
`mlx_lm.utils.load_model` builds for every factory architecture.
"""

from __future__ import annotations

import importlib


def model_classes(config: dict) -> tuple[type, type]:
    """Raises ValueError when mlx-lm has no model of this type (KeyError without a model_type)."""
    from mlx_lm.utils import MODEL_ARCHITECTURE_REMAPPING, MODEL_REMAPPING

    model_type = config["model_type"]
    architectures = config.get("architectures") or ()
    if isinstance(architectures, str):
        architectures = (architectures,)
    remapped = next((MODEL_ARCHITECTURE_REMAPPING[(model_type, a)] for a in architectures
                     if (model_type, a) in MODEL_ARCHITECTURE_REMAPPING), None)
    model_type = remapped or MODEL_REMAPPING.get(model_type, model_type)
    try:
        module = importlib.import_module(f"mlx_lm.models.{model_type}")
    except ImportError as exc:
        raise ValueError(f"Model type {model_type} not supported.") from exc
    return module.Model, module.ModelArgs
