"""Every registered model trains one step on a tiny batch, for 1 and 3 channels and three sizes;
heads, ImageNet weights and the hand-written architectures are checked one by one."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum

from imgpipe.core.errors import UserError
from imgpipe.models import registry
from imgpipe.models.catalog import create_model, get_model_entry, list_models
from imgpipe.models.efficientnet import MBConv
from imgpipe.models.registry import model_args_of, register_model

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


# model_args: each registered function's own keyword arguments, from params.yaml.

# What each model was before `model_args` existed (1 channel, 28 px, 5 classes, torch.manual_seed(0)):
# state-dict entries, elements, sha256 of its "key shape" lines (first 16 hex digits), and the sum
# of every |value| in float64. Empty model_args must keep all four: the default pipeline's committed
# metrics depend on exactly these architectures and initial weights.
BEFORE_MODEL_ARGS = {
    "cnn": (22, 110504, "b5b646914a0d4dc5", 3327.7882034674903),
    "cnn_custom": (17, 115438, "ccd038c012017ac8", 3674.837896057309),
    "cnn_deep": (38, 571179, "d414099251fde41b", 11162.571055826884),
    "cnn_spatial": (22, 619176, "436eebf5ea10dcc0", 8406.858199406783),
    "dummy": (1, 5, "2cf0711d89ba1246", 0.0),
    "efficientnet_se": (168, 177576, "f891a3b7018a97b8", 15878.555900323598),
    "mlp": (12, 640517, "7712891214ae6858", 13547.535537109277),
    "mobilenetv3": (312, 4232595, "fc512893b906dff6", 220360.90572418267),
    "mobilenetv3_small": (244, 1534839, "3cceed5a2ad136ae", 90384.39393397159),
    "resnet18": (122, 11182425, "43cd828bdb15db30", 229277.45350433007),
    "resnet18_small": (122, 11180889, "2f40ef604e2befb2", 229259.24125248456),
    "resnet50": (320, 23565178, "4834fda34c25e8d8", 768473.1889600588),
}
MODEL_ARGS = {  # what each model takes, with the defaults that rebuild it as before
    "cnn": {"width": 32, "dropout": 0.2},
    "cnn_custom": {"width": 25, "dropout": 0.25},
    "cnn_deep": {"width": 32, "dropout": 0.5},
    "cnn_spatial": {"width": 32, "dropout": 0.3},
    "dummy": {},
    "efficientnet_se": {"dropout": 0.2},
    "mlp": {"width": 512, "dropout": 0.0},
    "mobilenetv3": {"dropout": 0.2},
    "mobilenetv3_small": {"dropout": 0.2},
    "resnet18": {},
    "resnet18_small": {},
    "resnet50": {},
}
WITH_WIDTH = [name for name, args in MODEL_ARGS.items() if "width" in args]
WITH_DROPOUT = [name for name, args in MODEL_ARGS.items() if "dropout" in args]


def summary(model: nn.Module) -> tuple[int, int, str, float]:
    state = model.state_dict()
    shapes = "\n".join(f"{k} {tuple(v.shape)}" for k, v in state.items())
    total = sum(float(v.double().abs().sum()) for v in state.values())
    return len(state), sum(v.numel() for v in state.values()), hashlib.sha256(shapes.encode()).hexdigest()[:16], total


def user_error(name: str, **model_args) -> str:
    with pytest.raises(UserError) as info:
        create_model(name, num_classes=3, in_channels=1, image_size=28, **model_args)
    assert "\n" not in str(info.value), "a UserError is one line"
    return str(info.value)


def test_every_model_is_listed_with_its_arguments():
    assert sorted(MODEL_ARGS) == sorted(BEFORE_MODEL_ARGS) == list_models()
    assert {name: model_args_of(get_model_entry(name).build) for name in list_models()} == {
        name: list(args) for name, args in MODEL_ARGS.items()
    }


@pytest.mark.parametrize("name", list_models())
def test_default_model_args_build_the_models_as_before(name):
    torch.manual_seed(0)
    entries, elements, shapes, total = summary(create_model(name, num_classes=5, in_channels=1, image_size=28))
    assert (entries, elements, shapes) == BEFORE_MODEL_ARGS[name][:3]
    assert total == pytest.approx(BEFORE_MODEL_ARGS[name][3], rel=1e-9)  # same initial weights, same RNG draws


@pytest.mark.parametrize("name", list_models())
def test_spelling_out_the_defaults_changes_nothing(name):
    torch.manual_seed(0)
    implicit = create_model(name, num_classes=5, in_channels=1, image_size=28)
    torch.manual_seed(0)
    explicit = create_model(name, num_classes=5, in_channels=1, image_size=28, **MODEL_ARGS[name])
    assert repr(explicit) == repr(implicit)
    a, b = implicit.state_dict(), explicit.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_unknown_argument_is_named_with_those_the_model_takes():
    assert user_error("cnn", widht=64) == "params: model_args 'widht' is not an argument of model 'cnn'; it takes: width, dropout"
    assert user_error("efficientnet_se", width=64) == (
        "params: model_args 'width' is not an argument of model 'efficientnet_se'; it takes: dropout"
    )
    assert user_error("resnet18", dropout=0.1) == "params: model_args 'dropout' is not an argument of model 'resnet18'; it takes none"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"width": "wide"}, "params: 'model_args.width' must be an integer, got 'wide'"),
        ({"width": 64.0}, "params: 'model_args.width' must be an integer, got 64.0"),
        ({"width": True}, "params: 'model_args.width' must be an integer, got True"),
        ({"dropout": "some"}, "params: 'model_args.dropout' must be a number, got 'some'"),
        ({"dropout": [0.1]}, "params: 'model_args.dropout' must be a number, got [0.1]"),
        ({"width": 0}, "params: 'model_args.width' is 0; allowed: an integer >= 1"),
        ({"dropout": 1}, "params: 'model_args.dropout' is 1.0; allowed: a rate in [0, 1)"),
        ({"dropout": -0.5}, "params: 'model_args.dropout' is -0.5; allowed: a rate in [0, 1)"),
    ],
)
def test_wrong_values_are_one_line_errors(args, expected):
    assert user_error("cnn", **args) == expected


def test_mlp_width_keeps_its_last_hidden_layer():
    assert user_error("mlp", width=4) == (
        "params: 'model_args.width' is 4; allowed: an integer >= 8 (the last hidden layer has width / 8 units)"
    )


def test_yaml_numbers_become_the_annotated_float():
    # YAML's `0` is an int and PyYAML reads `1e-1` as a string; both are rates for a float argument.
    for value in (0, "1e-1"):
        model = create_model("cnn", num_classes=3, in_channels=1, image_size=28, dropout=value)
        assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [float(value)]


@pytest.mark.parametrize("name", WITH_WIDTH)
def test_width_scales_the_model(name):
    default = MODEL_ARGS[name]["width"]
    sizes = {}
    for width in (default // 2, default, default * 2):
        model = create_model(name, num_classes=NUM_CLASSES, in_channels=1, image_size=28, width=width)
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))
        assert (first.out_channels if isinstance(first, nn.Conv2d) else first.out_features) == width
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, NUM_CLASSES)
        sizes[width] = count_params(model)
    assert sizes[default // 2] < sizes[default] < sizes[default * 2]


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_dropout_is_the_rate_just_before_the_classifier(name):
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=1, image_size=28, dropout=0.37)
    head = get_model_entry(name).head
    order = [module for _, module in model.named_modules()]
    before_head = order[: order.index(model.get_submodule(head))]
    last_dropout = [m for m in before_head if isinstance(m, nn.Dropout)][-1]
    assert last_dropout.p == 0.37
    assert [m for m in order if isinstance(m, nn.Dropout) and m.p == 0.37] == [last_dropout]


def test_a_factory_taking_kwargs_accepts_any_argument():
    seen = {}

    def factory(*, num_classes: int, in_channels: int, image_size: int, **kwargs) -> nn.Module:
        seen.update(kwargs)
        return nn.Linear(in_channels, num_classes)

    register_model("_kwargs_test", head="")(factory)
    try:
        create_model("_kwargs_test", num_classes=2, in_channels=1, image_size=8, depth=3, act="gelu")
        assert seen == {"depth": 3, "act": "gelu"}
    finally:
        registry._MODELS.pop("_kwargs_test")
