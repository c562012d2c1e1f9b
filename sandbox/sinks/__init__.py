"""Consumers of CompileReports. Each reads the record and nothing else; none knows another."""
