"""The course's CaptioningSolver (CS231n assignment 3): minibatch training of a captioning
model on data in the layout of the course's COCO data (load_coco_data), such as
graphnet.data.load_number_captions():

    solver = CaptioningSolver(model, data, update_rule="adam", num_epochs=50,
                              batch_size=25, optim_config={"learning_rate": 5e-3},
                              lr_decay=0.95, verbose=True, print_every=10)
    solver.train()
    plt.plot(solver.loss_history)

It is graphnet's Solver (update rules, lr decay, progress, checkpoints with
checkpoint_name=, resume with graphnet.load(path, into=solver)) with the captioning data
in place of (X, y): each step draws batch_size captions (with repeats, as the course's
sample_coco_minibatch) and their images' features and calls
model.loss(features, captions). Like the course's, it measures no accuracy.
"""
from collections.abc import Mapping
import numpy as np

from .solver import Solver

__all__ = ["CaptioningSolver"]


class CaptioningSolver(Solver):
    """CaptioningSolver(model, data, update_rule='sgd', optim_config={}, lr_decay=1.0,
    batch_size=100, num_epochs=10, print_every=10, verbose=True, ...): data holds
    'train_captions' (N, T + 1) integers, 'train_image_idxs' (N,) and 'train_features'
    (images, D); the rest of the data dict is not used. The other arguments are
    graphnet.Solver's (num_train_samples and num_val_samples are accepted and unused)."""

    def _take_data(self, model, data):
        if not isinstance(data, Mapping):
            raise TypeError(f"data must be a dict with 'train_captions', 'train_image_idxs' "
                            f"and 'train_features', got {type(data).__name__}")
        keys = ("train_captions", "train_image_idxs", "train_features")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(f"data lacks {', '.join(missing)} (it has "
                             f"{', '.join(map(str, data)) or 'nothing'}); the "
                             "CaptioningSolver needs " + ", ".join(map(repr, keys)))
        captions, idxs, features = (np.asarray(data[k]) for k in keys)
        if captions.ndim != 2 or captions.dtype.kind not in "iu" or captions.shape[0] == 0:
            raise ValueError(f"data['train_captions'] must be integer word indices (N, T + 1) "
                             f"with N >= 1, got {captions.dtype} {captions.shape}")
        if idxs.shape != captions.shape[:1] or idxs.dtype.kind not in "iu":
            raise ValueError(f"data['train_image_idxs'] must be one integer per caption, "
                             f"shape ({captions.shape[0]},), got {idxs.dtype} {idxs.shape}")
        if features.ndim != 2 or not (0 <= idxs.min() and idxs.max() < features.shape[0]):
            raise ValueError(f"data['train_image_idxs'] range over [{idxs.min()}, "
                             f"{idxs.max()}] but data['train_features'] has shape "
                             f"{features.shape}: one row of features per image")
        self.data = data
        self.train_captions, self.train_image_idxs = captions, idxs
        self.train_features = features

    @property
    def num_train(self):
        return self.train_captions.shape[0]

    def _step(self):
        batch = self.rng.choice(self.num_train, self.batch_size)
        features = self.train_features[self.train_image_idxs[batch]]
        self._update(*self.model.loss(features, self.train_captions[batch]))

    def _record_accuracy(self, bar):
        """The course's CaptioningSolver measures no accuracy."""
