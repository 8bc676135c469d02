"""What several test modules share (no tests here): scripts.py runs the repository's scripts,
stage_inputs.py and skewed_set.py write small inputs, stage_outputs.py stands in for stages 1
and 2, review_run.py starts and stops the review server."""
