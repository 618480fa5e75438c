"""The ingress panel: a small aiohttp app with a JSON API, server-sent events and a static page."""
