"""Single-label vs multi-label: kinds (numpy only), per-image outcomes, decisions, metrics, losses, and the two task classes."""
