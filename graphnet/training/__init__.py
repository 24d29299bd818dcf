"""Training: the Solver, the update rules and checkpoints."""
