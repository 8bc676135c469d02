"""One stage script (or its main) at a time, on small inputs and the tiny models; stand-ins from
tests/helpers/ take the place of the earlier stages' outputs."""
