"""Payload logging, ground-truth feedback and live model quality (see docs/ARCHITECTURE.md)."""
