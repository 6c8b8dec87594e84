"""What a search produced: its trial records and fronts, the MLflow store that holds them,
reports and plots, rows for scripts, and exported adapters."""
