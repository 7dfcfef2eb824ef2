"""The uploads domain of the code location: the scoring jobs (one upload per run, or a backlog),
the scoring of a table, the sensors that start runs and handle failed ones, and the purge."""
