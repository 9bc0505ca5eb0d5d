"""``python -m kdlightning.eval RUN_DIR`` / ``kdl-eval``: evaluate a finished run's model.

    kdl-eval logs/distill/runs/<dir>            # the distilled student on the run's test split
    kdl-eval logs/distill/runs/<dir> --onnx     # its exported student.onnx, ONNX Runtime

The code lives in :mod:`kdlightning.deploy.evaluate`.
"""

import sys

from kdlightning.deploy.evaluate import evaluate_run, main

__all__ = ["evaluate_run", "main"]

if __name__ == "__main__":
    sys.exit(main())
