"""The whole pipeline, several stages in a row, each module marked ``slow`` (`make test` runs them;
``pytest -m "not slow"`` leaves them out)."""
