"""Model states, loading and unloading versions, and (later) the rollout controller."""
