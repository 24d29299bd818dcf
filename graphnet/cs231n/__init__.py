"""The course package of Stanford CS231n's assignments 2 and 3, for the 2018 to 2024
editions.

A notebook runs on graphnet when `cs231n` in its import lines becomes `graphnet.cs231n`:

    from graphnet.cs231n.classifiers.fc_net import *
    from graphnet.cs231n.data_utils import get_CIFAR10_data
    from graphnet.cs231n.gradient_check import eval_numerical_gradient_array
    from graphnet.cs231n.solver import Solver

The modules follow the course's layout (layers, fast_layers, layer_utils, optim, solver,
gradient_check, data_utils, vis_utils, classifiers.fc_net, classifiers.cnn, and
assignment 3's rnn_layers, classifiers.rnn, captioning_solver, and the Transformer_Captioning
notebook's transformer_layers, classifiers.transformer, captioning_solver_transformer) and these
editions' conventions: dropout's `p` is the probability of KEEPING a unit, and
FullyConnectedNet takes `dropout_keep_ratio=` (or `dropout=`, its 2018-2020 name) and
`normalization=`. The 2017 edition's conventions are in graphnet.cs231n.v2017; the 2025
edition's transformer files (renamed layers, the Vision Transformer) in graphnet.cs231n.v2025.
"""
