"""The course's image-captioning RNN (CS231n assignment 3), built as graphs.

`model.graph`, the training graph: inputs "features" (N, input_dim), "captions" (N, T + 1)
and "mask" (N, T); the words in are captions[:, :-1] and the words to predict
captions[:, 1:] (slice nodes "captions_in", "captions_out"); then

    h0 = affine(features, W_proj, b_proj)             "h0"      (N, H)
    x = word_embedding(captions_in, W_embed)          "x"       (N, T, W)
    h = rnn or lstm(x, h0, Wx, Wh, b)                 "h"       (N, T, H)
    scores = temporal_affine(h, W_vocab, b_vocab)     "scores"  (N, T, V)
    loss = temporal_softmax_loss(scores, captions_out, mask)   "loss"

`model.sampler`, one step of greedy decoding on the same params: inputs "word" (N,),
"prev_h" (N, H) (and "prev_c" for the LSTM), nodes "next_h" (and "next_c") and
"word_scores" (N, V), with "h0" from "features" to start from. `sample` copies the
params into it, so it always decodes with the model's current weights.
"""

from typing import Any, Dict, Mapping, Tuple

import numpy as np

from ..core.graph import Graph
from ..errors import GraphError
from .classifiers import GraphModel

__all__ = ["CaptioningRNN"]


class CaptioningRNN(GraphModel):
    """CaptioningRNN(word_to_idx, input_dim=512, wordvec_dim=128, hidden_dim=128,
    cell_type='rnn', dtype=np.float32), the course's model: image features projected to
    the initial hidden state, word embeddings, a vanilla RNN or an LSTM, and an affine
    layer to scores over the vocabulary at every step.

    word_to_idx: a dict word -> index over V words, with '<NULL>' (padding; its positions
    count for no loss) and, for sampling, '<START>'. Params (the course's names and
    initialisation, drawn with np.random.randn in the course's order): W_embed (V, W),
    W_proj (D, H), b_proj (H,), Wx (W, kH), Wh (H, kH), b (kH,), W_vocab (H, V),
    b_vocab (V,) with k = 1 for 'rnn' and 4 for 'lstm'.
    """

    input_name = "features"

    def __init__(
        self,
        word_to_idx: Mapping[str, int],
        input_dim: int = 512,
        wordvec_dim: int = 128,
        hidden_dim: int = 128,
        cell_type: str = "rnn",
        dtype: Any = np.float32,
    ) -> None:
        if cell_type not in ("rnn", "lstm"):
            raise ValueError(f'Invalid cell_type "{cell_type}": it must be "rnn" or "lstm"')
        word_to_idx = {str(w): int(i) for w, i in dict(word_to_idx).items()}
        if "<NULL>" not in word_to_idx:
            raise ValueError("word_to_idx must hold '<NULL>', the padding word")
        vocab_size = len(word_to_idx)  # V, as in the course (captions are checked to fit)
        config = dict(
            word_to_idx=word_to_idx,
            input_dim=int(input_dim),
            wordvec_dim=int(wordvec_dim),
            hidden_dim=int(hidden_dim),
            cell_type=cell_type,
            dtype=np.dtype(dtype).name,
        )
        super().__init__(config, 0.0, dtype)
        self.cell_type = cell_type
        self.word_to_idx = word_to_idx
        self.idx_to_word = {i: w for w, i in word_to_idx.items()}
        self._null = word_to_idx["<NULL>"]
        self._start = word_to_idx.get("<START>")
        self._end = word_to_idx.get("<END>")
        D, W, H, V = int(input_dim), int(wordvec_dim), int(hidden_dim), vocab_size
        k = 4 if cell_type == "lstm" else 1
        # The course's order of draws: np.random.seed(...) gives the course's weights.
        self._weight("W_embed", (V, W), 1 / 100)
        self._weight("W_proj", (D, H), 1 / np.sqrt(D))
        self._zeros("b_proj", H)
        self._weight("Wx", (W, k * H), 1 / np.sqrt(W))
        self._weight("Wh", (H, k * H), 1 / np.sqrt(H))
        self._zeros("b", k * H)
        self._weight("W_vocab", (H, V), 1 / np.sqrt(H))
        self._zeros("b_vocab", V)
        self._build_training_graph()
        self.sampler = self._build_sampler()

    def _build_training_graph(self):
        g, p = self.graph, self.graph
        features = g.input("features", shape=(None, self.config["input_dim"]), requires_grad=False)
        captions = g.input("captions", shape=(None, None), dtype=np.int64)
        mask = g.input("mask", shape=(None, None), dtype=np.int64)
        captions_in = g.index(captions, (slice(None), slice(None, -1)), name="captions_in")
        captions_out = g.index(captions, (slice(None), slice(1, None)), name="captions_out")
        h0 = g.affine(features, p["W_proj"], p["b_proj"], name="h0")
        x = g.word_embedding(captions_in, p["W_embed"], name="x")
        recurrent = g.lstm if self.cell_type == "lstm" else g.rnn
        h = recurrent(x, h0, p["Wx"], p["Wh"], p["b"], name="h")
        scores = g.temporal_affine(h, p["W_vocab"], p["b_vocab"], name="scores")
        g.temporal_softmax_loss(scores, captions_out, mask, name="loss")

    def _build_sampler(self) -> Graph:
        s = Graph(dtype=self.dtype)
        p = {name: s.param(name, value) for name, value in self.params.items()}
        H = self.config["hidden_dim"]
        features = s.input("features", shape=(None, self.config["input_dim"]), requires_grad=False)
        s.affine(features, p["W_proj"], p["b_proj"], name="h0")
        word = s.input("word", shape=(None,), dtype=np.int64)
        prev_h = s.input("prev_h", shape=(None, H), requires_grad=False)
        x = s.take(p["W_embed"], word, name="x")
        if self.cell_type == "lstm":
            prev_c = s.input("prev_c", shape=(None, H), requires_grad=False)
            state = s.lstm_step(x, prev_h, prev_c, p["Wx"], p["Wh"], p["b"], name="state")
            next_h = s.index(state, 0, name="next_h")
            s.index(state, 1, name="next_c")
        else:
            next_h = s.rnn_step(x, prev_h, p["Wx"], p["Wh"], p["b"], name="next_h")
        s.affine(next_h, p["W_vocab"], p["b_vocab"], name="word_scores")
        return s

    # ----- the course's two methods --------------------------------------------------

    # The course's signature, not the classifiers' loss(X, y=None): captions are required.
    def loss(  # type: ignore[override]
        self,
        features: Any,
        captions: Any,
    ) -> Tuple[float, Dict[str, np.ndarray]]:
        """The course's training loss on a minibatch: features (N, D), captions (N, T + 1)
        integers (each starts with <START>; <NULL> pads). Every step t predicts word
        t + 1 from the words up to t; steps whose target is <NULL> count for nothing.
        Returns (loss, grads), grads a dict param name -> gradient."""
        features = self.check_input(features, "features")
        captions = self._check_captions(captions, features.shape[0])
        mask = (captions[:, 1:] != self._null).astype(np.int64)
        g = self.graph
        with g.lock:
            loss = g.run("loss", features=features, captions=captions, mask=mask)
            g.backward("loss")
            return float(loss), g.grads

    def sample(self, features: Any, max_length: int = 30) -> np.ndarray:
        """Greedy captions (N, max_length) of int32 word indices for features (N, D): the
        first input word is <START>, each next one the highest-scoring word (as in the
        course, decoding does not stop at <END>)."""
        if self._start is None:
            raise GraphError("CaptioningRNN.sample needs '<START>' in word_to_idx")
        features = self.check_input(features, "features", "sample")
        s, N = self.sampler, features.shape[0]
        with s.lock:
            for name, value in self.params.items():
                s.params[name] = value
            h = s.run("h0", features=features)
            c = np.zeros_like(h)
            word = np.full(N, self._start, dtype=np.int64)
            captions = np.full((N, int(max_length)), self._null, dtype=np.int32)
            outputs = ["word_scores", "next_h"] + (["next_c"] if self.cell_type == "lstm" else [])
            for t in range(int(max_length)):
                feeds = dict(word=word, prev_h=h, **({"prev_c": c} if "next_c" in outputs else {}))
                scores, h, *rest = s.run(outputs, feeds)
                c = rest[0] if rest else c
                word = np.argmax(scores, axis=1)
                captions[:, t] = word
        return captions

    # ----- validation -----------------------------------------------------------------

    @property
    def input_shape(self):
        return (self.config["input_dim"],)

    def _check_captions(self, captions: Any, num_samples: int) -> np.ndarray:
        captions = np.asarray(captions)
        V = len(self.word_to_idx)
        if (
            captions.dtype.kind not in "iu"
            or captions.ndim != 2
            or captions.shape[0] != num_samples
            or captions.shape[1] < 2
        ):
            raise GraphError(
                f"CaptioningRNN.loss: captions (input 'captions' of node "
                f"'captions_in') must be integer word indices of shape "
                f"({num_samples}, T + 1) with T >= 1 for the {num_samples} "
                f"features, got {captions.dtype} {captions.shape}"
            )
        if captions.size and (captions.min() < 0 or captions.max() >= V):
            raise GraphError(
                f"CaptioningRNN.loss: captions hold word indices from "
                f"{captions.min()} to {captions.max()}, outside the "
                f"vocabulary [0, {V})"
            )
        return captions.astype(np.int64)
