"""Dynamic batching: the policy, the scheduler, and the row kernels they share."""
