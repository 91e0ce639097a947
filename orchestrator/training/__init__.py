"""Training control: the driver, its sample schedule, the single-process reference, progress and charts."""
