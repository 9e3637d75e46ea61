"""End-to-end jobs that chain the pipeline stages (data -> search -> train -> ensemble)."""
