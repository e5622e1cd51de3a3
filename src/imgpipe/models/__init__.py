"""Model registry: `create_model(name, num_classes=..., in_channels=..., image_size=..., **model_args)`.

Each family lives in its own module and registers its entries on import.
"""

from imgpipe.models.registry import create_model, list_models, register_model
from imgpipe.models import cnn, dummy, efficientnet, mlp, mobilenet, resnet  # noqa: F401  (registers the models)

__all__ = ["create_model", "list_models", "register_model"]
