"""Command-line interface (Typer). Heavy imports happen inside the commands."""
