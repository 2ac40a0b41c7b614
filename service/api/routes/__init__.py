"""One blueprint per resource; each view parses (already validated), calls store/jobs/render, responds."""
