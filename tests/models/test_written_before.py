"""Files that imgpipe wrote before its modules moved into layer packages (main at abb4795) still
load: the model file through `load_checkpoint`, the resume state into the loop's real `Fit`.

The fixtures are a tiny `mlp` (model_args width 8, 3 classes, 8x8 grey) after one step of Adam:
`model.pt` as the train stage writes it, `state.pt` as after epoch 1, and four inputs with the
logits that model gave them then.
"""

from __future__ import annotations

from pathlib import Path

import torch

from imgpipe.core.params import TrainParams
from imgpipe.feed.tensors import LabelledImages
from imgpipe.models.catalog import create_model
from imgpipe.models.checkpoint import load_checkpoint
from imgpipe.task.tasks import Multiclass
from imgpipe.train.fit import make_fit
from imgpipe.train.resume import load_payload, restore_state

FIXTURES = Path(__file__).parent / "fixtures" / "written_before_layers"
RUN_ID = "written-before-layers"


def test_a_model_file_written_before_the_move_loads_and_gives_the_same_logits():
    model, spec = load_checkpoint(FIXTURES / "model.pt")
    assert (spec.model, spec.model_args, spec.classes, spec.task) == ("mlp", {"width": 8}, ["a", "b", "c"], "multiclass")
    inputs = torch.load(FIXTURES / "inputs.pt", weights_only=True)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (spec.mean, spec.std))
    with torch.no_grad():
        assert torch.equal(model((inputs - mean) / std), torch.load(FIXTURES / "logits.pt", weights_only=True))


def test_a_resume_state_written_before_the_move_restores_the_loop():
    payload = load_payload(FIXTURES / "state.pt", RUN_ID)
    assert payload is not None, "the state file no longer loads"
    data = LabelledImages(images=torch.zeros(12, 1, 8, 8, dtype=torch.uint8), targets=torch.arange(12) % 3)
    model = create_model("mlp", num_classes=3, in_channels=1, image_size=8, width=8)
    fit = make_fit("mlp", model, TrainParams(epochs=3, batch_size=4), True, data, Multiclass(["a", "b", "c"]))
    generator = torch.Generator()
    state = restore_state(payload, fit, generator)
    assert (state.epoch, state.step, state.best, state.bad_epochs) == (1, 3, {"epoch": 1, "val/loss": 1.05}, 0)
    assert all(torch.equal(fit.model.state_dict()[k], v) for k, v in payload["model"].items())
    assert fit.optimizer.state_dict()["state"], "the optimizer's moments were not restored"
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(1).get_state())
