"""The closed-form parameter count; it lives beside `Architecture` in `coordinator.architecture`.

Kept so that `from coordinator.params import count_params` keeps working.
"""

from coordinator.architecture import count_params, layer_params, n_patches

__all__ = ["count_params", "layer_params", "n_patches"]
