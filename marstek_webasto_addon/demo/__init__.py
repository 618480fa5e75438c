"""The demo: the whole product against simulated hardware on 127.0.0.1, with a broker of its own."""
