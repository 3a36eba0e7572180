"""The names of the baselines and ablations ``rkd baselines`` can run (``baselines.methods`` / ``baselines.ablations``).

Kept apart from the methods themselves so the config can validate names without importing them;
the registries in ``rkd.baselines.registry`` and ``rkd.baselines.variants`` hold exactly these keys.
"""

BASELINE_METHODS = (
    "deep-jscc",
    "adjscc",
    "deep-jscc-budget",
    "deep-jscc-kd",
    "vfe",
    "conference",
    "conference-awgn",
    "label-digital",
    "feature-digital",
    "digital",
    "no-teacher",
    "no-teacher-converged",
    "random-cells",
)
ABLATIONS = (
    "no-kd",
    "no-robust-kd",
    "robust-kd",
    "stage2-logit-kd",
    "stage2-feature-kd",
    "no-channel-training",
    "no-state",
    "fixed-length",
)
