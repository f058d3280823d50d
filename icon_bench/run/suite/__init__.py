"""The suite language: a suite file read into a validated `Suite`, its grid, trial ids and every load-time check."""
