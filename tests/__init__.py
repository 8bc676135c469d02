"""The test suite, grouped by what it checks (pytest imports it as the package ``tests``):

- unit/: the cocoaug library's functions on hand-made inputs;
- stages/: one stage script (or its main) at a time, on small inputs and the tiny models;
- e2e/: the whole pipeline, several stages in a row (marked ``slow``);
- project/: the README and docs against the code, the packaging, the benchmarks and the
  scripts that make the sample set and the tiny models;
- helpers/: what several test modules share (no tests); conftest.py: the session fixtures.
"""
