"""Running trials: one trial into one row, the local and Ray executors, the results store, progress and the summary."""
