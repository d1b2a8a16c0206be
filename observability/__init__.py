"""Tracing shared by both deployables; ``cloud_sync`` and ``edge_agent`` may not import each
other, and neither owns it. Exporters are configured by each CLI, never at import."""
