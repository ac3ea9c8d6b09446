"""The control socket: JSON-lines protocol, the asyncio Unix-socket server, and a blocking client.

Importing this package is cheap (stdlib only); the server and client are imported from their modules.
"""
