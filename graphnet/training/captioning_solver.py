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
model.loss(features, captions). Like the course's, it measures no accuracy unless asked:
with record_accuracy=True (an addition) it records, after the first iteration and every
epoch, the fraction of captions that model.sample says exactly (caption_accuracy) on
num_train_samples training images and on the 'val_' split, and keeps the best
validation params, as the Solver does with its classification accuracy.
"""

from collections.abc import Mapping
from typing import Any
import numpy as np

from .solver import Solver

__all__ = ["CaptioningSolver", "CaptioningSolverTransformer"]


class CaptioningSolver(Solver):
    """CaptioningSolver(model, data, update_rule='sgd', optim_config={}, lr_decay=1.0,
    batch_size=100, num_epochs=10, print_every=10, verbose=True, ...): data holds
    'train_captions' (N, T + 1) integers, 'train_image_idxs' (N,) and 'train_features'
    (images, D); the rest of the data dict is not used. The other arguments are
    graphnet.Solver's; num_train_samples and num_val_samples (None: all) size the
    subsamples that record_accuracy=True samples captions for."""

    def __init__(
        self, model: Any, data: Mapping, *, record_accuracy: bool = False, **kwargs: Any
    ) -> None:
        if kwargs.get("distributed") not in (None, False):
            # Its minibatches are captions of images, which the data-parallel split of
            # (X, y) minibatches does not shard: refuse rather than train each process alone.
            raise ValueError(
                "CaptioningSolver does not train data-parallel (distributed=...); "
                "train the captioning models in one process"
            )
        self.record_accuracy = bool(record_accuracy)
        super().__init__(model, data, **kwargs)

    def _take_data(self, model, data):
        if not isinstance(data, Mapping):
            raise TypeError(
                f"data must be a dict with 'train_captions', 'train_image_idxs' "
                f"and 'train_features', got {type(data).__name__}"
            )
        keys = ("train_captions", "train_image_idxs", "train_features")
        missing = [k for k in keys if k not in data]
        if missing:
            raise ValueError(
                f"data lacks {', '.join(missing)} (it has "
                f"{', '.join(map(str, data)) or 'nothing'}); the "
                "CaptioningSolver needs " + ", ".join(map(repr, keys))
            )
        captions, idxs, features = (np.asarray(data[k]) for k in keys)
        if captions.ndim != 2 or captions.dtype.kind not in "iu" or captions.shape[0] == 0:
            raise ValueError(
                f"data['train_captions'] must be integer word indices (N, T + 1) "
                f"with N >= 1, got {captions.dtype} {captions.shape}"
            )
        if idxs.shape != captions.shape[:1] or idxs.dtype.kind not in "iu":
            raise ValueError(
                f"data['train_image_idxs'] must be one integer per caption, "
                f"shape ({captions.shape[0]},), got {idxs.dtype} {idxs.shape}"
            )
        if features.ndim != 2 or not (0 <= idxs.min() and idxs.max() < features.shape[0]):
            raise ValueError(
                f"data['train_image_idxs'] range over [{idxs.min()}, "
                f"{idxs.max()}] but data['train_features'] has shape "
                f"{features.shape}: one row of features per image"
            )
        needed = ("val_captions", "val_image_idxs", "val_features", "word_to_idx")
        missing = [k for k in needed if k not in data] if self.record_accuracy else []
        if missing:
            raise ValueError(
                f"record_accuracy=True samples the 'val_' split: data lacks {', '.join(missing)}"
            )
        self.data = data
        self.train_captions, self.train_image_idxs = captions, idxs
        self.train_features = features

    def _sample_bytes(self):
        return self.train_features[:1].nbytes + self.train_captions[:1].nbytes

    @property
    def num_train(self):
        return self.train_captions.shape[0]

    def _step(self):
        batch = self.rng.choice(self.num_train, self.batch_size)
        features = self.train_features[self.train_image_idxs[batch]]
        self._update(*self.model.loss(features, self.train_captions[batch]))

    def caption_accuracy(self, split: str = "val", num_samples: Any = None) -> float:
        """The fraction of the split's captions (a random subsample of num_samples of
        them) that model.sample says word for word, for the images they describe."""
        from ..data.number_captions import caption_accuracy

        captions = np.asarray(self.data[f"{split}_captions"])
        idxs = np.asarray(self.data[f"{split}_image_idxs"])
        if num_samples is not None and len(captions) > num_samples:
            picks = self.rng.choice(len(captions), num_samples)
            captions, idxs = captions[picks], idxs[picks]
        features = np.asarray(self.data[f"{split}_features"])[idxs]
        sampled = self.model.sample(features, max_length=captions.shape[1])
        return caption_accuracy(sampled, captions, self.data["word_to_idx"])

    def _split_accuracy(self, split):
        return self.caption_accuracy(
            split, self.num_train_samples if split == "train" else self.num_val_samples
        )

    def _record_accuracy(self, bar):
        if self.record_accuracy:  # the course's CaptioningSolver measures none
            super()._record_accuracy(bar)


class CaptioningSolverTransformer(CaptioningSolver):
    """CaptioningSolverTransformer(model, data, idx_to_word, learning_rate=0.001,
    batch_size=100, num_epochs=10, print_every=10, verbose=True): the course's solver of
    the Transformer_Captioning notebook, which trains with Adam at `learning_rate` (torch's
    Adam and graphnet's adam take the same steps). It is the CaptioningSolver above with
    that update rule, so graphnet's other Solver arguments (seed=, checkpoint_name=, ...)
    work too; `idx_to_word` is kept as the course keeps it, for decoding samples."""

    def __init__(
        self,
        model: Any,
        data: Mapping,
        idx_to_word: Any,
        *,
        learning_rate: float = 0.001,
        **kwargs: Any,
    ) -> None:
        for fixed in ("update_rule", "optim_config"):
            if fixed in kwargs:
                raise ValueError(
                    f"CaptioningSolverTransformer trains with Adam at learning_rate=; "
                    f"it takes no {fixed}= (CaptioningSolver does)"
                )
        self.idx_to_word = idx_to_word
        self.learning_rate = learning_rate
        optim_config = {"learning_rate": learning_rate}
        super().__init__(model, data, update_rule="adam", optim_config=optim_config, **kwargs)
