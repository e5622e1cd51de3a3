"""Architectures: the registry (`registry`), one module per family, every family registered
(`catalog`: `create_model`, `list_models`), ImageNet weights (`pretrained`), the model file
(`checkpoint`)."""
