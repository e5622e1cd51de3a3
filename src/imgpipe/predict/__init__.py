"""The predict stage and `imgpipe predict`."""
