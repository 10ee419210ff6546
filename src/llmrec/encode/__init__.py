"""Text encoders, embedding caches and vector indexes (the discriminative path's representation layer)."""
