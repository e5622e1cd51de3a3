"""`imgpipe review`: compare the committed results of two revisions (a pull request's head and
its base) and say whether the change is real. See `imgpipe.review.report`. No torch."""
