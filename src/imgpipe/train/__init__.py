"""The train stage: `Fit`, the epoch loop, resume, optimizers and schedules, torchrun/DDP, the memory a run needs."""
