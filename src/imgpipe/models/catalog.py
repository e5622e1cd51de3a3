"""Every model imgpipe has: importing this module registers each family, so a name given in
params.yaml or a model file is found. Ask for models here, not in `registry`, which holds only
those already imported.

A new family is a module in this package that calls `register_model`, imported below.
"""

from imgpipe.models import cnn, dummy, efficientnet, mlp, mobilenet, resnet  # noqa: F401  (registers the models)
from imgpipe.models.registry import create_model, get_model_entry, list_models

__all__ = ["create_model", "get_model_entry", "list_models"]
