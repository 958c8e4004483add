"""The control plane: durable store, reconcile loop (controller) and local executor."""
