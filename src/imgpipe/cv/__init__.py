"""Cross-validation: the cv_fold stages (a training per fold) and the cv_summary stage."""
