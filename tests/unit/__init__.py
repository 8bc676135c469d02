"""The cocoaug library's functions on hand-made inputs: exact geometry, formats, errors."""
