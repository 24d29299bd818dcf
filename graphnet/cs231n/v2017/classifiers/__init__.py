"""The course's classifiers, 2017 edition: fc_net (TwoLayerNet, FullyConnectedNet with
`dropout=` the drop probability and `use_batchnorm=`) and cnn (ThreeLayerConvNet)."""
