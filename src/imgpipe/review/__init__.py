"""`imgpipe review`: compare the committed results of two revisions (a pull request's head and
its base) and say whether the change is real. See `imgpipe.review.report`."""

from imgpipe.review.report import Review, review

__all__ = ["Review", "review"]
