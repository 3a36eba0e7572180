"""The names of the baselines and ablations ``rkd baselines`` can run (``baselines.methods`` / ``baselines.ablations``).

Kept apart from the methods themselves so the config can validate names without importing them;
the registries in ``rkd.baselines.registry`` and ``rkd.baselines.variants`` hold exactly these keys.
"""

BASELINE_METHODS = (
    "deep-jscc",
    "adjscc",
    "deep-jscc-budget",
    "conference",
    "conference-awgn",
    "label-digital",
    "feature-digital",
    "digital",
)
ABLATIONS = ("no-kd", "no-robust-kd", "robust-kd", "no-channel-training", "no-state", "fixed-length")
