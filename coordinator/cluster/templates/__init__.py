"""Files that `coordinator cluster ...` renders for other engines (read with importlib.resources)."""
