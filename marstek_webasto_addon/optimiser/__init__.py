"""The energy optimiser: pure (state and forecasts in, decisions out), so it can be tested and replayed.

Nothing in this package does I/O or imports a module that does.
"""
