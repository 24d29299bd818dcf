"""Forward and backward of a graph, and of a torch module, on the same feeds and the same
upstream gradient, as dicts the tests compare."""

import numpy as np


def upstream_for(value, seed=1):
    """A fixed random upstream gradient of the output's shape (None for a scalar: 1)."""
    if np.ndim(value) == 0:
        return None
    return np.random.default_rng(seed).normal(size=np.shape(value)).astype(np.asarray(value).dtype)


def graphnet_run(graph, feeds, output=None):
    """(output value, {name: gradient} of every param and float input) after a forward
    and a backward seeded with upstream_for."""
    output = output or graph.sinks[0].name
    value = graph.run(output, feeds)
    graph.backward(output, upstream_for(value))
    sources = [
        n
        for n in graph.nodes
        if n.kind in ("param", "input") and n.dtype.kind == "f" and n.grad is not None
    ]
    return np.asarray(value), {n.name: np.asarray(n.grad) for n in sources}


def torch_run(module, feeds, input_names):
    """The same for a torch module called on the feeds in `input_names` order: the
    gradients of its named parameters and of the float inputs."""
    import torch

    tensors = {
        k: torch.tensor(np.asarray(v), requires_grad=np.asarray(v).dtype.kind == "f")
        for k, v in feeds.items()
    }
    module.zero_grad()
    out = module(*[tensors[name] for name in input_names])
    upstream = upstream_for(out.detach().numpy())
    out.backward(None if upstream is None else torch.tensor(upstream))
    grads = {name: p.grad.numpy() for name, p in module.named_parameters() if p.grad is not None}
    grads.update({k: t.grad.numpy() for k, t in tensors.items() if t.grad is not None})
    return out.detach().numpy(), grads


def assert_runs_equal(got, expected, rtol, atol=0.0, transposed=()):
    """Equal outputs and gradients (every one the reference has; a graph back from PyTorch
    also differentiates inputs a model marked requires_grad=False); names in `transposed`
    are compared as got.T."""
    (value, grads), (ref_value, ref_grads) = got, expected
    np.testing.assert_allclose(value, ref_value, rtol=rtol, atol=atol, err_msg="output")
    assert set(ref_grads) <= set(grads), (sorted(grads), sorted(ref_grads))
    for name, ref_grad in ref_grads.items():
        grad = grads[name]
        np.testing.assert_allclose(
            grad.T if name in transposed else grad,
            ref_grad,
            rtol=rtol,
            atol=atol,
            err_msg=f"gradient of {name}",
        )
