"""The project around the stages: README and docs against the code, pyproject.toml, the
benchmarks at a tiny size, and the scripts that make the sample set and the tiny models."""
