"""The fast training path: decode once into a memory-mapped file, gather batches ahead, augment
whole batches on the device, and the GPU options (AMP, channels_last, compile) on the CPU too.

None of it may change what the pipeline computes: the same pixels as the reference reader, the
same statistics, the same logits.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from support.messy import odd_images

from imgpipe.core.errors import UserError
from imgpipe.core.params import TrainParams
from imgpipe.data import decoding
from imgpipe.data.readers import load_pixels
from imgpipe.feed import tensors
from imgpipe.feed.batches import OnlineAugment, ahead, batches
from imgpipe.feed.device import amp_dtype, resolve_device
from imgpipe.feed.inference import predict_logits
from imgpipe.feed.tensors import LabelledImages, channel_stats, load_images, to_model_input
from imgpipe.models.catalog import create_model
from imgpipe.train.fit import Fit, make_fit
from imgpipe.train.loop import train_one_epoch

TRAIN = TrainParams(epochs=1, batch_size=8, lr=0.01)


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> list[Path]:
    """Every odd image of the messy dataset (CMYK, 16-bit, EXIF-rotated, palette, huge, tiny, ...),
    several times over, so the decode runs on several threads and chunks."""
    root = tmp_path_factory.mktemp("odd")
    paths = []
    for copy in range(6):
        for kind in ("circle", "cross"):
            for name, data in odd_images(kind).items():
                path = root / f"{copy}-{kind}-{name.replace('/', '_')}"
                path.write_bytes(data)
                paths.append(path)
    return paths


@pytest.mark.parametrize("channels", [1, 3])
def test_memory_mapped_decode_has_the_reference_readers_pixels(odd_files, tmp_path, monkeypatch, channels):
    monkeypatch.setattr(decoding, "DECODE_CHUNK", 16)  # several chunks, several threads
    images = load_images(odd_files, 24, channels, out=tmp_path / "pixels.npy")
    reference = np.stack([load_pixels(p, 24, channels) for p in odd_files])
    assert isinstance(np.load(tmp_path / "pixels.npy", mmap_mode="r"), np.memmap)
    assert np.array_equal(np.load(tmp_path / "pixels.npy"), reference)
    assert np.array_equal(images.numpy(), reference)
    assert np.array_equal(load_images(odd_files, 24, channels).numpy(), reference)  # in memory too


def test_an_unreadable_image_on_a_decoding_thread_is_one_user_error(odd_files, tmp_path, monkeypatch):
    monkeypatch.setattr(decoding, "DECODE_CHUNK", 16)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(UserError, match=r"broken\.png: cannot read image"):
        load_images([*odd_files[:20], broken, *odd_files[20:40]], 16, 1, out=tmp_path / "p.npy")


def test_channel_stats_in_chunks_match_the_whole_array_statistics(monkeypatch):
    images = torch.randint(0, 256, (1000, 3, 9, 9), dtype=torch.uint8)
    monkeypatch.setattr(tensors, "STATS_CHUNK", 64)
    mean, std = channel_stats(images)
    x = images.double().div(255).transpose(0, 1).flatten(1)
    assert mean == pytest.approx(x.mean(1).tolist(), abs=1e-9)
    assert std == pytest.approx(x.std(1).tolist(), abs=1e-9)


def test_random_crop_shifts_each_image_by_its_own_offset_with_zero_fill():
    images = torch.randint(1, 256, (16, 3, 10, 12), dtype=torch.uint8)  # no zeros of its own
    plan = OnlineAugment(crop_padding=3).plan(16, torch.Generator().manual_seed(1))
    out = OnlineAugment(crop_padding=3).apply(images, plan)
    padded = torch.nn.functional.pad(images, (3, 3, 3, 3))
    for i, (y, x, mirror) in enumerate(plan.tolist()):
        assert torch.equal(out[i], padded[i, :, y : y + 10, x : x + 12]) and mirror == 0
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert plan[:, :2].min() == 0 and plan[:, :2].max() == 6
    assert len({tuple(r) for r in plan[:, :2].tolist()}) > 8  # offsets differ per image


def test_flip_mirrors_about_half_the_images_and_keeps_the_rest():
    images = torch.randint(0, 256, (200, 1, 5, 7), dtype=torch.uint8)
    augment = OnlineAugment(flip=True)
    plan = augment.plan(200, torch.Generator().manual_seed(0))
    out = augment.apply(images, plan)
    for o, i, mirror in zip(out, images, plan[:, 2].tolist(), strict=True):
        assert torch.equal(o, i.flip(2) if mirror else i)
    assert 70 < plan[:, 2].sum() < 130


def test_augmentation_off_draws_no_random_numbers_so_default_training_is_unchanged(tmp_path):
    data = shapes_data(tmp_path)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, in_channels=1, image_size=16)
    fit = make_fit("mlp", model, TRAIN, True, data)
    assert not fit.augment.active
    train_one_epoch(fit, data, 8, generator, lambda loss: None)
    reference = torch.Generator().set_state(state)
    torch.randperm(len(data.targets), generator=reference)  # the epoch's shuffle, nothing else
    assert torch.equal(generator.get_state(), reference.get_state())


@pytest.mark.parametrize("prefetch", [False, True], ids=["in-line", "background-thread-as-on-cuda"])
def test_batches_come_in_order_with_their_targets_and_plans(prefetch):
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 2, 2).contiguous()
    targets = torch.arange(50) * 10
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    plan = lambda n: torch.full((n, 3), n)  # noqa: E731
    got = list(batches(images, targets, order, 8, torch.device("cpu"), plan, prefetch=prefetch))
    assert [len(y) for _, y, _ in got] == [8] * 6 + [2]
    assert torch.equal(torch.cat([x[:, 0, 0, 0] for x, _, _ in got]).long(), order)
    assert torch.equal(torch.cat([y for _, y, _ in got]), order * 10)
    assert [p[0, 0].item() for _, _, p in got] == [8] * 6 + [2]


def test_a_gathering_error_reaches_the_consumer_and_an_early_stop_ends_the_thread():
    def failing():
        yield 1
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        list(ahead(failing()))
    before = threading.active_count()
    for item in ahead(iter(range(1000))):
        if item == 3:
            break
    assert threading.active_count() == before


def test_predict_logits_from_a_memory_map_equal_the_direct_forward_pass(tmp_path):
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=3, in_channels=1, image_size=16).eval()
    pixels = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(300, 1, 16, 16))
    pixels[:] = np.random.default_rng(0).integers(0, 256, pixels.shape)
    images = torch.from_numpy(pixels)
    mean, std = [0.4], [0.3]
    with torch.no_grad():
        direct = torch.cat([model(to_model_input(images[i : i + 256].clone(), mean, std)) for i in (0, 256)])
    assert torch.equal(predict_logits(model, images, mean, std), direct)


def shapes_data(tmp_path: Path, n: int = 48) -> LabelledImages:
    generator = torch.Generator().manual_seed(0)
    return LabelledImages(torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=generator),
                          torch.arange(n) % 3)


def one_epoch(fit: Fit, data: LabelledImages) -> float:
    losses = []
    loss = train_one_epoch(fit, data, 8, torch.Generator().manual_seed(0), losses.append)
    assert all(t.dim() == 0 for t in losses) and len(losses) == 6
    return loss


@pytest.mark.parametrize(
    "change",
    [
        {"amp": torch.bfloat16},
        {"amp": torch.float16, "scaler": torch.amp.GradScaler("cpu")},
        {"channels_last": True},
        {"augment": OnlineAugment(crop_padding=2, flip=True)},
    ],
    ids=["bf16-autocast", "fp16-with-loss-scaling", "channels_last", "online-augmentation"],
)
def test_the_gpu_path_options_train_on_the_cpu_too(tmp_path, change):
    data = shapes_data(tmp_path)
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=3, in_channels=1, image_size=16)
    fit = make_fit("cnn", model, TRAIN, True, data)
    if change.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    before = [p.detach().clone() for p in model.parameters()]
    fit = dataclasses.replace(fit, **change)
    loss = one_epoch(fit, data)
    assert np.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_fp32_training_is_unchanged_by_the_options_that_only_apply_on_cuda(tmp_path):
    """amp on, no GPU: the CPU trains in full fp32, exactly as with amp off."""
    data = shapes_data(tmp_path)
    losses = []
    for amp in (True, False):
        torch.manual_seed(0)
        model = create_model("cnn", num_classes=3, in_channels=1, image_size=16)
        fit = make_fit("cnn", model, dataclasses.replace(TRAIN, amp=amp, device="cpu"), True, data)
        assert fit.amp is None and not fit.channels_last and fit.device.type == "cpu"
        losses.append(one_epoch(fit, data))
    assert losses[0] == losses[1]


def test_device_and_amp_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert amp_dtype(torch.device("cpu"), True) is None
    assert amp_dtype(torch.device("cuda"), False) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu_is_a_one_line_error():
    with pytest.raises(UserError, match="train.device is cuda but torch sees no CUDA GPU"):
        resolve_device("cuda")


def test_compiled_model_trains_and_saves_plain_weights(tmp_path):
    data = shapes_data(tmp_path)
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=3, in_channels=1, image_size=16)
    fit = make_fit("mlp", model, dataclasses.replace(TRAIN, compile=True), True, data)
    assert fit.wrapped is not None
    assert np.isfinite(one_epoch(fit, data))
    assert not any(k.startswith("_orig_mod") for k in fit.model.state_dict())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_training_uses_amp_channels_last_and_evaluation_matches_the_cpu(tmp_path):
    data = shapes_data(tmp_path, n=64)
    torch.manual_seed(0)
    model = create_model("resnet18_small", num_classes=3, in_channels=1, image_size=16)
    fit = make_fit("resnet18_small", model, TRAIN, True, data)
    assert fit.device.type == "cuda" and fit.amp is not None and fit.channels_last
    assert np.isfinite(one_epoch(fit, data))
    gpu = predict_logits(model, data.images, fit.mean, fit.std)
    cpu = predict_logits(model.cpu(), data.images, fit.mean, fit.std)
    assert torch.allclose(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_train_decodes_into_a_memory_map_beside_the_model_and_removes_it(prepared_shapes, tmp_path, monkeypatch):
    from imgpipe.core.params import ImageParams
    from imgpipe.train.stage import train

    seen = []
    real = tensors.load_images

    def spy(paths, size, channels, desc="decode", out=None):
        seen.append(out)
        return real(paths, size, channels, desc, out)

    monkeypatch.setattr(tensors, "load_images", spy)
    model_out = tmp_path / "models" / "model.pt"
    train("cnn", ImageParams(size=16), TrainParams(epochs=1, batch_size=4), 0, prepared_shapes / "data/annotations.csv",
          prepared_shapes / "data/augmented", model_out, tmp_path / "metrics")
    assert [out.name for out in seen] == ["train.npy", "val.npy"]
    assert all(out.parent.parent == model_out.parent for out in seen)  # on the model's disk, not /tmp
    assert sorted(p.name for p in model_out.parent.iterdir()) == ["model.pt"]  # scratch removed

