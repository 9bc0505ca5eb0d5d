"""The job layer: the only code that knows Hydra. It turns a composed config into the core's
objects (:mod:`kdlightning.distill`), runs the stages, caches what they make and writes the run
directory.

    run.py          @hydra.main: check the config -> stages -> results
    stages.py       teacher -> student alone -> distilled student
    build.py        models, optimizers, trainers, loggers and callbacks from the config
    config.py       start-up checks of a composed config; resolvers.py: ${kdl.*} resolvers
    cache.py        trained teachers, baselines and teacher logits shared across jobs
    results.py      what a job writes; rundir.py: reading a run directory back
    distributed.py  DDP re-launch under Hydra; signals.py: SIGTERM/SIGINT; tracking.py: W&B
"""
