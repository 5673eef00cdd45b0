"""The HTTP layer: thin adapters from ASGI/Starlette to the DataPlane."""
