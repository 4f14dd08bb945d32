"""Our CPU implementation: every layer's forward and backward in NumPy (float32), one file per family."""
