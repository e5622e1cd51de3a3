"""load_params: the real params.yaml loads; bad keys, types and values are one-line UserErrors."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from imgpipe.core.errors import UserError
from imgpipe.core.params import (
    AugmentParams,
    DataParams,
    ImageParams,
    Params,
    PredictParams,
    SplitParams,
    TrainParams,
    load_params,
)

REPO = Path(__file__).resolve().parents[2]

TOP_KEYS = "seed, task, model, model_args, data, image, augment, split, train, predict, export, cv"
TRAIN_KEYS = (
    "epochs, batch_size, lr, optimizer, momentum, nesterov, weight_decay, loss, label_smoothing, pos_weight, threshold, "
    "scheduler, lr_step_size, lr_gamma, lr_patience, warmup_epochs, clip_grad_norm, monitor, patience, "
    "pretrained, freeze, freeze_epochs, log_every, crop_padding, flip, device, amp, compile, "
    "nproc_per_node, nnodes, rdzv_endpoint, sync_batchnorm, class_weight, sampler, calibrate"
)


def real_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def with_override(tmp_path: Path, section: str | None, key: str, value) -> Path:
    params = real_params()
    if section is None:
        params[key] = value
    else:
        params[section][key] = value
    return write(tmp_path, params)


def error_of(path: Path) -> str:
    with pytest.raises(UserError) as info:
        load_params(path)
    message = str(info.value)
    assert "\n" not in message, "a UserError is one line"
    return message


def test_real_params_yaml_loads_with_its_values():
    raw = real_params()
    params = load_params(REPO / "params.yaml")

    assert isinstance(params, Params)
    assert params.seed == raw["seed"]
    assert params.model == raw["model"]
    assert params.model_args == raw["model_args"] == {}
    assert params.data == DataParams(source=raw["data"]["source"], sha256=raw["data"]["sha256"])
    assert params.image == ImageParams(**raw["image"])
    assert params.augment.rotations == tuple(float(a) for a in raw["augment"]["rotations"])
    assert all(type(a) is float for a in params.augment.rotations)
    assert params.augment == AugmentParams(
        rotations=tuple(float(a) for a in raw["augment"]["rotations"]),
        invert=raw["augment"]["invert"],
        shear=float(raw["augment"]["shear"]),
    )
    assert type(params.augment.shear) is float  # an int in YAML, a float in the dataclass
    assert params.split == SplitParams(**raw["split"])
    assert params.train == TrainParams(**raw["train"])
    assert params.predict == PredictParams(**raw["predict"])


def leaf_keys(raw: dict, prefix: str = "") -> list[str]:
    """Every key of a params mapping, sections recursed into: `train.epochs`, `model_args`."""
    keys = []
    for name, value in raw.items():
        if isinstance(value, dict) and name != "model_args":  # model_args is one value, a mapping
            keys += leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def differences(cls: type, raw: dict, loaded, default, prefix: str = "") -> list[str]:
    """Where params.yaml (`raw`, as `loaded`) and the dataclass defaults disagree, key by key."""
    fields = [f.name for f in dataclasses.fields(cls)]
    found = [f"{prefix}{name}: in the dataclass, not in params.yaml" for name in fields if name not in raw]
    found += [f"{prefix}{name}: in params.yaml, not in the dataclass" for name in raw if name not in fields]
    for name in (n for n in fields if n in raw):
        value, fallback = getattr(loaded, name), getattr(default, name)
        if dataclasses.is_dataclass(value):
            found += differences(type(value), raw[name] or {}, value, fallback, f"{name}.")
        elif value != fallback or type(value) is not type(fallback):
            found.append(f"{prefix}{name}: params.yaml has {raw[name]!r}, the dataclass default is {fallback!r}")
    return found


def test_params_yaml_values_are_the_dataclass_defaults():
    # One value per key: a key deleted from params.yaml must not silently change a run.
    raw = real_params()
    assert differences(Params, raw, load_params(REPO / "params.yaml"), Params()) == []


def test_deleting_any_key_from_params_yaml_changes_nothing(tmp_path):
    full = load_params(REPO / "params.yaml")
    keys = leaf_keys(real_params())
    assert "train.epochs" in keys and "model_args" in keys
    for key in keys:
        params = real_params()
        *sections, name = key.split(".")
        section = params
        for part in sections:
            section = section[part]
        del section[name]
        assert load_params(write(tmp_path, params)) == full, f"deleting {key} changed the params"


def test_model_args_is_a_mapping_of_plain_values(tmp_path):
    args = {"width": 64, "dropout": 0.2, "name": "x", "flag": True, "sizes": [1, 2], "none": None}
    params = load_params(with_override(tmp_path, None, "model_args", args))
    assert params.model_args == args
    assert load_params(with_override(tmp_path, None, "model_args", None)).model_args == {}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([64], "'model_args' must be a mapping (name: value), got [64]"),
        (64, "'model_args' must be a mapping (name: value), got 64"),
        ({"width": {"a": 1}}, "'model_args.width' must be a number, string, true/false, null or a list of those, got {'a': 1}"),
        ({"width": [[1]]}, "'model_args.width' must be a number, string, true/false, null or a list of those, got [[1]]"),
        ({"width": float("inf")}, "'model_args.width' must be a number, string, true/false, null or a list of those, got inf"),
        ({3: 1}, "'model_args' keys must be names, got 3"),
    ],
)
def test_model_args_of_the_wrong_shape_are_named(tmp_path, value, expected):
    path = with_override(tmp_path, None, "model_args", value)
    assert error_of(path) == f"{path}: {expected}"


@pytest.mark.parametrize(
    ("name", "source"), [("num_classes", "the classes in the data"), ("in_channels", "image.channels"), ("image_size", "image.size")]
)
def test_model_args_cannot_set_what_the_pipeline_sets(tmp_path, name, source):
    path = with_override(tmp_path, None, "model_args", {"width": 8, name: 3})
    assert error_of(path) == f"{path}: 'model_args.{name}' is not for model_args: imgpipe sets it from {source}"


def test_empty_file_gives_all_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("", encoding="utf-8")
    assert load_params(path) == Params()


def test_partial_section_keeps_other_defaults(tmp_path):
    path = write(tmp_path, {"train": {"epochs": 3}, "model": "mlp"})
    params = load_params(path)
    assert params.train == TrainParams(epochs=3)
    assert params.model == "mlp"
    assert params.split == SplitParams()


def test_unknown_top_level_key_is_named_with_allowed_keys(tmp_path):
    path = with_override(tmp_path, None, "epochs", 5)
    message = error_of(path)
    assert message == f"{path}: unknown key 'epochs'; allowed keys in top level: {TOP_KEYS}"


def test_unknown_nested_key_is_named_with_its_section_and_allowed_keys(tmp_path):
    path = with_override(tmp_path, "train", "foo", 1)
    message = error_of(path)
    assert message == f"{path}: unknown key 'train.foo'; allowed keys in train: {TRAIN_KEYS}"


def test_unknown_key_in_other_sections_lists_that_sections_keys(tmp_path):
    path = with_override(tmp_path, "image", "colour", True)
    message = error_of(path)
    assert "unknown key 'image.colour'" in message
    assert message.endswith("allowed keys in image: size, channels, normalize")


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        (None, "seed", "42", "'seed' must be an integer, got '42'"),
        ("train", "epochs", "ten", "'train.epochs' must be an integer, got 'ten'"),
        ("train", "epochs", 2.5, "'train.epochs' must be an integer, got 2.5"),
        ("train", "epochs", True, "'train.epochs' must be an integer, got True"),
        ("image", "normalize", 1, "'image.normalize' must be true or false, got 1"),
        ("augment", "invert", "yes please", "'augment.invert' must be true or false, got 'yes please'"),
        ("train", "lr", "fast", "'train.lr' must be a number, got 'fast'"),
        (None, "model", 3, "'model' must be a string, got 3"),
        ("augment", "rotations", 15, "'augment.rotations' must be a list, got 15"),
        ("augment", "rotations", [10, "x"], "'augment.rotations[1]' must be a number, got 'x'"),
        ("data", "sha256", 123, "'data.sha256' must be a string, got 123"),
    ],
)
def test_wrong_types_are_rejected_naming_the_key(tmp_path, section, key, value, expected):
    path = with_override(tmp_path, section, key, value)
    assert error_of(path) == f"{path}: {expected}"


def test_section_that_is_not_a_mapping_is_rejected(tmp_path):
    params = real_params()
    params["train"] = [1, 2]
    path = write(tmp_path, params)
    assert error_of(path) == f"{path}: 'train' must be a mapping, got list"


def test_null_optional_values_are_accepted(tmp_path):
    params = real_params()
    params["data"]["sha256"] = None
    params["predict"]["input"] = None
    params["augment"] = None  # a null section means its defaults
    params = load_params(write(tmp_path, params))
    assert params.data.sha256 is None
    assert params.predict.input is None
    assert params.augment == AugmentParams()


def test_split_fractions_must_sum_to_one(tmp_path):
    params = real_params()
    params["split"].update(train=0.8, val=0.2, test=0.1)
    path = write(tmp_path, params)
    message = error_of(path)
    assert "sum to 1" in message
    assert message == f"{path}: split.train + split.val + split.test = 1.1; they must sum to 1"


def test_split_fractions_that_sum_to_one_in_floating_point_are_accepted(tmp_path):
    params = real_params()
    params["split"].update(train=0.7, val=0.2, test=0.1)  # 0.7 + 0.2 + 0.1 != 1.0 exactly
    assert load_params(write(tmp_path, params)).split.train == 0.7


def test_split_fraction_out_of_range_is_rejected(tmp_path):
    params = real_params()
    params["split"].update(train=1.2, val=-0.1, test=-0.1)
    path = write(tmp_path, params)
    assert error_of(path) == f"{path}: 'split.train' is 1.2; allowed: a fraction in [0, 1]"


@pytest.mark.parametrize("channels", [2, 0, 4, "rgb"])
def test_image_channels_other_than_1_or_3_are_rejected(tmp_path, channels):
    path = with_override(tmp_path, "image", "channels", channels)
    assert error_of(path) == f"{path}: 'image.channels' is {channels!r}; allowed: auto, 1 or 3"


@pytest.mark.parametrize("channels", [1, 3])
def test_image_channels_1_and_3_are_accepted(tmp_path, channels):
    path = with_override(tmp_path, "image", "channels", channels)
    assert load_params(path).image.channels == channels


@pytest.mark.parametrize(
    ("section", "key", "value", "allowed"),
    [
        ("image", "size", 4, "auto, or an integer >= 8"),
        ("augment", "shear", 90, "degrees in [0, 90)"),
        ("train", "epochs", 0, "an integer >= 1"),
        ("train", "lr", 0, "a number > 0"),
    ],
)
def test_out_of_range_values_name_key_and_allowed_range(tmp_path, section, key, value, allowed):
    path = with_override(tmp_path, section, key, value)
    shown = float(value) if key in ("shear", "lr") else value
    assert error_of(path) == f"{path}: '{section}.{key}' is {shown!r}; allowed: {allowed}"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert error_of(path) == f"{path}: params file not found"


def test_a_folder_is_not_a_params_file(tmp_path):
    assert error_of(tmp_path) == f"{tmp_path}: params file not found"


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 42\nmodel: cnn\ntrain:\n  epochs: [1, 2\n  lr: 0.1\n", encoding="utf-8")
    message = error_of(path)
    assert re.fullmatch(re.escape(f"{path}: not valid YAML (line ") + r"\d+\)", message), message


def test_invalid_yaml_tab_indentation(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n\tepochs: 3\n", encoding="utf-8")
    assert error_of(path) == f"{path}: not valid YAML (line 2)"


def test_top_level_list_is_rejected(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- 1\n- 2\n", encoding="utf-8")
    assert error_of(path) == f"{path}: 'top level' must be a mapping, got list"


def test_unknown_keys_of_mixed_types_are_a_user_error(tmp_path):
    # YAML turns `2:` into an int key (and `yes:`/`on:` into bool keys); next to an unknown
    # string key the error must still be a UserError, not a TypeError from sorting.
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\n2: 3\nfoo: 1\n", encoding="utf-8")
    message = error_of(path)
    assert message.startswith(f"{path}: unknown key ")
    assert message.endswith(f"; allowed keys in top level: {TOP_KEYS}")


@pytest.mark.parametrize("value,expected", [(0.3, 0.3), ("tune", "tune"), ("0.25", 0.25)])
def test_threshold_is_a_probability_or_tune(tmp_path, value, expected):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"threshold": value}}))
    assert load_params(path).train.threshold == expected


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, "maybe"])
def test_threshold_outside_zero_one_is_named(tmp_path, value):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"threshold": value}}))
    shown = repr(value if isinstance(value, str) else float(value))
    assert error_of(path) == f"{path}: 'train.threshold' is {shown}; allowed: a probability in (0, 1) exclusive, or tune"


@pytest.mark.parametrize("text", [".nan", "true", "[0.5]"])
def test_threshold_of_the_wrong_type_is_named(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(f"train:\n  threshold: {text}\n")
    assert error_of(path).startswith(f"{path}: 'train.threshold' must be a number or a string, got ")


@pytest.mark.parametrize("key,value,allowed", [("task", "multi", "auto | multiclass | multilabel"),
                                               ("train.pos_weight", "balanced", "none | auto")])
def test_task_and_pos_weight_choices(tmp_path, key, value, allowed):
    path = tmp_path / "params.yaml"
    section, _, name = key.rpartition(".")
    path.write_text(yaml.safe_dump({section: {name: value}} if section else {name: value}))
    assert error_of(path) == f"{path}: '{key}' is '{value}'; allowed: {allowed}"
