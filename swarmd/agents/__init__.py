"""Per-user agents: templates, the operator baseline, per-user state and activities."""
