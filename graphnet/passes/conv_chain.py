"""conv -> [spatial batchnorm] -> [add] -> [relu] -> [max pool] as one call, in small eval
batches.

An eval-mode walk of fewer than SMALL_BATCH samples (graphnet/core/executor.py) runs
gate by gate: the other passes save passes over activations, which at one image are
small, by leaving inner values for later on copies of the weights, which are not. Each
gate there costs a Python call, a binding call, its arrays and their checks, which at one
image is as much as its arithmetic (a spatial batchnorm of 64 x 16 x 16 floats: 5 us, 2
of them its pass). So the plans of those walks take this pass alone: a run of
consecutive steps conv -> spatial batchnorm (eval mode) -> add -> relu -> max pool, of at
least two of them in that order (each reading the one before; the add's other operand,
a residual block's skip, from outside the run), runs as one C++ call
(`_C.conv_chain_forward`), which computes every gate's value and cache with the kernels
the gates call, one after the other: bit for bit the gates' numbers, nothing deferred,
nothing kept from one call to the next (a weight or running average updated between
calls is read afresh). The steps being consecutive, a value another step reads is
written before that step runs.

The fused plans' steps that fold an eval-mode batchnorm into its conv (batchnorm_fold.py,
norm_relu.py's ConvBatchnormRelu, conv_batchnorm_relu_pool.py) run the same call
(native_run) where the conv's filters outnumber its output (batchnorm_fold.fold_pays):
there the fold's copies of the filters cost more than the passes it saves.

Arrays the kernels do not take as they are (mixed dtypes, a batchnorm without running
averages yet) and any shape the call refuses (an add that broadcasts) run the gates
instead, which name the mistake. The backward runs gate by gate on the caches the step wrote.
"""

import numpy as np

from ..kernels import _C
from ..kernels.norm import NormCache
from .base import ChainPass, register_pass, run_gates

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

#: The gates a chain may hold after its conv, in order; each is optional. The add's other
#: operand is a node from outside the chain (a residual block's skip).
_FOLLOWERS = ("spatial_batchnorm", "add", "relu", "max_pool")


def _chain(steps, start):
    """The consecutive single-gate steps from `start` that form a chain (a conv and the
    followers that read it, in _FOLLOWERS' order); [] if the step there is no conv."""
    first = steps[start]
    if first.fused or first.node.op != "conv":
        return []
    chain, kinds = [first], list(_FOLLOWERS)
    for step in steps[start + 1 :]:
        node = step.node
        if step.fused or node.op not in kinds or not _reads_last(node, chain):
            break
        kinds = kinds[kinds.index(node.op) + 1 :]
        chain.append(step)
    return chain


def _reads_last(node, chain):
    """Whether `node` reads the chain's last node (an add: as one operand, the other from
    outside the chain)."""
    last = chain[-1].node
    if node.op != "add":
        return node.inputs[0] is last
    inside = {step.node for step in chain}
    return last in node.inputs and sum(i in inside for i in node.inputs) == 1


def _forward_run(chain):
    native = native_run([step.node for step in chain])

    def run(store):
        if not native(store):
            run_gates(chain, store)

    return run


def native_run(nodes):
    """The chain of `nodes` (a conv and its followers, in _FOLLOWERS' order) as one
    `_C.conv_chain_forward` call: a function of the store that writes every node's value
    and cache, bit for bit the gates', and returns True; or, in train mode, for arrays the
    call does not take as they are and for shapes it refuses, writes nothing and returns
    False (the gates then run, and name any mistake)."""
    conv = nodes[0]
    by_op = {node.op: node for node in nodes[1:]}
    norm, add, relu, pool = (by_op.get(op) for op in _FOLLOWERS)
    conv_param = conv.gate.attrs()
    pool_param = pool.gate.attrs() if pool is not None else None
    window = (
        None
        if pool_param is None
        else (pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"])
    )
    eps = norm.gate.eps if norm is not None else 0.0

    # The indices and arguments each call reads, looked up once (at one image the
    # Python around the call is a few microseconds of its time).
    graph, conv_at = conv.graph, conv.index
    x_at, w_at, b_at = (i.index for i in conv.inputs)
    stride, pad, with_relu = conv_param["stride"], conv_param["pad"], relu is not None
    if norm is not None:
        norm_at, gamma_at, beta_at = norm.index, norm.inputs[1].index, norm.inputs[2].index
    other_at, add_first = None, False
    if add is not None:  # its operand from outside the chain, and whether that comes first
        add_first = add.inputs[1] is nodes[nodes.index(add) - 1]
        other_at = add.inputs[0 if add_first else 1].index

    def run(store):
        values, caches = store.values, store.caches
        x, w, b = values[x_at], values[w_at], values[b_at]
        params = None
        if norm is not None:
            state = store.states.get(norm_at, {})
            params = (
                values[gamma_at],
                values[beta_at],
                state.get("running_mean"),
                state.get("running_var"),
            )
        other = None if other_at is None else values[other_at]
        arrays = (*(params or ()), *(() if other is None else (other,)))
        if graph.training or not _native(x, w, b, arrays):
            return False
        try:
            results = _C.conv_chain_forward(
                x, w, b, stride, pad, params, eps, other, add_first, with_relu, window
            )
        except ValueError:  # a shape the gates refuse, with the node's name
            return False
        out = conv_out = results[0]
        values[conv_at], caches[conv_at] = conv_out, (x, w, b, conv_param)
        at = 1
        if norm is not None:  # its value, then the gate's eval-mode cache (kernels/norm.py)
            out = values[norm_at] = results[1]
            caches[norm_at] = NormCache(
                False, conv_out, results[2], results[3], params[0], params[1], "channel"
            )
            at = 4
        if add is not None:  # the add gate keeps no cache
            out = values[add.index] = results[at]
            caches[add.index] = None
            at += 1
        if relu is not None:
            out = values[relu.index] = results[at]
            caches[relu.index] = results[at + 1]
            at += 2
        if pool is not None:
            values[pool.index] = results[at]
            caches[pool.index] = (out.shape, results[at + 1], pool_param)
        return True

    return run


def _native(x, w, b, params):
    """Whether the call takes these arrays as they are: ndarrays of one float dtype."""
    if type(x) is not np.ndarray or x.dtype not in _FLOATS:
        return False
    dtype = x.dtype
    for a in (w, b, *params):
        if type(a) is not np.ndarray or a.dtype != dtype:
            return False
    return True


@register_pass
class ConvChain(ChainPass):
    length = 5
    chain = staticmethod(_chain)
    forward_run = staticmethod(_forward_run)
