"""Running the agent: one task per source, reload, supervision and shutdown (agent), sharding (shard), the
timer heap (heap), and logging (logconfig)."""
