"""Device clients and simulators. Nothing here imports from the layers above (bridge, optimiser, web)."""
