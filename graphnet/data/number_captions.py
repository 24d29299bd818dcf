"""Captioning handwritten numbers: a small real task for recurrent nets, with no download.

Each image is a number of one to `max_digits` digits written with scikit-learn's 8x8
handwritten digits side by side (right-aligned, blank where a shorter number has no
digit); its caption is the number in English words: 342 -> "three hundred forty two",
7015 -> "seven thousand fifteen". A captioning model has to read the digits from the
pixels and say the number: words for tens and teens, "hundred" and "thousand" in their
places, no word for a zero digit.

The data come in the layout of CS231n's COCO captioning data (``load_coco_data``), so the
course's CaptioningRNN and its solver run on them unchanged:

    data = load_number_captions()
    data["train_captions"]    # int32 (N, T): <START> words <END> <NULL>...
    data["train_image_idxs"]  # int32 (N,): the image each caption describes
    data["train_features"]    # float32 (N_images, 64 * max_digits): pixels in [0, 1]
    data["train_images"]      # float32 (N_images, 1, 8, 8 * max_digits): the same, as images
    data["train_numbers"]     # int64 (N_images,): the number in each image
    data["word_to_idx"], data["idx_to_word"]   # <NULL> 0, <START> 1, <END> 2, <UNK> 3, words

and likewise "val_" and "test_" (<UNK> is never used: it keeps COCO's indices). The
three splits write their numbers with disjoint sets of handwritten digits, so validation
and test measure reading unseen handwriting.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .digits import load_digits

SPECIAL_TOKENS = ("<NULL>", "<START>", "<END>", "<UNK>")  # COCO's indices 0..3
_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = (
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
VOCABULARY = SPECIAL_TOKENS + _ONES + _TEENS + _TENS[2:] + ("hundred", "thousand")
MAX_DIGITS = 6  # up to 999,999: the words above cover every number below a million
_GLYPH = 8  # the digits are 8 x 8 pixels

__all__ = [
    "MAX_DIGITS",
    "VOCABULARY",
    "caption_accuracy",
    "decode_captions",
    "load_number_captions",
    "sample_minibatch",
    "spell_number",
]


def _is_integer(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def spell_number(n: int) -> str:
    """The number 0 <= n < 1,000,000 in English words, as a string: 7015 -> 'seven
    thousand fifteen' (American usage: no 'and', no hyphens)."""
    if not (_is_integer(n) and 0 <= n < 10**MAX_DIGITS):
        raise ValueError(f"spell_number: n must be an integer in [0, {10**MAX_DIGITS}), got {n!r}")
    n = int(n)
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    words = (_below_thousand(thousands) + ["thousand"] if thousands else []) + _below_thousand(rest)
    return " ".join(words)


def _below_thousand(n):
    """Words for 0 <= n < 1000; none for 0."""
    hundreds, rest = divmod(n, 100)
    words = [_ONES[hundreds], "hundred"] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words += [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    elif rest >= 10:
        words.append(_TEENS[rest - 10])
    elif rest:
        words.append(_ONES[rest])
    return words


def _caption_length(max_digits):
    """Tokens in the longest caption: <START>, the words of the wordiest number (all
    sevens: two-word tens, a one-word digit and "hundred" in every group), <END>."""
    return len(spell_number(int("7" * max_digits)).split()) + 2


def _draw_numbers(rng, count, max_digits):
    """`count` numbers whose length in digits is uniform over 1..max_digits, uniform
    within a length (so short numbers are as common as long ones)."""
    lengths = rng.integers(1, max_digits + 1, size=count)
    low = np.where(lengths == 1, 0, 10 ** (lengths - 1))
    return rng.integers(low, 10**lengths)


def _render(numbers, glyphs_by_digit, rng, max_digits):
    """Images (N, 1, 8, 8 * max_digits): each digit of each number drawn as a random
    glyph of that digit from the split's pool, right-aligned; leading places blank."""
    images = np.zeros((len(numbers), 1, _GLYPH, _GLYPH * max_digits), dtype=np.float32)
    for i, number in enumerate(numbers):
        digits = str(number)
        for place, digit in enumerate(digits, start=max_digits - len(digits)):
            pool = glyphs_by_digit[int(digit)]
            images[i, 0, :, place * _GLYPH : (place + 1) * _GLYPH] = pool[rng.integers(len(pool))]
    return images


def _encode(numbers, word_to_idx, length):
    captions = np.full((len(numbers), length), word_to_idx["<NULL>"], dtype=np.int32)
    for i, number in enumerate(numbers):
        tokens = ["<START>", *spell_number(int(number)).split(), "<END>"]
        captions[i, : len(tokens)] = [word_to_idx[w] for w in tokens]
    return captions


def load_number_captions(
    num_train: int = 5000,
    num_val: int = 500,
    num_test: int = 500,
    max_digits: int = 3,
    seed: int = 0,
) -> Dict[str, Any]:
    """Captioned images of handwritten numbers, in the layout of CS231n's COCO data.

    num_train, num_val, num_test: images (and captions, one each) per split; max_digits:
    the longest number, 1..6 (3: numbers up to 999, captions of T = 6 tokens); seed: the
    same seed gives the same data. The handwritten digits are split 70% / 10% / 20%
    between train, val and test before any number is drawn.

    Returns the dict described in the module docstring. Needs scikit-learn (the digits
    ship inside it): pip install graphnet[digits].
    """
    for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if not (_is_integer(value) and value >= 0):
            raise ValueError(f"load_number_captions: {name} must be an integer >= 0, got {value!r}")
    if not (_is_integer(max_digits) and 1 <= max_digits <= MAX_DIGITS):
        raise ValueError(
            f"load_number_captions: max_digits must be an integer in "
            f"[1, {MAX_DIGITS}], got {max_digits!r}"
        )
    glyphs, labels = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(glyphs))
    n_train, n_val = int(0.7 * len(order)), int(0.1 * len(order))
    pools = dict(zip(("train", "val", "test"), np.split(order, [n_train, n_train + n_val])))

    word_to_idx = {word: i for i, word in enumerate(VOCABULARY)}
    length = _caption_length(max_digits)
    data = {"word_to_idx": word_to_idx, "idx_to_word": list(VOCABULARY)}
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        pool = pools[split]
        glyphs_by_digit = [glyphs[pool[labels[pool] == d], 0] for d in range(10)]
        numbers = _draw_numbers(rng, count, max_digits)
        images = _render(numbers, glyphs_by_digit, rng, max_digits)
        data[f"{split}_captions"] = _encode(numbers, word_to_idx, length)
        data[f"{split}_image_idxs"] = np.arange(count, dtype=np.int32)
        data[f"{split}_features"] = images.reshape(count, _GLYPH * _GLYPH * max_digits)
        data[f"{split}_images"] = images
        data[f"{split}_numbers"] = numbers.astype(np.int64)
    return data


def sample_minibatch(
    data: Dict[str, Any],
    batch_size: int = 100,
    split: str = "train",
    rng: Optional[np.random.Generator] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random minibatch of a split, as the course's sample_coco_minibatch draws one.

    rng: a np.random.Generator; None draws from numpy's global random state, like the
    course (so np.random.seed makes a run repeatable). Returns (captions (B, T) int32,
    features (B, F) float32, images (B, 1, 8, W) float32).
    """
    size = len(data[f"{split}_captions"])
    if size == 0:
        raise ValueError(f"sample_minibatch: the {split!r} split is empty")
    picks = (
        rng.integers(size, size=batch_size)
        if rng is not None
        else np.random.choice(size, batch_size)
    )
    image_idxs = data[f"{split}_image_idxs"][picks]
    return (
        data[f"{split}_captions"][picks],
        data[f"{split}_features"][image_idxs],
        data[f"{split}_images"][image_idxs],
    )


def decode_captions(captions: np.ndarray, idx_to_word: Sequence[str]) -> Union[str, List[str]]:
    """Word indices back to text, as the course's decode_captions does: the words up to
    and including <END>, <NULL>s left out. captions (T,) gives a str, (N, T) a list."""
    captions = np.asarray(captions)
    rows = [captions] if captions.ndim == 1 else captions
    decoded = []
    for row in rows:
        words = []
        for index in row:
            word = idx_to_word[int(index)]
            if word != "<NULL>":
                words.append(word)
            if word == "<END>":
                break
        decoded.append(" ".join(words))
    return decoded[0] if captions.ndim == 1 else decoded


def caption_accuracy(
    sampled: np.ndarray, captions: np.ndarray, word_to_idx: Dict[str, int]
) -> float:
    """The fraction of captions said exactly right: the words of each sampled row up to
    its first <END> (or its end) equal the reference's words. <START>, <END> and <NULL>
    are not words; sampled rows may start with the first word (as CaptioningRNN.sample
    returns them) or with <START>."""
    sampled, captions = np.asarray(sampled), np.asarray(captions)
    if len(sampled) != len(captions):
        raise ValueError(
            f"caption_accuracy: {len(sampled)} sampled captions for {len(captions)} references"
        )
    if len(captions) == 0:
        raise ValueError("caption_accuracy: no captions to score")
    markers = {word_to_idx[w] for w in ("<NULL>", "<START>")}
    end = word_to_idx["<END>"]

    def words(row):
        out = []
        for index in row:
            if index == end:
                break
            if index not in markers:
                out.append(int(index))
        return out

    return float(np.mean([words(s) == words(c) for s, c in zip(sampled, captions)]))
