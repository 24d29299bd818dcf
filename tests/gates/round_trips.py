"""A graph saved and loaded, or converted to networkx and back, is the same graph: the same
nodes, inputs and hyperparameters, and the same loss and gradients on the same feeds."""

import numpy as np

import graphnet as gn


def described(graph):
    return {
        n.name: (n.op, [i.name for i in n.inputs], n.gate.attrs() if n.gate else None)
        for n in graph.nodes
    }


def assert_round_trip_keeps_the_graph(g, feeds, forward_and_grads, route, path):
    """route "checkpoint" (gn.save/gn.load through `path`) or "networkx";
    forward_and_grads(graph, feeds) -> (loss, {name: gradient})."""
    loss, grads = forward_and_grads(g, feeds)
    if route == "checkpoint":
        gn.save(g, path)
        rebuilt = gn.load(path)
    else:
        rebuilt = gn.Graph.from_networkx(g.to_networkx())
    assert described(rebuilt) == described(g)
    loss_again, grads_again = forward_and_grads(rebuilt, feeds)
    assert loss_again == loss
    for name, grad in grads.items():
        np.testing.assert_array_equal(grads_again[name], grad)
