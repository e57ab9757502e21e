"""The series model: the store sources write to (store), the page written from it (exposition), and the agent's
own families (selfmetrics)."""
