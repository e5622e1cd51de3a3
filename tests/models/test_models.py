"""Every registered model trains one step on a tiny batch, for 1 and 3 channels and three sizes;
heads, ImageNet weights and the hand-written architectures are checked one by one."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from imgpipe.errors import UserError
from imgpipe.models import create_model, list_models, register_model
from imgpipe.models.efficientnet import MBConv
from imgpipe.models.registry import get_model_entry

NUM_CLASSES = 5
ALL_MODELS = [
    "cnn",
    "cnn_custom",
    "cnn_deep",
    "cnn_spatial",
    "dummy",
    "efficientnet_se",
    "mlp",
    "mobilenetv3",
    "mobilenetv3_small",
    "resnet18",
    "resnet18_small",
    "resnet50",
]
WITH_WEIGHTS = [name for name in list_models() if get_model_entry(name).weights is not None]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_the_known_models():
    assert list_models() == ALL_MODELS
    assert WITH_WEIGHTS == ["mobilenetv3", "mobilenetv3_small", "resnet18", "resnet50"]


@pytest.mark.parametrize("image_size", [28, 32, 64])
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


@pytest.mark.parametrize("image_size", [29, 45])
@pytest.mark.parametrize("name", list_models())
def test_odd_image_sizes(name, image_size):
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=1, image_size=image_size).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, image_size, image_size)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", [name for name in list_models() if name != "dummy"])  # dummy has no layers
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


@pytest.mark.parametrize("name", list_models())
def test_head_is_the_output_layer(name):
    entry = get_model_entry(name)
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=1, image_size=28).eval()
    head = model.get_submodule(entry.head)
    if name == "dummy":  # the whole model is its head: one learnable logit per class
        assert [p.shape for p in head.parameters()] == [(NUM_CLASSES,)]
    else:
        assert isinstance(head, nn.Linear)
        assert head.out_features == NUM_CLASSES
    seen = []
    head.register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 28, 28))
    assert len(seen) == 1
    assert torch.equal(seen[0], logits)  # nothing comes after the head


def torchvision_reference(weights: WeightsEnum) -> nn.Module:
    """torchvision's own architecture for `weights`, randomly initialised (nothing is downloaded)."""
    (name,) = [n for n in torchvision.models.list_models() if torchvision.models.get_model_weights(n) is type(weights)]
    return torchvision.models.get_model(name, weights=None)


@pytest.mark.parametrize("name", WITH_WEIGHTS)
def test_imagenet_weights_fit_the_model(name):
    weights = get_model_entry(name).weights
    assert isinstance(weights, WeightsEnum)
    categories = len(weights.meta["categories"])
    model = create_model(name, num_classes=categories, in_channels=3, image_size=224)
    reference = torchvision_reference(weights)

    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in reference.state_dict().items()}
    assert count_params(model) == weights.meta["num_params"]
    model.load_state_dict(reference.state_dict())  # strict: what pretrained loading will do


def test_efficientnet_se_has_squeeze_excitation_and_depthwise_convs():
    model = create_model("efficientnet_se", num_classes=10, in_channels=1, image_size=32)
    blocks = [m for m in model.modules() if isinstance(m, MBConv)]
    se = [m for m in model.modules() if isinstance(m, torchvision.ops.SqueezeExcitation)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [m for m in convs if m.groups > 1 and m.groups == m.in_channels == m.out_channels]

    assert 6 <= len(blocks) <= 8
    assert len(se) == len(depthwise) == len(blocks)
    assert {m.kernel_size for m in depthwise} == {(3, 3), (5, 5)}
    assert all(isinstance(m.activation, nn.SiLU) and isinstance(m.scale_activation, nn.Sigmoid) for m in se)
    assert sum(block.residual for block in blocks) == 4  # stride 1 and same width in and out
    assert 100_000 <= count_params(model) <= 1_000_000


def test_resnet18_small_has_a_small_image_stem():
    model = create_model("resnet18_small", num_classes=10, in_channels=1, image_size=28)
    assert model.conv1.kernel_size == (5, 5)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.padding == (2, 2)
    assert isinstance(model.maxpool, nn.AdaptiveMaxPool2d)
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    assert stem(torch.randn(2, 1, 28, 28)).shape == (2, 64, 14, 14)


def test_dummy_learns_the_class_prior_and_ignores_the_input():
    torch.manual_seed(0)
    prior = torch.tensor([0.6, 0.3, 0.1])
    y = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)  # exactly the prior
    model = create_model("dummy", num_classes=3, in_channels=1, image_size=28)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model(torch.randn(len(y), 1, 28, 28)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        probs = model(torch.randn(8, 1, 28, 28)).softmax(dim=1)  # (8, 3)
    torch.testing.assert_close(probs, prior.expand(8, -1), atol=0.02, rtol=0)
    assert (probs == probs[0]).all()


def test_unknown_model_lists_the_registered_names():
    with pytest.raises(UserError) as info:
        create_model("vgg16", num_classes=3, in_channels=1, image_size=28)
    assert str(info.value) == f"params: model 'vgg16' is not registered; choose one of: {', '.join(ALL_MODELS)}"


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="model 'cnn' is already registered"):
        register_model("cnn", head="fc")(lambda **kwargs: nn.Identity())
    assert list_models() == ALL_MODELS


@pytest.mark.parametrize("name", ["mobilenetv3", "mobilenetv3_small"])
def test_mobilenet_batch_norm_momentum_suits_short_runs(name):
    # torchvision's 0.01 leaves eval-mode accuracy at chance after a few epochs (see mobilenet.py).
    model = create_model(name, num_classes=3, in_channels=1, image_size=32)
    momenta = {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta == {0.1}
