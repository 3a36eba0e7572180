"""What a trained system is measured by: the channel sweep, its records, per-class views, the rate policy,
code diagnostics, statistics, the comparison with baselines, and the report."""
