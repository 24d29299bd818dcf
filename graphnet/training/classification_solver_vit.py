"""The 2025 Transformer_Captioning notebook's ClassificationSolverViT: epochs of shuffled
minibatches with the course's Adam, each followed by a pass over the test data."""

from typing import Any, Dict, List, Tuple

import numpy as np

from .optim import adam


def _split(data: Any, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """(images, labels) of a dataset given as a pair of arrays or a sequence of
    (image, label) pairs (a torch-style dataset)."""
    try:
        if isinstance(data, tuple) and len(data) == 2 and np.ndim(data[1]) == 1:
            images, labels = data
        else:
            images, labels = zip(*data)
        images, labels = np.asarray(images), np.asarray(labels)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"ClassificationSolverViT: {what} must be (images, labels) or a sequence of "
            f"(image, label) pairs: {err}"
        ) from None
    if len(images) != len(labels) or not len(labels):
        raise ValueError(
            f"ClassificationSolverViT: {what} holds {len(images)} images and "
            f"{len(labels)} labels; it needs one label per image, at least one"
        )
    return images, labels.astype(np.int64)


class ClassificationSolverViT:
    """ClassificationSolverViT(train_data, test_data, model, learning_rate=1e-4,
    weight_decay=0.0, batch_size=64, num_epochs=2), the course's: train() runs num_epochs
    epochs, each over the training data in shuffled minibatches (numpy's random state)
    with Adam (torch's: weight_decay adds weight_decay · w to every gradient), then over
    the test data in eval mode, and records results["train_loss"], ["train_acc@1"],
    ["test_loss"], ["test_acc@1"] per epoch (the mean loss and top-1 accuracy over the
    samples) and results["best_test_acc"]. The data are (images, labels) arrays or
    sequences of (image, label) pairs; the model's loss(X, y) gives (loss, grads), as
    graphnet's VisionTransformer."""

    def __init__(self, train_data: Any, test_data: Any, model: Any, **kwargs: Any) -> None:
        self.model = model
        self.train_data = _split(train_data, "train_data")
        self.test_data = _split(test_data, "test_data")
        self.learning_rate = float(kwargs.pop("learning_rate", 1e-4))
        self.weight_decay = float(kwargs.pop("weight_decay", 0.0))
        self.batch_size = int(kwargs.pop("batch_size", 64))
        self.num_epochs = int(kwargs.pop("num_epochs", 2))
        if kwargs:
            raise ValueError(
                f"ClassificationSolverViT: unknown arguments {', '.join(sorted(kwargs))}"
            )
        if self.batch_size < 1 or self.num_epochs < 0 or self.weight_decay < 0:
            raise ValueError(
                "ClassificationSolverViT: batch_size must be positive, num_epochs and "
                "weight_decay not negative"
            )
        self.optim_configs: Dict[str, dict] = {
            name: {"learning_rate": self.learning_rate} for name in model.params
        }
        self._reset()

    def _reset(self) -> None:
        self.epoch = 0
        self.results: Dict[str, Any] = {
            "train_loss": [],
            "train_acc@1": [],
            "test_loss": [],
            "test_acc@1": [],
        }

    def _step(self, X: np.ndarray, y: np.ndarray) -> Tuple[float, int]:
        """One Adam step on a minibatch: its loss and how many it classified right."""
        model = self.model
        loss, grads = model.loss(X, y)
        # loss() ran the batch in training mode: the scores it saw are the graph's.
        correct = int(np.sum(np.argmax(model.graph["scores"].value, axis=1) == y))
        for name, w in model.params.items():
            dw = grads[name] + self.weight_decay * w if self.weight_decay else grads[name]
            model.params[name], self.optim_configs[name] = adam(w, dw, self.optim_configs[name])
        return float(loss), correct

    def _evaluate(self, X: np.ndarray, y: np.ndarray) -> Tuple[float, int]:
        """The mean loss over a test minibatch and how many it classified right (eval
        mode)."""
        scores = np.asarray(self.model.loss(X), dtype=np.float64)
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -float(np.mean(log_probs[np.arange(len(y)), y]))
        return loss, int(np.sum(np.argmax(scores, axis=1) == y))

    def _epoch(self, data: Tuple[np.ndarray, np.ndarray], train: bool) -> List[float]:
        images, labels = data
        order = np.random.permutation(len(labels)) if train else np.arange(len(labels))
        total_loss = total_correct = 0.0
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            step = self._step if train else self._evaluate
            loss, correct = step(images[batch], labels[batch])
            total_loss += loss * len(batch)
            total_correct += correct
        return [total_loss / len(labels), total_correct / len(labels)]

    def train(self, device: str = "cpu") -> None:
        """num_epochs epochs of training, each followed by the test pass (`device` is the
        course's argument; graphnet runs on the CPU)."""
        best = 0.0
        for epoch in range(self.num_epochs):
            self.epoch = epoch
            loss, accuracy = self._epoch(self.train_data, train=True)
            self.results["train_loss"].append(loss)
            self.results["train_acc@1"].append(accuracy)
            loss, accuracy = self._epoch(self.test_data, train=False)
            self.results["test_loss"].append(loss)
            self.results["test_acc@1"].append(accuracy)
            best = max(best, accuracy)
        self.results["best_test_acc"] = best
