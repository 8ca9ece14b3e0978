"""Side-by-side benchmarks against transformers' Grounding DINO: settings, measuring, report rendering."""
