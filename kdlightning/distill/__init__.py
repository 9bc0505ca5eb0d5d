"""The distillation core: losses, methods, feature capture, where the teacher's outputs come
from, and the Lightning modules. Nothing here imports Hydra or :mod:`kdlightning.job`
(tests/unit/job/test_architecture.py checks it).

    functional.py   loss functions: math and argument checks only
    methods/        one distillation method per file (its loss terms, its constructor's checks)
    hooks.py        intermediate layers by module path (forward hooks)
    connectors.py   FitNets-style connectors between student and teacher features
    modules.py      the Lightning modules: frozen teacher -> student, the classifier
    mutual.py       deep mutual learning: a cohort of students, no teacher
"""
