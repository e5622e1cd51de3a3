"""Data handling: sources (download), the image reader, augmentation and splitting."""
