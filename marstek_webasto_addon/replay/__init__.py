"""Replay the optimiser over a year of 15-minute household data against the simulated batteries."""
