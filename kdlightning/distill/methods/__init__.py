"""Distillation methods: each one a small ``nn.Module`` in a file of its own, composing the
losses of ``kdlightning.distill.functional`` with cross-entropy. ``conf/kd/<name>.yaml`` names
the class (``_target_``) and holds its hyperparameters' only defaults; the job builds it with
``kdlightning.job.build.build_method``. From Python, call the class::

    from kdlightning.distill.methods import DKD, AttentionTransfer
    method = DKD(temperature=4.0, alpha=1.0, beta=8.0, ce_weight=1.0, warmup_epochs=20,
                 standardize=False)                                  # checks every argument
    at = AttentionTransfer(temperature=2.0, alpha=0.0, beta=1000.0, p=2.0,
                           student_layers=["features.3"], teacher_layers=["features.3"],
                           teacher=teacher, student=student, input_shape=(1, 8, 8))
    out = method(s_logits, t_logits, targets, s_feats, t_feats, epoch=0, index=None)
    out.loss, out.terms   # the weighted total; {"dkd_loss": ..., "ce_loss": ...} unweighted

Every method has the same interface (:class:`Method`). ``needs_features`` says whether it reads
intermediate outputs; then ``student_layers`` / ``teacher_layers`` are the module paths the
training module captures (``kdlightning.distill.hooks``), paired in order. Logit methods work with
cached teacher logits; feature methods need the teacher online. Targets equal to ``UNLABELED``
(-1, the transfer set) get no cross-entropy. The weighting follows each paper (the files and
the conf/kd files cite them):

====== =======================================================================================
kd     ``alpha * KD + (1 - alpha) * CE`` (Hinton et al. 2015); ``standardize``: z-scored logits
dkd    ``CE + warmup(epoch) * (alpha * TCKD + beta * NCKD)`` (Zhao et al. 2022)
dist   ``alpha * CE + beta * inter + gamma * intra`` (Huang et al. 2022)
ls_kd  ``ce_weight * CE + alpha * KD`` on z-scored logits (Sun et al. 2024)
fitnet ``alpha * KD + (1 - alpha) * CE + beta * hint`` (Romero et al. 2015)
at     ``... + beta / 2 * sum_layers AT`` (Zagoruyko & Komodakis 2017)
rkd    ``... + distance_weight * RKD-D + angle_weight * RKD-A`` (Park et al. 2019)
pkt    ``... + beta * PKT`` (Passalis & Tefas 2018)
crd    ``... + beta * CRD``, memory banks keyed by sample index (Tian et al. 2020)
====== =======================================================================================

Adding a method: a file here with its class (a :class:`Method` or :class:`FeatureMethod`
subclass that checks its arguments in its constructor), a ``conf/kd/<name>.yaml`` naming it,
and its tests.
"""

from kdlightning.distill.methods.at import AttentionTransfer
from kdlightning.distill.methods.base import (
    ArgumentError,
    FeatureMethod,
    Method,
    MethodOutput,
    no_gather,
)
from kdlightning.distill.methods.crd import CRD
from kdlightning.distill.methods.dist import DIST
from kdlightning.distill.methods.dkd import DKD
from kdlightning.distill.methods.fitnet import FitNet
from kdlightning.distill.methods.kd import KD
from kdlightning.distill.methods.ls_kd import LogitStandardKD
from kdlightning.distill.methods.pkt import PKT
from kdlightning.distill.methods.rkd import RKD

__all__ = [
    "CRD",
    "DIST",
    "DKD",
    "KD",
    "PKT",
    "RKD",
    "ArgumentError",
    "AttentionTransfer",
    "FeatureMethod",
    "FitNet",
    "LogitStandardKD",
    "Method",
    "MethodOutput",
    "no_gather",
]
