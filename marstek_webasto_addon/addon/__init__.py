"""The add-on's edges: options, Supervisor APIs, persistent state, and the runtime wiring."""
