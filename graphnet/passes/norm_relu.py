"""batchnorm / spatial batchnorm / layernorm -> relu as one step each way, in train mode too;
batchnorm / spatial batchnorm -> add(skip) -> relu (a residual block's end) likewise.

Gate by gate, the relu reads the norm's whole output and writes its own and a mask
forward, then reads the mask and the gradient and writes another gradient backward. Where
a norm feeds only a relu (a VGG unit's conv -> spatial batchnorm -> relu -> conv, an FC
net's affine -> batchnorm -> relu), the fused forward has the norm kernel write the relu of
its output (cpp/norm.h, relu=true), and the fused backward has the norm kernel take the
relu's gradient and mask it itself, where the normalized entry it recomputes from x, the
statistics, gamma and beta is positive: no pass over the activation for the relu either
way. Values, caches and gradients read the same as gate by gate, bit for bit (the kernel
recomputes the normalized entries with the very operations of its forward).

The norm's value is deferred to its own gate, on the inputs and the running averages as
they were; the relu's cache (its mask, x > 0) is deferred to the relu's output (> 0 where
the relu's input is), lazily: the fused backward takes the relu from the norm's cache, so
a training step never computes the mask (2% of the strided zoo net's step at batch 64,
in `perf`, went to it). A backward after a forward that did not run fused (gate by gate, or
the eval-mode fold of batchnorm_fold.py) runs the two gates: only a cache of the fused
forward (kernels.norm.ReluNormCache) says where its relu passed; but after a batchnorm's
gate (its plain cache, the relu gate's output kept: a small activation, below SMALLEST) the
kernel takes the relu's backward and the norm's in one call from the relu's output, as
after NormAddRelu's forward below, and writes the relu's gradient (dout times its mask, the
relu gate's bits) in its reducing pass: one binding call where the gates made two, nothing
deferred.

NormAddRelu: where a (spatial) batchnorm feeds only an add, and that add only a relu (a
residual block's last norm, its skip added, then the relu; the add's operands either way
round; the skip read by anything else too), the norm kernel adds the skip to each
normalized entry and writes the relu of the sum in its normalizing pass: no pass of the
add's (two arrays read, one written) nor of the relu's. Backward, the relu's output (kept
anyway: the next block reads it) says where the relu passed (> 0 where norm + skip was);
the kernel masks the gradient with it in its reducing pass and writes that masked
gradient there (the add gate's gradient of both its operands), which the step hands to
the skip and reads back for dx. Bit for bit the three gates' values, caches and
gradients, in train and eval mode; the norm's and the add's values are deferred (the add's
to the add gate, on the norm's deferred value and the skip as they were), the relu's mask
lazily as above (kernels.norm.SkipReluNormCache says the forward ran fused); the add keeps
no cache. The step sits where the relu's step was forward and where the add's was
backward, so the skip's gradient sums what it receives in the gates' order. In eval mode
the norm is not folded into a conv before it: the fold would leave the add and the relu
two passes, and the kernel's one pass with the running averages costs less. An add that
broadcasts, or a skip of another dtype, runs the three gates forward (and a small
activation: below SMALLEST), and backward the same one kernel call from the relu's output
where the norm's output went through the add as it was (the walk sums a broadcast skip's
gradient down); layernorm -> add -> relu is not fused (no network of the zoo has it).

NormAddReluPool: where that relu feeds a max pool (the zoo's resnet: res(32), pool; the
student bottleneck net: bneck(16) x 2, pool), the forward is the same kernel pooling each
plane of the relu's output right after writing it, while it is in cache (NormPool,
cpp/norm.h: the pool kernel's windows, any size and stride, its tie rule and winners):
it reads x and the skip and writes the pooled values and their winners, where the gates
took four passes (the norm's, the add's, relu_pool.py's relu -> pool). The relu's output
is written too only where another gate reads it. Backward, the step is relu_pool.py's
(the relu on the pooled gradient, the pool scattering it) then the add's and the norm's
gates, in one step where the add's was: a backward of separate steps would compute the
deferred values of the norm and the add before its loop (they are among what its steps
read), the passes the forward saved. Where the relu has other readers its gradient sums
theirs with the pool's, and NormAddRelu's backward takes the norm, the add and the relu
(the forward kept the relu's output, the cache a SkipReluNormCache). Bit for bit the
gates' values, caches and gradients, in train and eval mode; the norm's, the add's and
(unless kept) the relu's values and the relu's mask are deferred as above.

The same pass takes a (spatial) batchnorm -> relu -> max pool with no add (a VGG unit's
end; conv_batchnorm_relu_pool.py's train mode calls its forward after the conv): the
kernel normalizes, takes the relu and pools each plane in cache, reading x and writing the
pooled values and winners where the gates took two passes (the norm's writing its whole
output, relu_pool.py's reading it). Backward, relu_pool.py's step then the norm's gate, in
one step where the norm's was; where the relu has other readers, the pool's gate and
NormRelu's step. Below SMALLEST entries a pooled forward runs the gates, the relu and the
pool as relu_pool.py's step where nothing else reads the relu.

A leaky relu (any slope) in that relu's place, with no add (a student's conv -> spatial
batchnorm -> leaky relu -> max pool), is the same step: the kernel takes the leaky relu as
norm_activation.py's does and pools each plane of its output. Backward, the pool's gate
(which scatters the pooled gradient), then norm_activation.py's step (the norm kernel
taking the leaky relu's gradient at the normalized entries it recomputes), in one step
where the norm's was; where the leaky relu has other readers, the pool's gate and
NormActivation's step. The leaky relu's cache (its saved input) is the norm's deferred
value.

conv -> spatial batchnorm -> relu is one forward step too (ConvBatchnormRelu), so that
batchnorm_fold.py does not take its first two: in eval mode it is that fold with the relu
taken by the conv kernel (batchnorm_fold.forward_run), in train mode the conv gate
followed by the fused norm -> relu. A relu after a layernorm that a max pool alone reads is
left to relu_pool.py, which runs it on the pooled values only. Groupnorm -> relu is
norm_activation.py's, with its other activations.
"""

import numpy as np

from ..core.plan import Step
from ..gates.base import unbroadcast
from ..kernels import norm as norm_kernels
from . import batchnorm_fold, relu_pool
from .base import FusionPass, PairPass, kept, once, readers, register_pass

NORMS = ("batchnorm", "spatial_batchnorm", "layernorm")
#: The norms whose kernel adds a skip before its relu (NormAddRelu).
CHANNEL_NORMS = ("batchnorm", "spatial_batchnorm")
#: The activations their kernel takes before a max pool (NormAddReluPool; a skip is added
#: before a relu only).
POOLED_ACTIVATIONS = ("relu", "leaky_relu")
# Below this many entries the relu gate's passes cost less than the fused step's
# bookkeeping (deferring the norm's value and the relu's mask, copying gamma and beta for
# it): the forward runs the gates. FC nets of the zoo, batch 16 to 256 (1600 to 25600
# entries): fused 0.5% to 4% slower. A batchnorm's backward then takes the relu in its
# kernel all the same, from the relu's output (_backward).
SMALLEST = 1 << 15


@register_pass
class NormRelu(PairPass):
    def takes(self, steps):
        """A relu that a max pool alone reads is left to NormAddReluPool (relu_pool.py's
        after a layernorm), which runs it on the pooled values only."""
        pooled = pooled_alone(steps)
        return lambda relu, norm: relu.op == "relu" and relu not in pooled and norm.op in NORMS

    def forward_run(self, norm, relu):
        return forward_run(norm, relu)

    def backward_run(self, norm, relu):
        return _backward(norm, relu)


@register_pass
class NormAddRelu(FusionPass):
    length = 3

    def fuse_forward(self, steps):
        runs = _skip_runs(steps, pooled=False)
        inner = {node for norm, add, _, _ in runs.values() for node in (norm, add)}
        return [
            _skip_step(runs[step.node], step.node) if step.node in runs else step
            for step in steps
            if step.node not in inner
        ]

    def fuse_backward(self, steps):
        """A relu that a max pool reads alone is NormAddReluPool's (which ReluPool's would
        be); one with other readers too is this pass's, as the pooled forward kept its
        output."""
        reads = readers(steps)
        runs = _skip_runs(steps, pooled=False)
        runs.update(
            (r, run)
            for r, run in _skip_runs(steps, pooled=True).items()
            if reads[r] > 1 and run[1] is not None
        )
        return _fuse_skip_backward(steps, runs, pooled=False)


@register_pass
class NormAddReluPool(FusionPass):
    """norm -> add(skip) -> relu -> max_pool (a residual block's end, then a pool), or
    norm -> relu -> max_pool (a VGG unit's end): the pooled forward, one step each way."""

    length = 4

    def fuse_forward(self, steps):
        reads = readers(steps)
        runs = _skip_runs(steps, pooled=True)
        inner = {node for norm, add, _, pool in runs.values() for node in (norm, add, pool)}
        inner.discard(None)
        return [
            _pooled_skip_step(runs[step.node], step.node, keep=reads[step.node] > 1)
            if step.node in runs
            else step
            for step in steps
            if step.node not in inner
        ]

    def fuse_backward(self, steps):
        reads = readers(steps)
        runs = {r: run for r, run in _skip_runs(steps, pooled=True).items() if reads[r] == 1}
        return _fuse_skip_backward(steps, runs, pooled=True)


def _pooled(steps):
    """The nodes a max pool reads among `steps`."""
    return {step.node.inputs[0] for step in steps if step.node.op == "max_pool"}


def pooled_alone(steps):
    """The nodes a max pool reads among `steps`, and nothing else."""
    reads = readers(steps)
    return {node for node in _pooled(steps) if reads[node] == 1}


def _skip_runs(steps, pooled):
    """{relu: (norm, add, skip, pool)} for each norm -> add -> relu run of single-gate
    steps among `steps`: the norm read by the add alone, the add by the relu alone; skip
    the add's other operand. pooled: the runs whose relu a max pool's single-gate step
    reads (pool: that max pool), and the norm -> relu or leaky relu runs of that pool too
    (add and skip None: the norm read by the activation alone); else those whose relu no
    max pool reads (pool: None)."""
    plain = {step.node for step in steps if not step.fused}
    reads = readers(steps)
    pools = {}
    for step in steps:
        if not step.fused and step.node.op == "max_pool":
            pools.setdefault(step.node.inputs[0], step.node)
    unpooled = _pooled(steps)
    runs = {}
    for relu in plain:
        read_by_pool = relu in pools if pooled else relu in unpooled
        if relu.op not in POOLED_ACTIVATIONS or read_by_pool != pooled:
            continue
        add = relu.inputs[0]
        if pooled and add.op in CHANNEL_NORMS and add in plain and reads[add] == 1:
            runs[relu] = (add, None, None, pools[relu])
            continue
        if relu.op != "relu" or add.op != "add" or add not in plain or reads[add] != 1:
            continue
        for norm, skip in (add.inputs, add.inputs[::-1]):
            if norm.op in CHANNEL_NORMS and norm in plain and reads[norm] == 1:
                runs[relu] = (norm, add, skip, pools.get(relu))
                break
    return runs


def _skip_step(run, relu):
    norm, add, skip, _ = run
    return Step(relu, norm.inputs + (skip,), forward_run(norm, relu, add), (), (norm, add, relu))


def _pooled_skip_step(run, relu, keep):
    """The forward step of a pooled run, where the relu's step was (its other readers, if
    any, come after it)."""
    norm, add, skip, pool = run
    if add is None:
        return Step(
            pool, norm.inputs, forward_run(norm, relu, None, pool, keep), (), (norm, relu, pool)
        )
    return Step(
        pool,
        norm.inputs + (skip,),
        forward_run(norm, relu, add, pool, keep),
        (),
        (norm, add, relu, pool),
    )


def _fuse_skip_backward(steps, runs, pooled):
    """`steps` with one backward step for each run of `runs` ({relu: (norm, add, skip,
    pool)}: the norm, the add (if any), the relu and, if pooled, the pool) where the add's
    step was, so that the skip's gradient sums what it receives in the gates' order (where
    the norm's was, without an add)."""
    plain = {step.node: step for step in steps if not step.fused}
    chains = {
        (norm if add is None else add): tuple(
            n for n in (norm, add, relu, pool if pooled else None) if n is not None
        )
        for relu, (norm, add, _, pool) in runs.items()
    }
    inner = {node for chain in chains.values() for node in chain if node not in chains}
    fused = []
    for step in steps:
        chain = chains.get(step.node)
        if chain is None:
            if step.node not in inner:
                fused.append(step)
            continue
        relu = chain[-2] if pooled else chain[-1]
        norm, add, _, pool = runs[relu]
        run = _pooled_backward(norm, add, relu, pool) if pooled else _backward(norm, relu, add)
        edges = tuple((norm, i) for i in range(len(norm.inputs)))
        inputs, needs = norm.inputs, plain[norm].needs
        if add is not None:
            skip = add.inputs[1 - add.inputs.index(norm)]
            position = add.inputs.index(skip)
            inputs, needs = inputs + (skip,), needs + (step.needs[position],)
            edges += ((add, position),)
        fused.append(Step(chain[-1], inputs, run, needs, chain, edges=edges))
    return fused


def _norm_forward(norm, state, training, values, relu, **tail):
    """The norm gate's forward of `values` (x, gamma, beta), with its relu or without (and
    with `tail`: a batchnorm's skip and skip_first, added before its relu; its activation;
    its pool)."""
    if norm.gate.stateful:
        return norm.gate.forward(state, training, *values, relu=relu, **tail)
    return norm.gate.forward(*values, relu=relu)


def forward_run(norm, relu, add=None, pool=None, keep=True):
    """The fused forward step's run(store): norm -> relu, or norm -> add -> relu, and with
    `pool` that relu's max pool (keep: the relu's output written too, for its other
    readers); with pool, `relu` may be a leaky relu (no add), which the kernel takes as
    norm_activation.py's does."""
    skip = None if add is None else add.inputs[add.inputs[0] is norm]
    skip_first = add is not None and add.inputs[0] is skip
    windows = (
        None if pool is None else (pool.gate.pool_height, pool.gate.pool_width, pool.gate.stride)
    )
    is_relu = relu.op == "relu"
    activation = {} if is_relu else {"activation": relu.gate.kernel}
    # The relu's output unread but by the pool: relu_pool.py's step on the gates' way.
    relu_then_pool = (
        relu_pool.forward_run(relu, pool) if pool is not None and not keep and is_relu else None
    )

    def run_gates(store, state, training, values):
        gate = norm.gate
        # By position, without the fused call's keywords: this runs at every small step.
        out, store.caches[norm.index] = (
            gate.forward(state, training, *values) if gate.stateful else gate.forward(*values)
        )
        store.values[norm.index] = out
        if add is not None:
            operands = (store.values[i.index] for i in add.inputs)
            out, store.caches[add.index] = add.gate.forward(*operands)
            store.values[add.index] = out
        if relu_then_pool is not None:
            return relu_then_pool(store)
        out, store.caches[relu.index] = relu.gate.forward(out)
        store.values[relu.index] = out
        if pool is not None:
            store.values[pool.index], store.caches[pool.index] = pool.gate.forward(out)

    def run(store):
        values = [store.values[i.index] for i in norm.inputs]
        other = None if skip is None else store.values[skip.index]
        state = store.state(norm.index) if norm.gate.stateful else {}
        training = norm.graph.training
        x = values[0]
        # Small (asked first: the check every small step takes), or integers, float16,
        # mixed dtypes (not for the kernels), an add that broadcasts: the gates.
        if (
            (type(x) is np.ndarray and x.size < SMALLEST)
            or not norm_kernels.native(*values, *([] if other is None else [other]))
            or (other is not None and other.shape != values[0].shape)
        ):
            return run_gates(store, state, training, values)
        # The norm's own forward, if its value is read, on the inputs as they are now and,
        # in eval mode, the running averages (train mode normalizes with the batch's).
        frozen = {} if training else {k: np.array(v) for k, v in state.items()}
        tail = {} if other is None else {"skip": other, "skip_first": skip_first}
        if pool is not None:
            tail.update(pool=windows, keep=keep)
        out, store.caches[norm.index] = _norm_forward(
            norm, state, training, values, is_relu, **tail, **activation
        )
        if pool is not None:
            out, pooled, winners = out
            store.values[pool.index] = pooled
            store.caches[pool.index] = (values[0].shape, winners, pool.gate.attrs())
        inputs = [kept(node, value) for node, value in zip(norm.inputs, values)]
        normalized = once(lambda: _norm_forward(norm, frozen, training, inputs, False)[0])
        shape = values[0].shape
        store.defer("value", norm.index, normalized, shape)
        relu_input = normalized
        if add is not None:  # the add gate's of the norm's value and the skip as it is now
            addend = kept(skip, other)
            operands = lambda: (addend, normalized()) if skip_first else (normalized(), addend)  # noqa: E731
            relu_input = once(lambda: add.gate.forward(*operands())[0])
            store.defer("value", add.index, relu_input, shape)
            store.caches[add.index] = None
        if out is None:  # pooled only: the activation gate's, on its input when read
            relu_outputs = once(lambda: relu.gate.forward(relu_input()))
            store.defer("value", relu.index, lambda: relu_outputs()[0], shape)
            store.defer("cache", relu.index, lambda: relu_outputs()[1], lazy=True)
            return
        store.values[relu.index] = out
        # The relu's mask (> 0 where its input is), or the leaky relu's saved input.
        saved = (lambda: out > 0) if is_relu else normalized
        store.defer("cache", relu.index, saved, lazy=True)

    return run


def _backward(norm, relu, add=None):
    channel_norm = norm.op in CHANNEL_NORMS

    def run(store, needs):
        dout, cache = store.grads[relu.index], store.caches[norm.index]
        out = _relu_output_for_the_kernel(store, cache, dout)
        if out is not None:
            return _kernel_from_relu_output(store, dout, cache, out)
        if add is not None:  # the forward ran the gates, on arrays the kernel does not take
            return _through_skip_gates(store, needs, dout)
        kernel_cache = cache[0] if norm.op == "layernorm" else cache
        if not isinstance(kernel_cache, norm_kernels.ReluNormCache):
            (masked,) = relu.gate.backward(dout, store.cache(relu.index), (True,))
            store.grads[norm.index] = masked
            return norm.gate.backward(masked, store.cache(norm.index), needs)
        # The relu's mask is its output > 0 (its deferred cache): left to whoever reads
        # the norm's gradient, not a pass over the activation at every step.
        out = store.value(relu.index)
        store.defer("grad", norm.index, lambda: relu.gate.backward(dout, out > 0, (True,))[0])
        return norm.gate.backward(dout, cache, needs, relu=True)

    def _kernel_from_relu_output(store, dout, cache, out):
        """The norm's (and the add's) gradients and the relu's in one kernel call, which
        masks dout where the relu's output `out` is positive (the relu gate's dout * mask,
        bit for bit) and returns that masked dout too: the norm's gradient (and the add's,
        to both its operands)."""
        *grads, masked = norm_kernels.batchnorm_relu_output_backward(dout, cache, out)
        store.grads[norm.index] = masked
        if add is None:
            return grads
        store.grads[add.index] = masked
        return (*grads, masked)

    def _through_skip_gates(store, needs, dout):
        """(the norm inputs' gradients..., the skip's) through norm -> add -> relu."""
        (through,) = relu.gate.backward(dout, store.cache(relu.index), (True,))
        store.grads[add.index] = through
        to_add = add.gate.backward(through, store.cache(add.index), (True, True))
        at = add.inputs.index(norm)
        to_norm = unbroadcast(to_add[at], np.shape(store.value(norm.index)))
        store.grads[norm.index] = to_norm
        grads = norm.gate.backward(to_norm, store.cache(norm.index), needs[:-1])
        return (*grads, to_add[1 - at])

    def _relu_output_for_the_kernel(store, cache, dout):
        """The relu's output where the kernel takes the backward from it, else None: after
        the fused forward with a skip, or after a forward that ran the gates (a small
        activation) on the kernel's arrays, a batchnorm's plain cache, where the gates
        would take the same arrays (dout and the relu's output of x's dtype and shape: no
        add that broadcast or promoted the norm's output, no dout that the relu gate would
        keep in its dtype)."""
        kind = type(cache)
        if kind is norm_kernels.SkipReluNormCache:
            return store.value(relu.index)
        if kind is not norm_kernels.NormCache or not channel_norm:
            return None
        out = store.value(relu.index)
        takes = (
            type(dout) is np.ndarray
            and type(out) is np.ndarray
            and dout.dtype == out.dtype == cache.x.dtype
            and dout.shape == out.shape == cache.x.shape
        )
        return out if takes else None

    return run


def _pooled_backward(norm, add, relu, pool):
    """The backward step's run of norm -> add -> relu -> max_pool (or norm -> relu ->
    max_pool: add None): relu_pool.py's (the relu taken on the pooled gradient), then the
    add's and the norm's gates. norm -> leaky relu -> max_pool: the pool's gate, then
    norm_activation.py's step (the norm kernel takes the leaky relu's gradient; taken on
    the pooled gradient, a winner of overlapping windows would scale their sum, not each)."""
    if relu.op != "relu":
        return _pooled_activation_backward(norm, relu, pool)
    through_relu_pool = relu_pool.backward_run(relu, pool)
    x = norm.inputs[0]

    def run(store, needs):
        (through,) = through_relu_pool(store, (True,))
        if add is None:
            store.grads[norm.index] = through
            return norm.gate.backward(through, store.cache(norm.index), needs)
        shape = np.shape(store.values[x.index])  # the norm's output's; the add may broadcast
        to_norm = through if through.shape == shape else unbroadcast(through, shape)
        store.grads[add.index], store.grads[norm.index] = through, to_norm
        grads = norm.gate.backward(to_norm, store.cache(norm.index), needs[:-1])
        return (*grads, through)

    return run


def _pooled_activation_backward(norm, act, pool):
    through_norm_activation = activation_backward_run(norm, act)

    def run(store, needs):
        dpool = store.grads[pool.index]
        (store.grads[act.index],) = pool.gate.backward(dpool, store.cache(pool.index), (True,))
        return through_norm_activation(store, needs)

    return run


@register_pass
class ConvBatchnormRelu(FusionPass):
    length = 3

    def fuse_forward(self, steps):
        pooled = _pooled(steps)
        return conv_batchnorm_steps(
            steps, lambda relu: relu.op == "relu" and relu not in pooled, _conv_run
        )


def conv_batchnorm_steps(steps, takes, make_run):
    """`steps` with each conv -> spatial batchnorm -> act run of single-gate steps, each
    read by the next alone and `takes(act)`, replaced by one forward step that runs
    make_run(conv, norm, act)."""
    plain = {step.node for step in steps if not step.fused}
    reads = readers(steps)
    acts = {
        act
        for act in plain
        if takes(act)
        and (norm := act.inputs[0]).op == "spatial_batchnorm"
        and (conv := norm.inputs[0]).op == "conv"
        and {norm, conv} <= plain
        and reads[norm] == reads[conv] == 1
    }
    inner = {n for act in acts for n in (act.inputs[0], act.inputs[0].inputs[0])}

    def step(act):
        norm = act.inputs[0]
        conv = norm.inputs[0]
        inputs = conv.inputs + norm.inputs[1:]
        return Step(act, inputs, make_run(conv, norm, act), (), (conv, norm, act))

    return [step(s.node) if s.node in acts else s for s in steps if s.node not in inner]


def run_conv(conv, store):
    """The conv gate's forward on the store's values."""
    values = [store.values[i.index] for i in conv.inputs]
    store.values[conv.index], store.caches[conv.index] = conv.gate.forward(*values)


def _conv_run(conv, norm, relu):
    folded, norm_relu = batchnorm_fold.forward_run(conv, norm, relu), forward_run(norm, relu)

    def run(store):
        if norm.graph.training:
            run_conv(conv, store)
            return norm_relu(store)
        folded(store)

    return run


def activation_backward_run(norm, act):
    """norm_activation.py's fused backward step's run(store, needs), from the activation's
    gradient; also this module's after a max pool's."""

    def run(store, needs):
        dout, cache = store.grads[act.index], store.caches[norm.index]
        # A forward that ran the gates (small, or a batchnorm folded into its conv), or a
        # pooled forward's cache, read here by a backward from inside its run: the gates.
        if type(cache) is not norm_kernels.ActivationNormCache:
            (through,) = act.gate.backward(dout, store.cache(act.index), (True,))
            store.grads[norm.index] = through
            return norm.gate.backward(through, store.cache(norm.index), needs)
        # Read when asked for: the activation's saved input is the deferred norm value.
        store.defer(
            "grad", norm.index, lambda: act.gate.backward(dout, store.cache(act.index), (True,))[0]
        )
        return norm.gate.backward(dout, cache, needs, activation=act.gate.kernel)

    return run
