"""The agent's HTTP serving: the protocol (requests and responses), the listener that guards connections, the
web config (TLS, basic auth, headers, rate limit) and its TLS knobs, the routes, and the status page."""
