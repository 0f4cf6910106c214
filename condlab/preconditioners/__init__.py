"""Diagonal preconditioners: from an optimizer's state, from mini-batch gradients, from curvature.

Convention: ``P [P]`` is the positive diagonal preconditioner itself. The update is
``theta <- theta - eta P^-1 g`` (``M = P^-1`` is the per-coordinate step of research.md), and
the operator whose conditioning sets the speed is the symmetric ``P^-1/2 A P^-1/2``, which has
the eigenvalues of ``P^-1 A`` (paper A). In an eigenbasis ``U`` (paper B) the diagonal rule is
applied to ``U^T A U``; the full preconditioner is then ``U P U^T``.

=========  ==========================================  ===============================
rule       P                                           eps default
=========  ==========================================  ===============================
optimizer  torch's own denominator from the state      the optimizer's configured eps
adam       sqrt(mean_j g_j^2) + eps                    1e-8 (torch.optim.Adam)
rmsprop    sqrt(mean_j g_j^2) + eps                    1e-8 (torch.optim.RMSprop)
adagrad    sqrt(sum_j g_j^2) + eps  (one epoch)        1e-10 (torch.optim.Adagrad)
gn         diag(G) + eps                  (GN^-1)      0 (the exact rule)
gn-sqrt    diag(G)^1/2 + eps              (GN^-1/2)    0
jacobi     |diag(H)| + eps                             0
=========  ==========================================  ===============================

``g_j`` are the gradients of the ``m = floor(N / B)`` mini-batches of one seeded pass over the
data at the checkpoint. For i.i.d. gradients at fixed weights, Adam's bias-corrected EMA
``v_hat`` is an unbiased estimate of ``E[g^2]`` and RMSProp's EMA tends to it once
``alpha^t -> 0``, so both use the mean; AdaGrad accumulates a sum, taken over one epoch
(``m E[g^2]``). A scalar factor in ``P`` leaves kappa unchanged but divides ``lambda_max`` by it,
so adagrad's ``lambda_max`` is ``sqrt(m)`` times smaller than adam's (eps aside). A curvature
rule with ``eps = 0`` fails on coordinates without curvature (dead units) with a message that
suggests ``--eps``; the positive part of the spectrum does not depend on a small eps there,
because such coordinates have zero rows in ``G``.
"""

from condlab.preconditioners.base import (
    BASES,
    CURVATURE_RULES,
    DATA_RULES,
    DECAYS,
    DEFAULT_EPS,
    DIAG_ESTIMATORS,
    MAX_EIGEN_PARAMS,
    PRECONDITIONERS,
    Preconditioner,
)
from condlab.preconditioners.build import (
    build_preconditioner,
    lasso_weights,
    preconditioned_operator,
    summarize,
)
from condlab.preconditioners.curvature import (
    ggn_eigenbasis,
    gn_diagonal,
    hessian_diagonal,
)
from condlab.preconditioners.data import (
    gradient_second_moment,
)
from condlab.preconditioners.state import (
    OPTIMIZER_KINDS,
    from_optimizer_state,
)

__all__ = [
    "BASES",
    "CURVATURE_RULES",
    "DATA_RULES",
    "DECAYS",
    "DEFAULT_EPS",
    "DIAG_ESTIMATORS",
    "MAX_EIGEN_PARAMS",
    "OPTIMIZER_KINDS",
    "PRECONDITIONERS",
    "Preconditioner",
    "build_preconditioner",
    "from_optimizer_state",
    "ggn_eigenbasis",
    "gn_diagonal",
    "gradient_second_moment",
    "hessian_diagonal",
    "lasso_weights",
    "preconditioned_operator",
    "summarize",
]
