"""What the user gets out of a run: size and latency (measure.py), the side-by-side table
(compare.py) and the exported student (export.py, ``kdl-export``)."""
