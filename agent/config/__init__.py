"""Config files in, validated dataclasses out: the located YAML loader (yaml), file reading (files), the error
model (problems), the mapping reader (fields), value parsers (values), name rules (validation), and the agent's
own config (agent)."""

from agent.config import printable

printable.seed()  # before agent.config.yaml imports PyYAML (agent.config.printable says why)
