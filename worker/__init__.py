"""scalesweep data plane: the trial loop, the model and its training."""
