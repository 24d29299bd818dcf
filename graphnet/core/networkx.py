"""Graph <-> networkx.DiGraph, so the graph can be analysed with networkx and rebuilt."""

import networkx as nx
import numpy as np

from ..errors import GraphError


def to_networkx(graph):
    """A DiGraph with one vertex per node (keyed by name, carrying op, kind, shape, dtype,
    value, grad, requires_grad, the gate's attrs and its state) and an edge from each input
    to its consumer whose `positions` lists the argument slots it fills."""
    digraph = nx.DiGraph(dtype=str(graph.dtype))
    for node in graph.nodes:
        digraph.add_node(
            node.name,
            op=node.op,
            kind=node.kind,
            shape=node.shape,
            static_shape=node.static_shape,
            dtype=None if node.dtype is None else str(node.dtype),
            value=node.value,
            grad=node.grad,
            requires_grad=node.requires_grad,
            attrs=node.gate.attrs() if node.gate else {},
            state=node.state,
        )
        for position, inp in enumerate(node.inputs):
            if digraph.has_edge(inp.name, node.name):
                digraph.edges[inp.name, node.name]["positions"].append(position)
            else:
                digraph.add_edge(inp.name, node.name, positions=[position])
    return digraph


def from_networkx(digraph, graph_class):
    """Rebuild a Graph from a DiGraph in the layout `to_networkx` writes."""
    try:
        order = list(nx.topological_sort(digraph))
    except nx.NetworkXUnfeasible:
        cycle = " -> ".join(str(u) for u, _ in nx.find_cycle(digraph))
        raise GraphError(f"the graph has a cycle: {cycle}") from None
    graph = graph_class(dtype=digraph.graph.get("dtype", "float64"))
    for name in order:
        data = digraph.nodes[name]
        kind = data.get("kind", "gate")
        if kind == "input":
            node = graph.input(
                name,
                shape=data.get("static_shape", data.get("shape")),
                dtype=data.get("dtype"),
                requires_grad=data.get("requires_grad", True),
            )
        elif kind == "param":
            node = graph.param(name, data["value"], dtype=data.get("dtype"))
        elif kind == "const":
            node = graph.const(data["value"], name=name, dtype=data.get("dtype"))
        else:
            node = _rebuild_gate(graph, digraph, name, data)
        node.state.update(_copy_state(data.get("state", {})))
    return graph


def _rebuild_gate(graph, digraph, name, data):
    op = data.get("op")
    slots = {}
    for source in digraph.predecessors(name):
        for position in digraph.edges[source, name].get("positions", [0]):
            slots[position] = graph[source]
    if sorted(slots) != list(range(len(slots))):
        raise GraphError(
            f"node {name!r}: its input edges fill argument slots "
            f"{sorted(slots)}, not 0..{len(slots) - 1}"
        )
    try:
        return graph.apply(
            op, *[slots[i] for i in range(len(slots))], name=name, **data.get("attrs", {})
        )
    except GraphError as err:
        raise GraphError(f"node {name!r}: {err}") from None


def _copy_state(state):
    return {
        key: value.copy() if isinstance(value, np.ndarray) else value
        for key, value in state.items()
    }
