"""`conveyor demo`: the whole story of a commit to production, told on this machine."""
