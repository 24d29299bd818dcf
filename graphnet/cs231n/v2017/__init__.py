"""The course package of Stanford CS231n's assignments 2 and 3, 2017 edition.

A 2017 notebook runs on graphnet when `cs231n` in its import lines becomes
`graphnet.cs231n.v2017`. Same layout as graphnet.cs231n, with the 2017 conventions:
dropout's `p` is the probability of DROPPING a unit, and FullyConnectedNet takes
`dropout=` (the drop probability; 0: no dropout) and `use_batchnorm=`. These are also the
conventions of graphnet's top-level course-named modules (graphnet.layers, ...).
"""
