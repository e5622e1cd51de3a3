"""Every registered model trains one step on a tiny batch, for 1 and 3 channels and two sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imgpipe.errors import UserError
from imgpipe.models import create_model, list_models, register_model

NUM_CLASSES = 5


def test_registry_lists_the_known_models():
    assert list_models() == ["cnn", "mlp", "resnet18"]


@pytest.mark.parametrize("image_size", [28, 32])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_forward_and_backward(name, in_channels, image_size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=in_channels, image_size=image_size)
    assert isinstance(model, nn.Module)
    model.train()
    x = torch.randn(2, in_channels, image_size, image_size)
    y = torch.tensor([0, NUM_CLASSES - 1])

    logits = model(x)

    assert logits.shape == (2, NUM_CLASSES)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    loss = nn.functional.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params)

    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_first_layer_takes_the_requested_channels(name):
    for in_channels in (1, 3):
        model = create_model(name, num_classes=NUM_CLASSES, in_channels=in_channels, image_size=28)
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))
        expected = in_channels if isinstance(first, nn.Conv2d) else in_channels * 28 * 28
        assert (first.in_channels if isinstance(first, nn.Conv2d) else first.in_features) == expected


@pytest.mark.parametrize("name", list_models())
def test_same_seed_same_initial_weights(name):
    torch.manual_seed(123)
    a = create_model(name, num_classes=3, in_channels=1, image_size=28).state_dict()
    torch.manual_seed(123)
    b = create_model(name, num_classes=3, in_channels=1, image_size=28).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_model_lists_the_registered_names():
    with pytest.raises(UserError) as info:
        create_model("vgg16", num_classes=3, in_channels=1, image_size=28)
    assert str(info.value) == "params: model 'vgg16' is not registered; choose one of: cnn, mlp, resnet18"


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="model 'cnn' is already registered"):
        register_model("cnn", head="fc")(lambda **kwargs: nn.Identity())
    assert list_models() == ["cnn", "mlp", "resnet18"]
