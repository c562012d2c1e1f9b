"""Analysis: pure functions over runs and reports (diff, jobs, labels), shared by the CLI and the dashboard."""
