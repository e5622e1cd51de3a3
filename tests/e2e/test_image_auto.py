"""`image.size: auto` and `image.channels: auto`: resolved from the training images, printed,
logged as params and stored in the model file; and a size that cannot fit is refused up front."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from support.datasets import write_photo_dataset, write_shapes_dataset
from support.project import assert_one_line_error, copy_prepared, prepare, stage_in_process, tiny_overrides

from imgpipe.core.params import ImageParams
from imgpipe.data.profile import SIZE_RANGE, auto_size, carries_colour, profile_images, resolve_image
from imgpipe.train.footprint import Footprint, check_fits, estimate

AUTO = {"size": "auto", "channels": "auto"}


@pytest.mark.parametrize(("side", "size"), [(8, 32), (32, 32), (63, 32), (64, 64), (120, 64), (375, 64), (4000, 64)])
def test_auto_size_rounds_down_to_a_step_within_the_range(side, size):
    assert auto_size(side) == size
    assert SIZE_RANGE[0] <= size <= SIZE_RANGE[1]


def test_colour_is_in_the_pixels_not_the_mode():
    grey = np.repeat(np.arange(64 * 64, dtype=np.uint8).reshape(1, 64, 64), 3, axis=0)
    noisy = grey.copy()
    noisy[0] = np.minimum(grey[0], 250) + 3  # JPEG-like chroma noise on a grey scan
    red = grey.copy()
    red[0, :, :8] = 255  # an eighth of the picture is clearly red
    assert not carries_colour(grey) and not carries_colour(noisy) and carries_colour(red)


def test_colour_photos_resolve_to_rgb_and_a_larger_size(tmp_path):
    photos = write_photo_dataset(tmp_path / "photos", per_class=4, width=160, height=120)
    profile = profile_images(sorted(photos.rglob("*.jpg")))
    image, said = resolve_image(ImageParams(**AUTO), profile)
    assert (profile.images, profile.short_side, profile.colour) == (8, 120, True)
    assert (image.size, image.channels) == (64, 3)
    assert said == [
        "image.size auto -> 64 (median shorter side 120 px of 8 training images; auto picks 32 to 64)",
        "image.channels auto -> 3 (the training images are in colour)",
    ]


def test_grey_scans_saved_as_rgb_resolve_to_one_channel(tmp_path):
    scans = write_photo_dataset(tmp_path / "scans", per_class=4, width=48, height=40, grey=True)
    image, _ = resolve_image(ImageParams(**AUTO), profile_images(sorted(scans.rglob("*.jpg"))))
    assert (image.size, image.channels) == (32, 1)


def test_explicit_values_are_kept(tmp_path):
    photos = write_photo_dataset(tmp_path / "photos", per_class=2)
    image, said = resolve_image(ImageParams(size=48, channels=1), profile_images(sorted(photos.rglob("*.jpg"))))
    assert (image.size, image.channels, said) == (48, 1, [])


def test_builtin_digits_still_resolve_to_one_channel_and_32_px(tmp_path):
    work = prepare(tmp_path / "digits", {"data": {"source": "builtin:digits", "limit": 3}, "image": AUTO}, stages=("download",))
    image, _ = resolve_image(ImageParams(**AUTO), profile_images(sorted((work / "data/raw").rglob("*.png"))))
    assert (image.size, image.channels) == (32, 1)


@pytest.fixture(scope="module")
def photo_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("auto")
    photos = write_photo_dataset(root / "photos", per_class=6, width=100, height=70)
    overrides = tiny_overrides(photos) | {"image": AUTO, "augment": {"rotations": [], "shear": 0}}
    overrides["train"] = {**overrides["train"], "epochs": 1}
    return prepare(root / "prepared", overrides)


def test_train_stage_prints_logs_and_stores_the_resolved_values(photo_project, tmp_path):
    work = copy_prepared(photo_project, tmp_path / "work")
    result = stage_in_process("train", cwd=work, check=True)
    assert "train: image.size auto -> 64 (median shorter side 70 px of" in result.stdout
    assert "train: image.channels auto -> 3 (the training images are in colour)" in result.stdout
    logged = yaml.safe_load((work / "metrics/train/params.yaml").read_text())
    assert logged == {"image": {"size": 64, "channels": 3}}
    model = torch.load(work / "models/model.pt", weights_only=True)
    assert (model["image_size"], model["channels"]) == (64, 3)
    stage_in_process("evaluate", cwd=work, check=True)  # evaluate and predict read them from the model file
    stage_in_process("predict", cwd=work, check=True)


def test_a_size_that_cannot_fit_is_refused_before_decoding(tmp_path):
    shapes = write_shapes_dataset(tmp_path / "shapes", per_class=4)
    work = prepare(tmp_path / "work", tiny_overrides(shapes) | {"image": {"size": 5000, "channels": 1}})
    result = stage_in_process("train", cwd=work)
    assert_one_line_error(result, "image.size 5000: training needs about", "GB", "lower image.size")
    assert not (work / "models").exists() or not any((work / "models").iterdir())


def test_the_estimate_grows_with_size_and_batch_and_names_the_disk(tmp_path):
    small = estimate("cnn", {}, 3, 3, 32, 16, 100)
    large = estimate("cnn", {}, 3, 3, 64, 16, 100)
    double = estimate("cnn", {}, 3, 3, 32, 32, 100)
    assert 3.5 < large.activations / small.activations < 4.5
    assert 1.9 < double.activations / small.activations < 2.1
    assert small.decoded == 100 * 3 * 32 * 32 and small.weights == large.weights
    on_disk = Footprint(activations=0, weights=0, decoded=1 << 60)
    with pytest.raises(Exception, match=f"the decoded images need .* GB beside the model in '{tmp_path}'"):
        check_fits(on_disk, torch.device("cpu"), tmp_path, 5000)


@pytest.mark.parametrize("model", ["cnn", "resnet18", "mlp"])
def test_scaled_activations_match_a_full_size_count_on_the_meta_device(model):
    from imgpipe.models.catalog import create_model
    from imgpipe.train.footprint import output_bytes

    with torch.device("meta"):
        full = create_model(model, num_classes=10, in_channels=3, image_size=96).eval()
    exact = output_bytes(full, torch.empty(8, 3, 96, 96, device="meta"))
    assert estimate(model, {}, 10, 3, 96, 8, 1).activations == pytest.approx(exact, rel=0.05)


def test_the_estimate_leaves_the_random_state_as_it_was():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    estimate("cnn", {}, 3, 3, 128, 16, 10)
    assert torch.equal(torch.get_rng_state(), before)  # the model the run builds next gets the seeded weights
