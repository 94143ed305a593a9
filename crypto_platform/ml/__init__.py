"""Model training, evaluation and registry code (pure functions; the Dagster assets wrap them)."""
