"""The error every training-config and label-spec check raises."""

__all__ = ["TrainConfigError"]


class TrainConfigError(ValueError):
    """A training config or label spec is invalid; the message names the key or line."""
