"""scalesweep control plane: CLI, study specs, datasets, schema, reports. Never imports torch."""
