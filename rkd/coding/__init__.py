"""Explicit short channel codes for digital baselines: codebooks, their link over ``rkd.channels``, their limits."""
