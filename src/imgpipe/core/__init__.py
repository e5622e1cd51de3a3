"""The contracts every layer shares: one-line errors, file and column names between stages, typed params, atomic outputs, progress, the stage scripts' Typer glue. No torch."""
