"""The course's classifiers (2018+ editions): fc_net (TwoLayerNet, FullyConnectedNet) and cnn
(ThreeLayerConvNet), each built as a graphnet graph."""
