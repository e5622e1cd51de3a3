"""The evaluate stage, its gallery of worst test images, and `imgpipe evaluate --data`."""
