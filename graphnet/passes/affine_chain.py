"""affine -> [batchnorm or layernorm] -> [relu] as one call, in small eval batches.

An FC net's layer at one sample is 100 numbers: there each gate's Python call, binding
call and arrays cost more than its arithmetic (an eval-mode batchnorm of 1 x 100 floats:
5.6 us, its kernel a fraction of that; the layer's three gates 9 us). So the plans of
eval walks of fewer than SMALL_BATCH samples (graphnet/core/executor.py) take this pass,
as they take conv_chain.py: a run of consecutive steps affine -> batchnorm (eval mode) or
layernorm -> relu, of at least two of them in that order (each reading the one before),
runs as one C++ call (`_C.affine_chain_forward`), which computes every gate's value and
cache with the kernels the gates call, one after the other: bit for bit the gates'
numbers, nothing deferred, nothing kept from one call to the next (a weight or running
average updated between calls is read afresh). The steps being consecutive, a value
another step reads is written before that step runs.

Arrays the call does not take as they are (mixed dtypes, a batchnorm without running
averages yet) and any shape it refuses run the gates instead, which name the mistake.
The backward runs gate by gate on the caches the step wrote.
"""

import math

from ..kernels import _C
from ..kernels.norm import NormCache
from .base import ChainPass, register_pass, run_gates
from .conv_chain import _native

NORMS = ("batchnorm", "layernorm")


def _chain(steps, start):
    """The consecutive single-gate steps from `start` that form a chain: an affine, then a
    norm and a relu, each optional, each reading the one before; [] if the step there is
    no affine."""
    first = steps[start]
    if first.fused or first.node.op != "affine":
        return []
    chain, kinds = [first], [NORMS, ("relu",)]
    for step in steps[start + 1 :]:
        node = step.node
        at = next((k for k, ops in enumerate(kinds) if node.op in ops), None)
        if step.fused or at is None or node.inputs[0] is not chain[-1].node:
            break
        kinds = kinds[at + 1 :]
        chain.append(step)
    return chain


def _forward_run(chain):
    affine = chain[0].node
    by_op = {step.node.op: step.node for step in chain[1:]}
    norm = next((by_op[op] for op in NORMS if op in by_op), None)
    relu = by_op.get("relu")
    layer = norm is not None and norm.op == "layernorm"
    eps = norm.gate.eps if norm is not None else 0.0

    # The indices each call reads, looked up once (at one sample the Python around the
    # call is a few microseconds of its time).
    graph, affine_at = affine.graph, affine.index
    x_at, w_at, b_at = (i.index for i in affine.inputs)
    if norm is not None:
        norm_at, gamma_at, beta_at = norm.index, norm.inputs[1].index, norm.inputs[2].index

    def run(store):
        values, caches = store.values, store.caches
        x, w, b = values[x_at], values[w_at], values[b_at]
        params = ()
        if norm is not None:
            params = (values[gamma_at], values[beta_at])
            if not layer:
                state = store.states.get(norm_at, {})
                params += (state.get("running_mean"), state.get("running_var"))
        if graph.training or not _native(x, w, b, params) or x.ndim < 2:
            return run_gates(chain, store)
        rows = x if x.ndim == 2 else x.reshape(x.shape[0], math.prod(x.shape[1:]))
        try:
            results = _C.affine_chain_forward(
                rows, w, b, params or None, eps, layer, relu is not None
            )
        except ValueError:  # a shape the gates refuse, with the node's name
            return run_gates(chain, store)
        out = values[affine_at] = results[0]
        caches[affine_at] = (x.shape, rows, w)
        if norm is not None:  # its value, then the gate's cache (kernels/norm.py)
            values[norm_at] = results[1]
            if layer:
                cache = NormCache(True, out, results[2], results[3], *params, "row")
                caches[norm_at] = (cache, out.shape)
            else:
                caches[norm_at] = NormCache(
                    False, out, results[2], results[3], *params[:2], "channel"
                )
        if relu is not None:
            values[relu.index], caches[relu.index] = results[-2], results[-1]

    return run


@register_pass
class AffineChain(ChainPass):
    length = 3
    chain = staticmethod(_chain)
    forward_run = staticmethod(_forward_run)
