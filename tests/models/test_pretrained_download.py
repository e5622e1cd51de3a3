"""`train.pretrained: imagenet` downloads missing weights into the torch cache, as torchvision does.

The weights come from a real HTTP server on 127.0.0.1: a test-only model, the `cnn` architecture,
is registered with a torchvision weights enum whose URL points at it, so the code under test
downloads exactly as it would from download.pytorch.org. Nothing is fetched from the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from support.project import copy_prepared, stage_in_process
from torchvision.models import Weights, WeightsEnum

from imgpipe.core.errors import UserError
from imgpipe.models import registry
from imgpipe.models.catalog import create_model, get_model_entry
from imgpipe.models.checkpoint import load_checkpoint
from imgpipe.models.pretrained import imagenet_cache_file, load_pretrained
from imgpipe.models.registry import register_model

MODEL = "_cnn_served_weights"  # registered by the `served` fixture only
ENUM = "ServedCnn_Weights"  # the enum torchvision's get_weight finds it under, for that fixture only


def state_dict_bytes(seed: int) -> bytes:
    """A real `cnn` state dict for 3-channel input and 10 classes, as torch.save writes it."""
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save(create_model("cnn", num_classes=10, in_channels=3, image_size=28).state_dict(), buffer)
    return buffer.getvalue()


@dataclass
class Served:
    """What the server sends for every GET, and how many GETs it answered."""

    body: bytes
    send: int | None = None  # bytes actually sent before closing (None: all of them)
    status: int = 200
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[tuple[Served, int]]:
    """(what it serves, port): an http.server on 127.0.0.1 in a thread."""
    served = Served(b"")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            served.requests.append(self.path)
            self.send_response(served.status)
            self.send_header("Content-Length", str(len(served.body)))  # all of it, even when cut off
            self.end_headers()
            self.wfile.write(served.body[: served.send])
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=partial(httpd.serve_forever, poll_interval=0.05), daemon=True)
    thread.start()
    yield served, httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")  # no torch.hub.set_dir in this process
    return tmp_path / "torch" / "hub" / "checkpoints"


@contextmanager
def register_served_model(url: str, monkeypatch) -> Iterator[None]:
    """Register MODEL: the `cnn` factory and head, its ImageNet weights at `url`."""
    transforms = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms  # ImageNet's mean/std
    weights = WeightsEnum(ENUM, {"IMAGENET1K_V1": Weights(url=url, transforms=transforms, meta={})})
    monkeypatch.setattr(torchvision.models, ENUM, weights, raising=False)  # where get_weight looks
    cnn = get_model_entry("cnn")
    register_model(MODEL, head=cnn.head, weights=f"{ENUM}.IMAGENET1K_V1")(cnn.build)
    try:
        yield
    finally:
        registry._MODELS.pop(MODEL)


@pytest.fixture(params=["hashed"])
def served(request, server, torch_home, monkeypatch) -> Iterator[Served]:
    """MODEL registered with weights at the local server, named `cnn_served-<sha256[:8]>.pth` as
    torchvision's are (param "plain": `cnn_served.pth`, no hash); the server holds the real file."""
    served, port = server
    served.body = state_dict_bytes(seed=0)
    sha = hashlib.sha256(served.body).hexdigest()
    name = f"cnn_served-{sha[:8]}.pth" if request.param == "hashed" else "cnn_served.pth"
    with register_served_model(f"http://127.0.0.1:{port}/models/{name}", monkeypatch):
        yield served


def test_missing_weights_are_downloaded_with_a_progress_bar_then_read_from_the_cache(served, torch_home, capsys):
    model = load_pretrained(MODEL, "imagenet", num_classes=3, image_size=28)

    cached = imagenet_cache_file(get_model_entry(MODEL))
    assert cached.parent == torch_home
    assert cached.read_bytes() == served.body
    assert sorted(p.name for p in torch_home.iterdir()) == [cached.name]  # no temporary left
    assert len(served.requests) == 1
    err = capsys.readouterr().err
    assert f"train.pretrained: downloading {get_model_entry(MODEL).weights.url} to {cached}" in err
    assert "100%" in err  # torch's tqdm bar
    original = torch.load(io.BytesIO(served.body), weights_only=True)
    assert torch.equal(model.state_dict()["0.0.weight"], original["0.0.weight"])
    assert model.state_dict()["8.weight"].shape[0] == 3  # a new head for 3 classes

    again = load_pretrained(MODEL, "imagenet", num_classes=3, image_size=28)
    assert len(served.requests) == 1  # from the cache
    assert "downloading" not in capsys.readouterr().err
    assert torch.equal(again.state_dict()["0.0.weight"], original["0.0.weight"])


def test_a_download_with_another_hash_leaves_nothing_in_the_cache(served, torch_home):
    served.body = state_dict_bytes(seed=1)  # a real state dict, but not the file the name promises
    with pytest.raises(UserError) as info:
        load_pretrained(MODEL, "imagenet", num_classes=3, image_size=28)
    message = str(info.value)
    url = get_model_entry(MODEL).weights.url
    assert message.startswith(f"train.pretrained: the download of {url} was cut off or altered")
    assert f"nothing was kept in {torch_home}" in message and "\n" not in message
    assert list(torch_home.iterdir()) == []
    assert len(served.requests) == 1


@pytest.mark.parametrize("served", ["hashed", "plain"], indirect=True)
def test_a_cut_off_download_leaves_nothing_in_the_cache(served, torch_home):
    served.send = len(served.body) // 2  # Content-Length says all of it; half comes, then the close
    with pytest.raises(UserError, match="cut off") as info:
        load_pretrained(MODEL, "imagenet", num_classes=3, image_size=28)
    assert f"nothing was kept in {torch_home}" in str(info.value) and "\n" not in str(info.value)
    assert list(torch_home.iterdir()) == []
    assert len(served.requests) == 1


@pytest.mark.parametrize("served", ["plain"], indirect=True)
def test_a_whole_download_without_a_hash_in_its_name_is_kept(served, torch_home):
    load_pretrained(MODEL, "imagenet", num_classes=3, image_size=28)
    assert imagenet_cache_file(get_model_entry(MODEL)).read_bytes() == served.body
    assert [p.name for p in torch_home.iterdir()] == ["cnn_served.pth"]


def test_an_unreachable_server_is_the_offline_line(torch_home, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/models/cnn_served-0123abcd.pth"
    with register_served_model(url, monkeypatch), pytest.raises(UserError) as info:
        load_pretrained(MODEL, "imagenet", num_classes=3, image_size=28)
    message = str(info.value)
    assert message.startswith(
        f"train.pretrained: ImageNet weights for '{MODEL}' are not in the torch cache and could not be downloaded (["
    )  # [Errno 111] on Linux
    assert message.endswith(
        f"Connection refused); download {url} to {torch_home / 'cnn_served-0123abcd.pth'} (or set TORCH_HOME), then rerun"
    )
    assert "\n" not in message
    assert list(torch_home.iterdir()) == []


def test_an_http_error_names_its_status(served, torch_home):
    served.status = 404
    with pytest.raises(UserError, match=r"could not be downloaded \(HTTP Error 404: Not Found\); download http://127"):
        load_pretrained(MODEL, "imagenet", num_classes=3, image_size=28)
    assert list(torch_home.iterdir()) == []


def test_a_broken_cached_file_says_to_delete_it(served, torch_home):
    cached = imagenet_cache_file(get_model_entry(MODEL))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(served.body[:100])  # left by some other tool's cut-off download
    with pytest.raises(UserError, match=f"'{cached}' is not a weights-only state-dict file .*; delete it and rerun"):
        load_pretrained(MODEL, "imagenet", num_classes=3, image_size=28)
    assert served.requests == []


def train_with_served_weights(prepared_shapes: Path, work: Path) -> Path:
    """A copy of the prepared shapes whose params.yaml asks for MODEL's ImageNet weights, frozen."""
    work = copy_prepared(prepared_shapes, work)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["model"] = MODEL
    params["train"].update(epochs=1, pretrained="imagenet", freeze="backbone")
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work


def test_the_train_stage_downloads_the_weights_and_trains_from_them(served, torch_home, prepared_shapes, tmp_path):
    work = train_with_served_weights(prepared_shapes, tmp_path / "work")
    result = stage_in_process("train", cwd=work)
    assert result.returncode == 0, result.stderr
    assert "train.pretrained: downloading http://127.0.0.1:" in result.stderr and "100%" in result.stderr
    model, spec = load_checkpoint(work / "models" / "model.pt")
    original = torch.load(io.BytesIO(served.body), weights_only=True)
    assert torch.equal(model.state_dict()["0.0.weight"], original["0.0.weight"])  # frozen backbone, as downloaded
    assert spec.mean == [0.485, 0.456, 0.406]  # the weights' own normalisation
    assert len(served.requests) == 1


def test_the_train_stage_offline_is_one_error_line(torch_home, prepared_shapes, tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/models/cnn_served-0123abcd.pth"
    work = train_with_served_weights(prepared_shapes, tmp_path / "work")
    with register_served_model(url, monkeypatch):
        result = stage_in_process("train", cwd=work)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith(f"error: train.pretrained: ImageNet weights for '{MODEL}'")
    assert url in result.stderr.splitlines()[-1]
    assert not (work / "models" / "model.pt").exists()
