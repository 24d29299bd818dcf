"""Plan rewrites: each pass replaces runs of steps with fused steps."""
