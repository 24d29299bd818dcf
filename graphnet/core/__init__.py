"""The engine: nodes, the graph builder, plans, the executor and its value store."""
