"""Experiment trackers: result rows logged to MLflow while a suite runs (`track:`) or afterwards (`icon-bench export`)."""
