"""The torch.nn modules that `to_torch` places where a gate depends on train/eval mode.
Imported only by the converters (this module imports torch)."""
import torch
import torch.nn.functional as F


class BatchNorm(torch.nn.Module):
    """graphnet's batchnorm and spatial_batchnorm: F.batch_norm with the node's running
    averages as buffers, gamma and beta passed in (they are the graph's params, with the
    graph's names). graphnet's momentum keeps the old average (running = momentum *
    running + (1 - momentum) * batch); torch's momentum is the other share."""

    def __init__(self, running_mean, running_var, eps: float, momentum: float):
        super().__init__()
        self.register_buffer("running_mean", running_mean)
        self.register_buffer("running_var", running_var)
        self.eps, self.momentum = eps, momentum

    def forward(self, x, gamma, beta):
        return F.batch_norm(x, self.running_mean, self.running_var, gamma, beta,
                            self.training, 1.0 - self.momentum, self.eps)

    def extra_repr(self):
        return f"eps={self.eps}, momentum={self.momentum} (graphnet's: the share kept)"
