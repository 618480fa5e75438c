"""The Venus over Modbus TCP (its LAN port, or an RS485-to-TCP gateway): the second transport.

The register of every data point is declared in `datapoints.py` next to its JSON-RPC field; this package
holds the Modbus vocabulary and control registers (`registers`), the batched read plan (`readplan`), the
decoding into the snapshot the UDP path fills (`decode`) and the client (`client`).
Facts, sources and confidence: docs/marstek-modbus.md.
"""
