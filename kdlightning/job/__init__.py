"""The job layer: the only code that knows Hydra. It turns a composed config into the core's
objects (:mod:`kdlightning.distill`), runs the stages, caches what they make and writes the run
directory.

    cli.py          @hydra.main: the checks the config alone allows (precheck.py, keys.py),
                    then the slow imports and run.py; errors.py: a user's mistake in one line
    run.py          check the config -> stages -> results
    stages.py       teacher -> student alone -> distilled student
    build.py        models, optimizers, trainers, loggers and callbacks from the config
    config.py       start-up checks of a composed config; resolvers.py: ${kdl.*} resolvers
    cache.py        trained teachers, baselines and teacher logits shared across jobs
    results.py      what a job writes; rundir.py: reading a run directory back
    distributed.py  DDP re-launch under Hydra (relaunch.py: the part before Hydra starts);
                    signals.py: SIGTERM/SIGINT; tracking.py: W&B
    progress.py     job k/N, the teacher-logit pass's bar, quiet libraries; progress_bar.py
"""
