"""Which version serves a request: primary, canary (sticky), shadow copies."""
