"""The torch side of the data: decoded images as tensors, batches, inference over them, the device."""
