"""The SQL read model: views installed by `coordinator db init` (files applied in name order)."""
