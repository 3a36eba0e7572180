"""A run's bookkeeping: stage order, the run directory, hashes and fingerprints, atomic artifacts,
checkpoints, preflight checks, experiment tracking and progress."""
