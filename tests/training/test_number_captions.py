"""graphnet.data.number_captions: handwritten numbers captioned in English words, in the
layout of the course's COCO captioning data."""

import numpy as np
import pytest

from graphnet.data import load_digits
from graphnet.data.number_captions import (
    MAX_DIGITS,
    VOCABULARY,
    caption_accuracy,
    decode_captions,
    load_number_captions,
    sample_minibatch,
    spell_number,
)

pytest.importorskip("sklearn")

WORD_VALUES = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
WORD_VALUES.update(
    {
        w: 10 * (i + 2)
        for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
    }
)


def read_number(text):
    """An independent reader of spelled numbers: words back to the value."""
    total = current = 0
    for word in text.split():
        if word == "hundred":
            current *= 100
        elif word == "thousand":
            total, current = total + current * 1000, 0
        else:
            current += WORD_VALUES[word]
    return total + current


@pytest.fixture(scope="module")
def data():
    return load_number_captions(num_train=400, num_val=60, num_test=80, max_digits=4, seed=3)


def test_spell_number_examples():
    assert [
        spell_number(n) for n in (0, 7, 13, 40, 42, 105, 110, 342, 1000, 7015, 20020, 999999)
    ] == [
        "zero",
        "seven",
        "thirteen",
        "forty",
        "forty two",
        "one hundred five",
        "one hundred ten",
        "three hundred forty two",
        "one thousand",
        "seven thousand fifteen",
        "twenty thousand twenty",
        "nine hundred ninety nine thousand nine hundred ninety nine",
    ]


def test_spell_number_reads_back_for_every_number_below_a_million():
    numbers = np.concatenate(
        [np.arange(20_000), np.random.default_rng(0).integers(20_000, 1_000_000, 10_000)]
    )
    for n in numbers:
        text = spell_number(n)
        assert read_number(text) == n, text
        assert set(text.split()) <= set(VOCABULARY)


@pytest.mark.parametrize("bad", [-1, 10**MAX_DIGITS, 3.0, "7", True])
def test_spell_number_refuses(bad):
    with pytest.raises(ValueError, match="spell_number"):
        spell_number(bad)


def test_layout_of_the_course_coco_data(data):
    word_to_idx, idx_to_word = data["word_to_idx"], data["idx_to_word"]
    assert [word_to_idx[w] for w in ("<NULL>", "<START>", "<END>", "<UNK>")] == [0, 1, 2, 3]
    assert all(idx_to_word[i] == w for w, i in word_to_idx.items())
    T = 2 + len(spell_number(7777).split())
    for split, count in (("train", 400), ("val", 60), ("test", 80)):
        captions = data[f"{split}_captions"]
        assert captions.shape == (count, T) and captions.dtype == np.int32
        assert data[f"{split}_image_idxs"].dtype == np.int32
        assert data[f"{split}_features"].shape == (count, 4 * 64)
        assert data[f"{split}_features"].dtype == np.float32
        assert data[f"{split}_images"].shape == (count, 1, 8, 32)
        np.testing.assert_array_equal(
            data[f"{split}_features"], data[f"{split}_images"].reshape(count, -1)
        )
        assert 0 <= data[f"{split}_features"].min() and data[f"{split}_features"].max() <= 1


def test_captions_spell_the_numbers(data):
    idx_to_word, word_to_idx = data["idx_to_word"], data["word_to_idx"]
    for split in ("train", "val", "test"):
        captions = data[f"{split}_captions"]
        numbers = data[f"{split}_numbers"][data[f"{split}_image_idxs"]]
        assert (captions[:, 0] == word_to_idx["<START>"]).all()
        for row, number, text in zip(captions, numbers, decode_captions(captions, idx_to_word)):
            assert text == f"<START> {spell_number(int(number))} <END>"
            end = list(row).index(word_to_idx["<END>"])
            assert (row[end + 1 :] == word_to_idx["<NULL>"]).all()
            assert word_to_idx["<UNK>"] not in row


def glyph_indices(images, max_digits):
    """For every digit place of every image: the index of the sklearn digit drawn there,
    or -1 where the place is blank."""
    glyphs = load_digits()[0][:, 0]
    by_bytes = {g.tobytes(): i for i, g in enumerate(glyphs)}
    places = images[:, 0].reshape(len(images), 8, max_digits, 8).transpose(0, 2, 1, 3)
    return np.array([[by_bytes[p.tobytes()] if p.any() else -1 for p in image] for image in places])


def test_images_show_the_digits_in_handwriting_no_other_split_uses(data):
    labels = load_digits()[1]
    used = {}
    for split in ("train", "val", "test"):
        indices = glyph_indices(data[f"{split}_images"], 4)
        for places, number in zip(indices, data[f"{split}_numbers"]):
            digits = str(number)
            assert (places[: 4 - len(digits)] == -1).all()  # right-aligned
            assert [labels[i] for i in places[4 - len(digits) :]] == [int(d) for d in digits]
        used[split] = set(indices[indices >= 0].ravel())
    assert not (
        used["train"] & used["val"] or used["train"] & used["test"] or used["val"] & used["test"]
    )


def test_the_same_seed_gives_the_same_data_and_lengths_are_balanced():
    a = load_number_captions(num_train=3000, num_val=0, num_test=0, seed=5)
    b = load_number_captions(num_train=3000, num_val=0, num_test=0, seed=5)
    c = load_number_captions(num_train=3000, num_val=0, num_test=0, seed=6)
    for key in ("train_captions", "train_features", "train_numbers"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["train_numbers"], c["train_numbers"])
    lengths = np.bincount([len(str(n)) for n in a["train_numbers"]])[1:]
    assert lengths.min() > 900  # about 1000 each of one, two and three digits
    assert a["val_captions"].shape == (0, 6) and a["val_features"].shape == (0, 192)


def test_sample_minibatch_like_the_course(data):
    rng = np.random.default_rng(1)
    captions, features, images = sample_minibatch(data, batch_size=7, split="val", rng=rng)
    assert captions.shape == (7, 6 + 2) and features.shape == (7, 256)
    assert images.shape == (7, 1, 8, 32)
    for caption, feature in zip(captions, features):
        row = np.flatnonzero((data["val_features"] == feature).all(axis=1))[0]
        np.testing.assert_array_equal(caption, data["val_captions"][row])
    np.random.seed(0)
    first = sample_minibatch(data, batch_size=5)[0]
    np.random.seed(0)
    np.testing.assert_array_equal(sample_minibatch(data, batch_size=5)[0], first)
    empty = load_number_captions(num_train=0, num_val=0, num_test=1)
    with pytest.raises(ValueError, match="'train' split is empty"):
        sample_minibatch(empty)


def test_decode_captions_keeps_start_and_end_and_stops_at_end():
    idx_to_word = list(VOCABULARY)
    w = {word: i for i, word in enumerate(idx_to_word)}
    row = [w["<START>"], w["forty"], w["<NULL>"], w["two"], w["<END>"], w["six"]]
    assert decode_captions(np.array(row), idx_to_word) == "<START> forty two <END>"
    assert decode_captions(np.array([row, row]), idx_to_word) == ["<START> forty two <END>"] * 2


def test_caption_accuracy_counts_exact_sayings():
    w = {word: i for i, word in enumerate(VOCABULARY)}
    reference = np.array(
        [
            [w["<START>"], w["forty"], w["two"], w["<END>"], w["<NULL>"]],
            [w["<START>"], w["six"], w["<END>"], w["<NULL>"], w["<NULL>"]],
        ]
    )
    sampled = np.array(
        [
            [w["forty"], w["two"], w["<END>"], w["six"], w["six"]],  # right
            [w["six"], w["six"], w["<END>"], w["<NULL>"], w["<NULL>"]],
        ]
    )  # wrong
    assert caption_accuracy(sampled, reference, w) == 0.5
    assert caption_accuracy(reference, reference, w) == 1.0
    with pytest.raises(ValueError, match="2 references"):
        caption_accuracy(sampled[:1], reference, w)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_digits": 0}, "max_digits must be an integer in"),
        ({"max_digits": 7}, "max_digits must be an integer in"),
        ({"num_train": -1}, "num_train must be an integer >= 0"),
        ({"num_val": 2.5}, "num_val must be an integer >= 0"),
        ({"num_test": True}, "num_test must be an integer >= 0"),
    ],
)
def test_load_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_number_captions(**kwargs)
