"""Jobs: states, the job service interface and its executors."""
