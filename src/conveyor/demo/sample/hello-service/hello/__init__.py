"""hello: the sample service of `conveyor demo`."""
