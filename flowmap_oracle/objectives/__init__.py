"""Every distillation objective as a real loss, one module per method.

===================================  ==========================  =========
module                               loss                        type
===================================  ==========================  =========
:mod:`.flow_matching`                :func:`flow_matching_loss`  (a)
:mod:`.meanflow`                     :func:`meanflow_loss`       (b)
:mod:`.split_meanflow`               :func:`split_meanflow_loss` (c)
:mod:`.consistency` (discrete CD/CT) :func:`consistency_loss`    (b)
:mod:`.continuous_consistency` (sCM) :func:`scm_loss`            (b)
:mod:`.facm`                         :func:`facm_loss`           (b)
:mod:`.align_your_flow`              :func:`ayf_emd_loss`        (b)
:mod:`.align_your_flow`              :func:`ayf_lmd_loss`        (a)
:mod:`.shortcut`                     :func:`shortcut_loss`       (c)
:mod:`.reflow`                       :func:`reflow_loss`         (a)
:mod:`.imm`                          :func:`imm_loss`            (c)
:mod:`.ctm`                          :func:`ctm_loss`            (a)
:mod:`.flow_map_matching`            :func:`fmm_lagrangian_loss` (a)
:mod:`.flow_map_matching`            :func:`fmm_eulerian_loss`   (b)
:mod:`.self_distillation`            :func:`lsd_loss`            (a)
:mod:`.self_distillation`            :func:`esd_loss`            (b)
:mod:`.self_distillation`            :func:`psd_loss`            (c)
===================================  ==========================  =========

Loss types follow the seed: (a) forward, (b) backward, (c) self-consistency. Shared pieces:
:mod:`._common` (output record, input checks, velocity choices), :mod:`.derivatives` (JVP and
finite-difference routes), :mod:`.distances`, :mod:`.teacher_solvers`, :mod:`.time_sampling`.
"""

from ._common import LossOutput, Velocity, VelocityChoice
from .align_your_flow import ayf_emd_loss, ayf_lmd_loss
from .consistency import consistency_loss
from .continuous_consistency import consistency_tangent, scm_loss
from .ctm import ctm_loss
from .derivatives import FiniteDifference, directional_derivative, s_derivative, total_derivative
from .facm import facm_loss
from .flow_map_matching import fmm_eulerian_loss, fmm_lagrangian_loss
from .flow_matching import flow_matching_loss, flow_matching_residual
from .imm import imm_loss, mmd2_unbiased
from .meanflow import meanflow_loss, meanflow_target
from .reflow import RectifiedVelocity, rectified_velocity, reflow_couplings, reflow_loss
from .self_distillation import (
    esd_loss,
    lsd_loss,
    psd_loss,
    psd_target,
    self_distillation_times,
)
from .shortcut import shortcut_loss, shortcut_residual
from .split_meanflow import split_meanflow_loss, split_residual, split_target
from .teacher_solvers import EulerSolver, ExactSolver, HeunSolver, TeacherSolver

__all__ = [
    "EulerSolver",
    "ExactSolver",
    "FiniteDifference",
    "HeunSolver",
    "LossOutput",
    "RectifiedVelocity",
    "TeacherSolver",
    "Velocity",
    "VelocityChoice",
    "ayf_emd_loss",
    "ayf_lmd_loss",
    "consistency_loss",
    "consistency_tangent",
    "ctm_loss",
    "directional_derivative",
    "esd_loss",
    "facm_loss",
    "flow_matching_loss",
    "flow_matching_residual",
    "fmm_eulerian_loss",
    "fmm_lagrangian_loss",
    "imm_loss",
    "lsd_loss",
    "meanflow_loss",
    "meanflow_target",
    "mmd2_unbiased",
    "psd_loss",
    "psd_target",
    "rectified_velocity",
    "reflow_couplings",
    "reflow_loss",
    "s_derivative",
    "scm_loss",
    "self_distillation_times",
    "shortcut_loss",
    "shortcut_residual",
    "split_meanflow_loss",
    "split_residual",
    "split_target",
    "total_derivative",
]
