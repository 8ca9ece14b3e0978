"""Entry points, each a `main(argv) -> int`."""
