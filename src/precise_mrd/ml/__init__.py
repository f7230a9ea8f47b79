"""Optional ML artefact filter: features (:mod:`.features`), models (:mod:`.ensemble`), scoring of
observations and the adjusted evidence (:mod:`.scoring`), training on simulator output
(:mod:`.train`)."""
