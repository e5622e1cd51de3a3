"""The review's defaults, in a module that imports nothing, so the `imgpipe` command can show
them in its help without loading the review (scipy, pandas) for every other subcommand."""

WORKSPACE = "workspace"  # DVC's name for the working tree
RESAMPLES = 2000  # bootstrap resamples for the intervals
