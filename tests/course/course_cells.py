"""The check cells of Stanford CS231n's assignment 2 notebooks (FullyConnectedNets,
BatchNormalization, Dropout, ConvolutionalNetworks), editions 2017 to 2024, as functions.

Each cell is written as the notebook writes it: the same seeds, inputs and expected arrays,
the same calls, with the names its notebook's import lines bring (`nb`, from
`notebook_namespace`, where `cs231n` in those lines is replaced by graphnet's package for
the edition). It returns the numbers the notebook prints, each with the magnitude the
notebook states for it ("The error should be around e-9 or less" -> 1e-9): a
`Check(value, stated, limit, low)`, [low, limit] being what the statement allows. Where a
notebook draws random numbers unseeded, the cell seeds numpy with 231, as the others do.

    python -m tests.course.course_cells        # per cell, the number nearest its statement
    python -m tests.course.course_cells --all  # every number of every cell, per package

Cells that need CIFAR-10 (training runs) or time a run are not here.
"""

import collections
import math

import numpy as np

#: Every edition's notebooks import the course package under this name.
COURSE_PACKAGE = "cs231n"

#: The package that runs an edition's notebooks: cs231n -> this.
PACKAGES = {
    2017: "graphnet.cs231n.v2017",
    **{year: "graphnet.cs231n" for year in range(2018, 2025)},
}

#: The import lines of each notebook, by edition (every cell's, from the published starter
#: notebooks; the 2021+ FullyConnectedNets no longer imports the sandwich layers).
_SETUP = [
    "from cs231n.classifiers.fc_net import *",
    "from cs231n.data_utils import get_CIFAR10_data",
    "from cs231n.gradient_check import eval_numerical_gradient, eval_numerical_gradient_array",
    "from cs231n.solver import Solver",
]
_OPTIM = [
    "from cs231n.optim import sgd_momentum",
    "from cs231n.optim import rmsprop",
    "from cs231n.optim import adam",
]
IMPORT_LINES = {
    **{
        ("FullyConnectedNets", year): _SETUP
        + _OPTIM
        + ["from cs231n.layer_utils import affine_relu_forward, affine_relu_backward"]
        for year in range(2017, 2021)
    },
    **{("FullyConnectedNets", year): _SETUP + _OPTIM for year in range(2021, 2025)},
    **{
        (notebook, year): _SETUP
        for notebook in ("BatchNormalization", "Dropout")
        for year in range(2017, 2025)
    },
    **{
        ("ConvolutionalNetworks", year): [
            "from cs231n.classifiers.cnn import *",
            "from cs231n.data_utils import get_CIFAR10_data",
            "from cs231n.gradient_check import eval_numerical_gradient_array, "
            "eval_numerical_gradient",
            "from cs231n.layers import *",
            "from cs231n.fast_layers import *",
            "from cs231n.solver import Solver",
            "from cs231n.fast_layers import conv_forward_fast, conv_backward_fast",
            "from cs231n.fast_layers import max_pool_forward_fast, max_pool_backward_fast",
            "from cs231n.layer_utils import conv_relu_pool_forward, conv_relu_pool_backward",
            "from cs231n.layer_utils import conv_relu_forward, conv_relu_backward",
            "from cs231n.vis_utils import visualize_grid",
        ]
        for year in range(2017, 2025)
    },
}

#: The course names each notebook's cells use without importing them by name: what its
#: star imports must bring.
STAR_NAMES = {
    "FullyConnectedNets": [
        "affine_forward",
        "affine_backward",
        "relu_forward",
        "relu_backward",
        "svm_loss",
        "softmax_loss",
        "TwoLayerNet",
        "FullyConnectedNet",
    ],
    "BatchNormalization": [
        "batchnorm_forward",
        "batchnorm_backward",
        "batchnorm_backward_alt",
        "layernorm_forward",
        "layernorm_backward",
        "FullyConnectedNet",
    ],
    "Dropout": ["dropout_forward", "dropout_backward", "FullyConnectedNet"],
    "ConvolutionalNetworks": [
        "conv_forward_naive",
        "conv_backward_naive",
        "max_pool_forward_naive",
        "max_pool_backward_naive",
        "ThreeLayerConvNet",
        "spatial_batchnorm_forward",
        "spatial_batchnorm_backward",
        "spatial_groupnorm_forward",
        "spatial_groupnorm_backward",
    ],
}


def notebook_namespace(notebook, edition):
    """What a notebook's import lines define, run with graphnet's package for the edition."""
    namespace = {}
    for line in IMPORT_LINES[notebook, edition]:
        exec(line.replace(COURSE_PACKAGE, PACKAGES[edition], 1), namespace)
    return namespace


Check = collections.namedtuple("Check", "value stated limit low", defaults=(-math.inf,))
Cell = collections.namedtuple("Cell", "notebook title editions run by_edition")
CELLS = []


def cell(notebook, title, editions, by_edition=False):
    """Register a cell of `notebook` as it stands in the given editions (years). A cell
    runs once per package; by_edition: once per group of editions (EDITION_GROUPS), for a
    cell whose code changed between editions that share a package."""

    def register(run):
        CELLS.append(Cell(notebook, title, tuple(editions), run, by_edition))
        return run

    return register


def around(value, stated):
    """'Around 1e-9 (or less)': of that order of magnitude or below."""
    return Check(value, stated, 10 * stated)


def at_most(value, stated):
    """'Between 1e-13 and 1e-8': at most the upper end."""
    return Check(value, stated, stated)


def about(value, stated, tolerance):
    """'Loss should be around 9': within tolerance of it."""
    return Check(value, f"about {stated:g}", stated + tolerance, stated - tolerance)


def rel_error(x, y):
    """The notebooks' own rel_error (each defines it in its set-up cell)."""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def _seeded_randn(*shapes):
    """np.random.seed(231), then np.random.randn of each shape in turn, as the cells draw
    their inputs."""
    np.random.seed(231)
    return [np.random.randn(*shape) for shape in shapes]


def gradient_cell(notebook, title, editions, forward, backward, shapes, params, stated):
    """Register the check cell of a layer with weights: x, w, b, dout drawn with the given
    shapes; dx, dw, db of backward against the numerical gradients of forward(x, w, b,
    *params), each stated to be around `stated`."""

    def run(nb, edition):
        x, w, b, dout = _seeded_randn(*shapes)
        num = nb["eval_numerical_gradient_array"]
        dx_num = num(lambda x: nb[forward](x, w, b, *params)[0], x, dout)
        dw_num = num(lambda w: nb[forward](x, w, b, *params)[0], w, dout)
        db_num = num(lambda b: nb[forward](x, w, b, *params)[0], b, dout)
        out, cache = nb[forward](x, w, b, *params)
        dx, dw, db = nb[backward](dout, cache)
        return {
            "dx": around(rel_error(dx_num, dx), stated),
            "dw": around(rel_error(dw_num, dw), stated),
            "db": around(rel_error(db_num, db), stated),
        }

    cell(notebook, title, editions)(run)


ALL = range(2017, 2025)
LATER = range(2018, 2025)  # keep probability, normalization=, layernorm, groupnorm
WITH_LAYERS = range(2017, 2021)  # FullyConnectedNets still tests the layers and TwoLayerNet


# --------------------------------------------------------------------- FullyConnectedNets


@cell("FullyConnectedNets", "affine_forward", WITH_LAYERS)
def affine_forward_cell(nb, edition):
    num_inputs, input_shape, output_dim = 2, (4, 5, 6), 3
    input_size = num_inputs * np.prod(input_shape)
    weight_size = output_dim * np.prod(input_shape)
    x = np.linspace(-0.1, 0.5, num=input_size).reshape(num_inputs, *input_shape)
    w = np.linspace(-0.2, 0.3, num=weight_size).reshape(np.prod(input_shape), output_dim)
    b = np.linspace(-0.3, 0.1, num=output_dim)
    out, _ = nb["affine_forward"](x, w, b)
    correct_out = np.array(
        [[1.49834967, 1.70660132, 1.91485297], [3.25553199, 3.5141327, 3.77273342]]
    )
    return {"difference": around(rel_error(out, correct_out), 1e-9)}


gradient_cell(
    "FullyConnectedNets",
    "affine_backward",
    WITH_LAYERS,
    "affine_forward",
    "affine_backward",
    ((10, 2, 3), (6, 5), (5,), (10, 5)),
    (),
    1e-10,
)


@cell("FullyConnectedNets", "relu_forward", WITH_LAYERS)
def relu_forward_cell(nb, edition):
    x = np.linspace(-0.5, 0.5, num=12).reshape(3, 4)
    out, _ = nb["relu_forward"](x)
    correct_out = np.array(
        [
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.04545455, 0.13636364],
            [0.22727273, 0.31818182, 0.40909091, 0.5],
        ]
    )
    return {"difference": around(rel_error(out, correct_out), 5e-8 if edition == 2017 else 1e-8)}


@cell("FullyConnectedNets", "relu_backward", WITH_LAYERS)
def relu_backward_cell(nb, edition):
    relu_forward = nb["relu_forward"]
    np.random.seed(231)
    x = np.random.randn(10, 10)
    dout = np.random.randn(*x.shape)
    dx_num = nb["eval_numerical_gradient_array"](lambda x: relu_forward(x)[0], x, dout)
    _, cache = relu_forward(x)
    dx = nb["relu_backward"](dout, cache)
    return {"dx": around(rel_error(dx_num, dx), 3e-12 if edition == 2017 else 1e-12)}


gradient_cell(
    "FullyConnectedNets",
    "affine_relu sandwich",
    WITH_LAYERS,
    "affine_relu_forward",
    "affine_relu_backward",
    ((2, 3, 4), (12, 10), (10,), (2, 10)),
    (),
    1e-10,
)


@cell("FullyConnectedNets", "svm_loss and softmax_loss", WITH_LAYERS)
def loss_cell(nb, edition):
    num = nb["eval_numerical_gradient"]
    np.random.seed(231)
    num_classes, num_inputs = 10, 50
    x = 0.001 * np.random.randn(num_inputs, num_classes)
    y = np.random.randint(num_classes, size=num_inputs)
    checks = {}
    for name, loss_size, stated in (("svm_loss", 9, 1e-9), ("softmax_loss", 2.3, 1e-8)):
        loss_fn = nb[name]
        dx_num = num(lambda x, loss_fn=loss_fn: loss_fn(x, y)[0], x, verbose=False)
        loss, dx = loss_fn(x, y)
        checks[f"{name} loss"] = about(loss, loss_size, 0.05)
        checks[f"{name} dx"] = around(rel_error(dx_num, dx), stated)
    return checks


@cell("FullyConnectedNets", "TwoLayerNet", WITH_LAYERS)
def two_layer_net_cell(nb, edition):
    np.random.seed(231)
    N, D, H, C = 3, 5, 50, 7
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=N)
    std = 1e-3
    model = nb["TwoLayerNet"](input_dim=D, hidden_dim=H, num_classes=C, weight_scale=std)
    checks = {
        "|W1.std - std|": Check(abs(model.params["W1"].std() - std), std / 10, std / 10),
        "|W2.std - std|": Check(abs(model.params["W2"].std() - std), std / 10, std / 10),
        "max |b1|, |b2|": Check(
            max(abs(model.params["b1"]).max(), abs(model.params["b2"]).max()), 0, 0
        ),
    }
    model.params["W1"] = np.linspace(-0.7, 0.3, num=D * H).reshape(D, H)
    model.params["b1"] = np.linspace(-0.1, 0.9, num=H)
    model.params["W2"] = np.linspace(-0.3, 0.4, num=H * C).reshape(H, C)
    model.params["b2"] = np.linspace(-0.9, 0.1, num=C)
    X = np.linspace(-5.5, 4.5, num=N * D).reshape(D, N).T
    scores = model.loss(X)
    correct_scores = np.asarray(
        [
            [
                11.53165108,
                12.2917344,
                13.05181771,
                13.81190102,
                14.57198434,
                15.33206765,
                16.09215096,
            ],
            [
                12.05769098,
                12.74614105,
                13.43459113,
                14.1230412,
                14.81149128,
                15.49994135,
                16.18839143,
            ],
            [
                12.58373087,
                13.20054771,
                13.81736455,
                14.43418138,
                15.05099822,
                15.66781506,
                16.2846319,
            ],
        ]
    )
    checks["scores: sum |difference|"] = Check(np.abs(scores - correct_scores).sum(), 1e-6, 1e-6)
    y = np.asarray([0, 5, 1])
    loss, grads = model.loss(X, y)
    checks["|loss - 3.4702243556|"] = Check(abs(loss - 3.4702243556), 1e-10, 1e-10)
    model.reg = 1.0
    loss, grads = model.loss(X, y)
    checks["|loss - 26.5948426952| (reg 1)"] = Check(abs(loss - 26.5948426952), 1e-10, 1e-10)
    for reg in [0.0, 0.7]:
        model.reg = reg
        loss, grads = model.loss(X, y)
        for name in sorted(grads):
            f = lambda _: model.loss(X, y)[0]  # noqa: E731
            grad_num = nb["eval_numerical_gradient"](f, model.params[name], verbose=False)
            checks[f"{name} (reg {reg})"] = around(rel_error(grad_num, grads[name]), 1e-7)
    return checks


def _fc_net_gradients(nb, checks, label, judge, **kwargs):
    """The notebooks' gradient check of a FullyConnectedNet(**kwargs) on 2 samples: each
    param's analytic gradient against eval_numerical_gradient(h=1e-5), as judge(name,
    analytic, numeric) says, into checks. Returns the loss."""
    np.random.seed(231)
    N, D, H1, H2, C = 2, 15, 20, 30, 10
    X = np.random.randn(N, D)
    y = np.random.randint(C, size=(N,))
    model = nb["FullyConnectedNet"](
        [H1, H2], input_dim=D, num_classes=C, weight_scale=5e-2, dtype=np.float64, **kwargs
    )
    loss, grads = model.loss(X, y)
    for name in sorted(grads):
        f = lambda _: model.loss(X, y)[0]  # noqa: E731
        grad_num = nb["eval_numerical_gradient"](f, model.params[name], verbose=False, h=1e-5)
        checks[f"{name} ({label})"] = judge(name, grads[name], grad_num)
    return loss


@cell("FullyConnectedNets", "FullyConnectedNet: initial loss and gradients", ALL)
def fc_net_cell(nb, edition):
    checks = {}
    for reg in [0, 3.14]:
        # "Most of the errors should be on the order of e-7 or smaller. It is fine however
        # to see an error for W2 on the order of e-5 for reg = 0.0" (2017: "errors around
        # 1e-6 or less", with no seed; with the later editions' seed W2 has the same kink).
        def judge(name, analytic, numeric, reg=reg):
            stated = 1e-5 if name == "W2" and reg == 0 else 1e-6 if edition == 2017 else 1e-7
            return around(rel_error(numeric, analytic), stated)

        loss = _fc_net_gradients(nb, checks, f"reg {reg}", judge, reg=reg)
        if reg == 0:
            checks["initial loss, reg 0 (log 10 = 2.30)"] = about(loss, 2.3, 0.1)
    return checks


def _grid(start, stop):
    """The notebooks' optimizer inputs: np.linspace(start, stop, num=20).reshape(4, 5)."""
    return np.linspace(start, stop, num=20).reshape(4, 5)


#: Each update rule's check cell: its config (state arrays given as _grid ranges), the error
#: its notebook states, and the arrays it expects (next_w and the updated state).
_UPDATE_CELLS = {
    "sgd_momentum": (
        {"learning_rate": 1e-3, "velocity": (0.6, 0.9)},
        1e-8,
        {
            "next_w": [
                [0.1406, 0.20738947, 0.27417895, 0.34096842, 0.40775789],
                [0.47454737, 0.54133684, 0.60812632, 0.67491579, 0.74170526],
                [0.80849474, 0.87528421, 0.94207368, 1.00886316, 1.07565263],
                [1.14244211, 1.20923158, 1.27602105, 1.34281053, 1.4096],
            ],
            "velocity": [
                [0.5406, 0.55475789, 0.56891579, 0.58307368, 0.59723158],
                [0.61138947, 0.62554737, 0.63970526, 0.65386316, 0.66802105],
                [0.68217895, 0.69633684, 0.71049474, 0.72465263, 0.73881053],
                [0.75296842, 0.76712632, 0.78128421, 0.79544211, 0.8096],
            ],
        },
    ),
    "rmsprop": (
        {"learning_rate": 1e-2, "cache": (0.6, 0.9)},
        1e-7,
        {
            "next_w": [
                [-0.39223849, -0.34037513, -0.28849239, -0.23659121, -0.18467247],
                [-0.132737, -0.08078555, -0.02881884, 0.02316247, 0.07515774],
                [0.12716641, 0.17918792, 0.23122175, 0.28326742, 0.33532447],
                [0.38739248, 0.43947102, 0.49155973, 0.54365823, 0.59576619],
            ],
            "cache": [
                [0.5976, 0.6126277, 0.6277108, 0.64284931, 0.65804321],
                [0.67329252, 0.68859723, 0.70395734, 0.71937285, 0.73484377],
                [0.75037008, 0.7659518, 0.78158892, 0.79728144, 0.81302936],
                [0.82883269, 0.84469141, 0.86060554, 0.87657507, 0.8926],
            ],
        },
    ),
    "adam": (
        {"learning_rate": 1e-2, "m": (0.6, 0.9), "v": (0.7, 0.5), "t": 5},
        1e-7,
        {
            "next_w": [
                [-0.40094747, -0.34836187, -0.29577703, -0.24319299, -0.19060977],
                [-0.1380274, -0.08544591, -0.03286534, 0.01971428, 0.0722929],
                [0.1248705, 0.17744702, 0.23002243, 0.28259667, 0.33516969],
                [0.38774145, 0.44031188, 0.49288093, 0.54544852, 0.59801459],
            ],
            "v": [
                [0.69966, 0.68908382, 0.67851319, 0.66794809, 0.65738853],
                [0.64683452, 0.63628604, 0.6257431, 0.61520571, 0.60467385],
                [0.59414753, 0.58362676, 0.57311152, 0.56260183, 0.55209767],
                [0.54159906, 0.53110598, 0.52061845, 0.51013645, 0.49966],
            ],
            "m": [
                [0.48, 0.49947368, 0.51894737, 0.53842105, 0.55789474],
                [0.57736842, 0.59684211, 0.61631579, 0.63578947, 0.65526316],
                [0.67473684, 0.69421053, 0.71368421, 0.73315789, 0.75263158],
                [0.77210526, 0.79157895, 0.81105263, 0.83052632, 0.85],
            ],
        },
    ),
}


def _update_cell(rule):
    """The check cell of one update rule: its next_w and updated state against the
    notebook's arrays."""
    config, stated, expected = _UPDATE_CELLS[rule]

    def run(nb, edition):
        w, dw = _grid(-0.4, 0.6), _grid(-0.6, 0.4)
        state = {
            key: _grid(*value) if isinstance(value, tuple) else value
            for key, value in config.items()
        }
        next_w, _ = nb[rule](w, dw, config=state)
        return {
            key: around(
                rel_error(np.asarray(value), next_w if key == "next_w" else state[key]), stated
            )
            for key, value in expected.items()
        }

    return run


for _rule in _UPDATE_CELLS:
    cell("FullyConnectedNets", _rule, ALL)(_update_cell(_rule))


# --------------------------------------------------------------------- BatchNormalization


def _two_layer_activations(N, D1, D2, D3):
    X = np.random.randn(N, D1)
    W1 = np.random.randn(D1, D2)
    W2 = np.random.randn(D2, D3)
    return np.maximum(0, X.dot(W1)).dot(W2)


def _moments(checks, label, out, axis, mean, std, limit):
    checks[f"{label}: max |mean - {mean}|"] = Check(
        np.max(np.abs(out.mean(axis=axis) - mean)), "close", limit
    )
    checks[f"{label}: max |std - {std}|"] = Check(
        np.max(np.abs(out.std(axis=axis) - std)), "close", limit
    )


@cell("BatchNormalization", "batchnorm_forward, train mode", ALL)
def batchnorm_train_cell(nb, edition):
    np.random.seed(231)
    a = _two_layer_activations(200, 50, 60, 3)
    checks = {}
    out, _ = nb["batchnorm_forward"](a, np.ones(3), np.zeros(3), {"mode": "train"})
    _moments(checks, "gamma 1, beta 0", out, 0, 0, 1, 1e-6)
    gamma, beta = np.asarray([1.0, 2.0, 3.0]), np.asarray([11.0, 12.0, 13.0])
    out, _ = nb["batchnorm_forward"](a, gamma, beta, {"mode": "train"})
    _moments(checks, "gamma (1, 2, 3), beta (11, 12, 13)", out, 0, beta, gamma, 1e-6)
    return checks


@cell("BatchNormalization", "batchnorm_forward, test mode after 50 train steps", ALL)
def batchnorm_test_cell(nb, edition):
    np.random.seed(231)
    N, D1, D2, D3 = 200, 50, 60, 3
    W1 = np.random.randn(D1, D2)
    W2 = np.random.randn(D2, D3)
    bn_param = {"mode": "train"}
    gamma, beta = np.ones(D3), np.zeros(D3)
    for _ in range(50):
        X = np.random.randn(N, D1)
        a = np.maximum(0, X.dot(W1)).dot(W2)
        nb["batchnorm_forward"](a, gamma, beta, bn_param)
    bn_param["mode"] = "test"
    X = np.random.randn(N, D1)
    a = np.maximum(0, X.dot(W1)).dot(W2)
    a_norm, _ = nb["batchnorm_forward"](a, gamma, beta, bn_param)
    checks = {}
    _moments(checks, "test mode (noisier)", a_norm, 0, 0, 1, 0.2)
    return checks


def _normalization_inputs(shape, param_shape):
    """The normalization gradient checks' inputs, in the notebooks' order: np.random.seed(231),
    x = 5 * randn + 12, gamma, beta, dout."""
    np.random.seed(231)
    x = 5 * np.random.randn(*shape) + 12
    gamma = np.random.randn(*param_shape)
    beta = np.random.randn(*param_shape)
    return x, gamma, beta, np.random.randn(*shape)


def _norm_gradients(nb, forward, backward, x, gamma, beta, dout, param, stated, *extra):
    num = nb["eval_numerical_gradient_array"]
    fx = lambda x: nb[forward](x, gamma, beta, *extra, param)[0]  # noqa: E731
    fg = lambda a: nb[forward](x, a, beta, *extra, param)[0]  # noqa: E731
    fb = lambda b: nb[forward](x, gamma, b, *extra, param)[0]  # noqa: E731
    dx_num = num(fx, x, dout)
    da_num = num(fg, gamma.copy(), dout)
    db_num = num(fb, beta.copy(), dout)
    _, cache = nb[forward](x, gamma, beta, *extra, param)
    dx, dgamma, dbeta = nb[backward](dout, cache)
    return {
        "dx": at_most(rel_error(dx_num, dx), stated),
        "dgamma": at_most(rel_error(da_num, dgamma), stated),
        "dbeta": at_most(rel_error(db_num, dbeta), stated),
    }


@cell("BatchNormalization", "batchnorm_backward", ALL)
def batchnorm_backward_cell(nb, edition):
    x, gamma, beta, dout = _normalization_inputs((4, 5), (5,))
    # "You should expect to see relative errors between 1e-13 and 1e-8"
    return _norm_gradients(
        nb, "batchnorm_forward", "batchnorm_backward", x, gamma, beta, dout, {"mode": "train"}, 1e-8
    )


@cell("BatchNormalization", "batchnorm_backward_alt against batchnorm_backward", ALL)
def batchnorm_alt_cell(nb, edition):
    x, gamma, beta, dout = _normalization_inputs((100, 500), (500,))
    out, cache = nb["batchnorm_forward"](x, gamma, beta, {"mode": "train"})
    first = nb["batchnorm_backward"](dout, cache)
    second = nb["batchnorm_backward_alt"](dout, cache)
    # "Your two implementations should compute nearly identical results"
    return {
        f"{name} difference": Check(rel_error(a, b), "nearly identical", 1e-8)
        for name, a, b in zip(("dx", "dgamma", "dbeta"), first, second)
    }


def _batchnorm_net_judge(name, analytic, numeric):
    """'You should expect losses between 1e-4~1e-10 for W, losses between 1e-08~1e-10 for
    b, and losses between 1e-08~1e-09 for beta and gammas.' The biases of the hidden
    layers feed a batchnorm, which subtracts them again: their true gradient is 0 and a
    relative error compares rounding noise; both gradients must be 0 up to rounding."""
    if name in ("b1", "b2"):
        return Check(max(np.abs(analytic).max(), np.abs(numeric).max()), "0 (rounding)", 1e-12)
    return around(rel_error(numeric, analytic), 1e-4 if name.startswith("W") else 1e-8)


@cell("BatchNormalization", "FullyConnectedNet with batchnorm: gradients", ALL)
def batchnorm_net_cell(nb, edition):
    option = {"use_batchnorm": True} if edition == 2017 else {"normalization": "batchnorm"}
    checks = {}
    for reg in [0, 3.14]:
        _fc_net_gradients(nb, checks, f"reg {reg}", _batchnorm_net_judge, reg=reg, **option)
    return checks


@cell("BatchNormalization", "layernorm_forward", LATER)
def layernorm_forward_cell(nb, edition):
    np.random.seed(231)
    a = _two_layer_activations(4, 50, 60, 3)
    checks = {}
    out, _ = nb["layernorm_forward"](a, np.ones(3), np.zeros(3), {"mode": "train"})
    _moments(checks, "gamma 1, beta 0", out, 1, 0, 1, 1e-6)
    out, _ = nb["layernorm_forward"](
        a, np.asarray([3.0, 3.0, 3.0]), np.asarray([5.0, 5.0, 5.0]), {"mode": "train"}
    )
    _moments(checks, "gamma 3, beta 5", out, 1, 5, 3, 1e-6)
    return checks


@cell("BatchNormalization", "layernorm_backward", LATER)
def layernorm_backward_cell(nb, edition):
    x, gamma, beta, dout = _normalization_inputs((4, 5), (5,))
    # "You should expect to see relative errors between 1e-12 and 1e-8"
    return _norm_gradients(
        nb, "layernorm_forward", "layernorm_backward", x, gamma, beta, dout, {}, 1e-8
    )


# --------------------------------------------------------------------- Dropout

#: The dropout p of each edition's forward check, and the fraction of units it zeroes.
_DROPOUT_PS = {2017: ([0.3, 0.6, 0.75], lambda p: p)}
_DROPOUT_PS.update({year: ([0.25, 0.4, 0.7], lambda p: 1 - p) for year in LATER})


@cell("Dropout", "dropout_forward", ALL)
def dropout_forward_cell(nb, edition):
    np.random.seed(231)
    x = np.random.randn(500, 500) + 10
    ps, zeroed = _DROPOUT_PS[edition]
    checks = {}
    for p in ps:
        out, _ = nb["dropout_forward"](x, {"mode": "train", "p": p})
        out_test, _ = nb["dropout_forward"](x, {"mode": "test", "p": p})
        checks[f"p {p}: |train mean / input mean - 1|"] = Check(
            abs(out.mean() / x.mean() - 1), "close", 0.01
        )
        checks[f"p {p}: |fraction zeroed - {zeroed(p):.2f}|"] = Check(
            abs((out == 0).mean() - zeroed(p)), "close", 0.01
        )
        checks[f"p {p}: test output differs from input"] = Check(np.abs(out_test - x).max(), 0, 0)
    return checks


@cell("Dropout", "dropout_backward", ALL)
def dropout_backward_cell(nb, edition):
    np.random.seed(231)
    x = np.random.randn(10, 10) + 10
    dout = np.random.randn(*x.shape)
    # The same 80% of units dropped in both: 2017's p drops, the later editions' p keeps.
    dropout_param = {"mode": "train", "p": 0.8 if edition == 2017 else 0.2, "seed": 123}
    out, cache = nb["dropout_forward"](x, dropout_param)
    dx = nb["dropout_backward"](dout, cache)
    dx_num = nb["eval_numerical_gradient_array"](
        lambda xx: nb["dropout_forward"](xx, dropout_param)[0], x, dout
    )
    return {
        "dx": around(rel_error(dx, dx_num), 1e-10),
        "fraction zeroed": about((out == 0).mean(), 0.8, 0.15),
    }


@cell("Dropout", "FullyConnectedNet with dropout: gradients", ALL, by_edition=True)
def dropout_net_cell(nb, edition):
    if edition == 2017:
        runs = [{"dropout": p} for p in [0, 0.25, 0.5]]
    else:
        name = "dropout" if edition <= 2020 else "dropout_keep_ratio"
        runs = [{name: p} for p in [1, 0.75, 0.5]]
    checks = {}
    for run in runs:
        no_dropout = next(iter(run.values())) in (0, 1)

        # "Relative errors should be around e-6 or less; it's fine if for dropout=1 you have
        # W2 error be on the order of e-5"
        def judge(name, analytic, numeric, free=no_dropout):
            return around(rel_error(numeric, analytic), 1e-5 if free and name == "W2" else 1e-6)

        label = ", ".join(f"{k}={v}" for k, v in run.items())
        _fc_net_gradients(nb, checks, label, judge, seed=123, **run)
    return checks


# --------------------------------------------------------------------- ConvolutionalNetworks


@cell("ConvolutionalNetworks", "conv_forward_naive", ALL)
def conv_forward_cell(nb, edition):
    x_shape, w_shape = (2, 3, 4, 4), (3, 3, 4, 4)
    x = np.linspace(-0.1, 0.5, num=np.prod(x_shape)).reshape(x_shape)
    w = np.linspace(-0.2, 0.3, num=np.prod(w_shape)).reshape(w_shape)
    b = np.linspace(-0.1, 0.2, num=3)
    out, _ = nb["conv_forward_naive"](x, w, b, {"stride": 2, "pad": 1})
    correct_out = np.array(
        [
            [
                [[-0.08759809, -0.10987781], [-0.18387192, -0.2109216]],
                [[0.21027089, 0.21661097], [0.22847626, 0.23004637]],
                [[0.50813986, 0.54309974], [0.64082444, 0.67101435]],
            ],
            [
                [[-0.98053589, -1.03143541], [-1.19128892, -1.24695841]],
                [[0.69108355, 0.66880383], [0.59480972, 0.56776003]],
                [[2.36270298, 2.36904306], [2.38090835, 2.38247847]],
            ],
        ]
    )
    return {"difference": around(rel_error(out, correct_out), 2e-8 if edition == 2017 else 1e-8)}


_CONV_PARAM = {"stride": 1, "pad": 1}
_POOL_PARAM = {"pool_height": 2, "pool_width": 2, "stride": 2}


gradient_cell(
    "ConvolutionalNetworks",
    "conv_backward_naive",
    ALL,
    "conv_forward_naive",
    "conv_backward_naive",
    ((4, 3, 5, 5), (2, 3, 3, 3), (2,), (4, 2, 5, 5)),
    (_CONV_PARAM,),
    1e-8,
)


@cell("ConvolutionalNetworks", "max_pool_forward_naive", ALL)
def pool_forward_cell(nb, edition):
    x_shape = (2, 3, 4, 4)
    x = np.linspace(-0.3, 0.4, num=np.prod(x_shape)).reshape(x_shape)
    out, _ = nb["max_pool_forward_naive"](x, {"pool_width": 2, "pool_height": 2, "stride": 2})
    correct_out = np.array(
        [
            [
                [[-0.26315789, -0.24842105], [-0.20421053, -0.18947368]],
                [[-0.14526316, -0.13052632], [-0.08631579, -0.07157895]],
                [[-0.02736842, -0.01263158], [0.03157895, 0.04631579]],
            ],
            [
                [[0.09052632, 0.10526316], [0.14947368, 0.16421053]],
                [[0.20842105, 0.22315789], [0.26736842, 0.28210526]],
                [[0.32631579, 0.34105263], [0.38526316, 0.4]],
            ],
        ]
    )
    return {"difference": around(rel_error(out, correct_out), 1e-8)}


@cell("ConvolutionalNetworks", "max_pool_backward_naive", ALL)
def pool_backward_cell(nb, edition):
    np.random.seed(231)
    x = np.random.randn(3, 2, 8, 8)
    dout = np.random.randn(3, 2, 4, 4)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    dx_num = nb["eval_numerical_gradient_array"](
        lambda x: nb["max_pool_forward_naive"](x, pool_param)[0], x, dout
    )
    out, cache = nb["max_pool_forward_naive"](x, pool_param)
    dx = nb["max_pool_backward_naive"](dout, cache)
    return {"dx": around(rel_error(dx, dx_num), 1e-12)}


@cell("ConvolutionalNetworks", "conv_forward_fast / conv_backward_fast against naive", ALL)
def fast_conv_cell(nb, edition):
    x, w, b, dout = _seeded_randn((100, 3, 31, 31), (25, 3, 3, 3), (25,), (100, 25, 16, 16))
    conv_param = {"stride": 2, "pad": 1}
    out_naive, cache_naive = nb["conv_forward_naive"](x, w, b, conv_param)
    out_fast, cache_fast = nb["conv_forward_fast"](x, w, b, conv_param)
    naive = nb["conv_backward_naive"](dout, cache_naive)
    fast = nb["conv_backward_fast"](dout, cache_fast)
    # "Rel errors should be around e-9 or less"
    checks = {"out difference": around(rel_error(out_naive, out_fast), 1e-9)}
    checks.update(
        {
            f"{name} difference": around(rel_error(a, b), 1e-9)
            for name, a, b in zip(("dx", "dw", "db"), naive, fast)
        }
    )
    return checks


@cell("ConvolutionalNetworks", "max_pool_forward_fast / max_pool_backward_fast against naive", ALL)
def fast_pool_cell(nb, edition):
    np.random.seed(231)
    x = np.random.randn(100, 3, 32, 32)
    dout = np.random.randn(100, 3, 16, 16)
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out_naive, cache_naive = nb["max_pool_forward_naive"](x, pool_param)
    out_fast, cache_fast = nb["max_pool_forward_fast"](x, pool_param)
    dx_naive = nb["max_pool_backward_naive"](dout, cache_naive)
    dx_fast = nb["max_pool_backward_fast"](dout, cache_fast)
    # "Relative errors should be close to 0.0"
    return {
        "out difference": Check(rel_error(out_naive, out_fast), 0.0, 0.0),
        "dx difference": Check(rel_error(dx_naive, dx_fast), 0.0, 0.0),
    }


gradient_cell(
    "ConvolutionalNetworks",
    "conv_relu_pool sandwich",
    ALL,
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
    ((2, 3, 16, 16), (3, 3, 3, 3), (3,), (2, 3, 8, 8)),
    (_CONV_PARAM, _POOL_PARAM),
    1e-8,
)
gradient_cell(
    "ConvolutionalNetworks",
    "conv_relu sandwich",
    ALL,
    "conv_relu_forward",
    "conv_relu_backward",
    ((2, 3, 8, 8), (3, 3, 3, 3), (3,), (2, 3, 8, 8)),
    (_CONV_PARAM,),
    1e-8,
)


@cell("ConvolutionalNetworks", "ThreeLayerConvNet: initial loss", ALL)
def convnet_loss_cell(nb, edition):
    np.random.seed(231)  # the notebook draws unseeded
    model = nb["ThreeLayerConvNet"]()
    N = 50
    X = np.random.randn(N, 3, 32, 32)
    y = np.random.randint(10, size=N)
    loss, grads = model.loss(X, y)
    model.reg = 0.5
    loss_reg, grads = model.loss(X, y)
    # "we expect the loss for random weights (and no regularization) to be about log(C)...
    # When we add regularization the loss should go up slightly."
    return {
        "loss (log 10 = 2.30)": about(loss, math.log(10), 0.01),
        "loss with reg 0.5 - loss": Check(loss_reg - loss, "up slightly", 1.0, 1e-3),
    }


@cell("ConvolutionalNetworks", "ThreeLayerConvNet: gradients", ALL)
def convnet_gradients_cell(nb, edition):
    num_inputs, input_dim, num_classes = 2, (3, 16, 16), 10
    np.random.seed(231)
    X = np.random.randn(num_inputs, *input_dim)
    y = np.random.randint(num_classes, size=num_inputs)
    model = nb["ThreeLayerConvNet"](
        num_filters=3, filter_size=3, input_dim=input_dim, hidden_dim=7, dtype=np.float64
    )
    loss, grads = model.loss(X, y)
    checks = {}
    for param_name in sorted(grads):
        f = lambda _: model.loss(X, y)[0]  # noqa: E731
        param_grad_num = nb["eval_numerical_gradient"](
            f, model.params[param_name], verbose=False, h=1e-6
        )
        # "correct implementations may have relative errors up to the order of e-2"
        checks[param_name] = around(rel_error(param_grad_num, grads[param_name]), 1e-2)
    return checks


@cell("ConvolutionalNetworks", "spatial_batchnorm_forward, train mode", ALL)
def spatial_batchnorm_train_cell(nb, edition):
    np.random.seed(231)
    N, C, H, W = 2, 3, 4, 5
    x = 4 * np.random.randn(N, C, H, W) + 10
    checks = {}
    bn_param = {"mode": "train"}
    out, _ = nb["spatial_batchnorm_forward"](x, np.ones(C), np.zeros(C), bn_param)
    _moments(checks, "gamma 1, beta 0", out, (0, 2, 3), 0, 1, 1e-6)
    gamma, beta = np.asarray([3, 4, 5]), np.asarray([6, 7, 8])
    out, _ = nb["spatial_batchnorm_forward"](x, gamma, beta, bn_param)
    _moments(checks, "gamma (3, 4, 5), beta (6, 7, 8)", out, (0, 2, 3), beta, gamma, 1e-5)
    return checks


@cell("ConvolutionalNetworks", "spatial_batchnorm_forward, test mode after 50 train steps", ALL)
def spatial_batchnorm_test_cell(nb, edition):
    np.random.seed(231)
    N, C, H, W = 10, 4, 11, 12
    bn_param = {"mode": "train"}
    gamma, beta = np.ones(C), np.zeros(C)
    for _ in range(50):
        x = 2.3 * np.random.randn(N, C, H, W) + 13
        nb["spatial_batchnorm_forward"](x, gamma, beta, bn_param)
    bn_param["mode"] = "test"
    x = 2.3 * np.random.randn(N, C, H, W) + 13
    a_norm, _ = nb["spatial_batchnorm_forward"](x, gamma, beta, bn_param)
    checks = {}
    _moments(checks, "test mode (noisier)", a_norm, (0, 2, 3), 0, 1, 0.1)
    return checks


@cell("ConvolutionalNetworks", "spatial_batchnorm_backward", ALL)
def spatial_batchnorm_backward_cell(nb, edition):
    # (The notebook's lambdas for gamma and beta ignore their argument and read the arrays
    # the checker perturbs in place: the same numbers as _norm_gradients's.)
    x, gamma, beta, dout = _normalization_inputs((2, 3, 4, 5), (3,))
    # "You should expect errors of magnitudes between 1e-12~1e-06"
    return _norm_gradients(
        nb,
        "spatial_batchnorm_forward",
        "spatial_batchnorm_backward",
        x,
        gamma,
        beta,
        dout,
        {"mode": "train"},
        1e-6,
    )


@cell("ConvolutionalNetworks", "spatial_groupnorm_forward", LATER)
def groupnorm_forward_cell(nb, edition):
    np.random.seed(231)
    N, C, H, W = 2, 6, 4, 5
    G = 2
    x = 4 * np.random.randn(N, C, H, W) + 10
    gamma, beta = np.ones((1, C, 1, 1)), np.zeros((1, C, 1, 1))
    out, _ = nb["spatial_groupnorm_forward"](x, gamma, beta, G, {"mode": "train"})
    checks = {}
    _moments(checks, "per group", out.reshape((N * G, -1)), 1, 0, 1, 1e-6)
    return checks


@cell("ConvolutionalNetworks", "spatial_groupnorm_backward", LATER)
def groupnorm_backward_cell(nb, edition):
    G = 2
    x, gamma, beta, dout = _normalization_inputs((2, 6, 4, 5), (1, 6, 1, 1))
    # "You should expect errors of magnitudes between 1e-12~1e-07"
    return _norm_gradients(
        nb,
        "spatial_groupnorm_forward",
        "spatial_groupnorm_backward",
        x,
        gamma,
        beta,
        dout,
        {},
        1e-7,
        G,
    )


# --------------------------------------------------------------------- the table

#: Editions whose notebooks and package are alike: 2018 brought the keep probability,
#: normalization= and the new layers; 2021 dropout_keep_ratio= and a shorter
#: FullyConnectedNets notebook.
EDITION_GROUPS = [(2017,), (2018, 2019, 2020), (2021, 2022, 2023, 2024)]


def cell_runs():
    """(cell, editions, package) for every cell: once for each package its editions use,
    or, by_edition, for each group of editions it stands in."""
    for c in CELLS:
        groups = (
            EDITION_GROUPS
            if c.by_edition
            else [
                [e for e in c.editions if PACKAGES[e] == package]
                for package in dict.fromkeys(PACKAGES[e] for e in c.editions)
            ]
        )
        for group in groups:
            editions = [e for e in group if e in c.editions]
            if editions:
                yield c, editions, PACKAGES[editions[0]]


def run_cell(c, editions):
    """The cell's checks as it stands in these editions, on their package."""
    return c.run(notebook_namespace(c.notebook, editions[0]), editions[0])


def span(editions):
    return f"{editions[0]}" if len(editions) == 1 else f"{editions[0]}-{editions[-1]}"


def _format(value, digits=1):
    text = value if isinstance(value, str) else f"{value:.{digits}e}"
    return text.replace("|", "\\|")  # a table cell's pipes


def _closest_to_its_limit(checks):
    """The check nearest to (or furthest beyond) what its statement allows."""

    def used(check):
        if check.limit > 0 and check.low == -math.inf:
            return check.value / check.limit
        return -math.inf  # an interval or an exact value: shown only if nothing else is

    return max(checks.items(), key=lambda item: used(item[1]))


def summary():
    """{(notebook, title): {"editions": [...], package: text}}: for each package, the number
    closest to what the notebook states for it."""
    rows = {}
    for c, editions, package in cell_runs():
        quantity, check = _closest_to_its_limit(run_cell(c, editions))
        row = rows.setdefault((c.notebook, c.title), {"editions": []})
        row["editions"] += editions
        row[package] = (
            f"{_format(check.value)} ({_format(quantity)}; stated "
            f"{_format(check.stated, digits=0)})"
        )
    return rows


if __name__ == "__main__":
    import sys

    if "--all" in sys.argv:
        print("| notebook | cell | editions | package | quantity | graphnet | stated |")
        print("|---|---|---|---|---|---|---|")
        for c, editions, package in cell_runs():
            for quantity, check in run_cell(c, editions).items():
                print(
                    f"| {c.notebook} | {c.title} | {span(editions)} | {package} "
                    f"| {_format(quantity)} | {_format(check.value)} "
                    f"| {_format(check.stated, digits=0)} |"
                )
    else:
        print(
            "| notebook: check cell | editions | graphnet.cs231n.v2017 (2017) "
            "| graphnet.cs231n (2018-2024) |"
        )
        print("|---|---|---|---|")
        for (notebook, title), row in summary().items():
            print(
                f"| {notebook}: {title} | {span(sorted(row['editions']))} "
                f"| {row.get('graphnet.cs231n.v2017', '')} | {row.get('graphnet.cs231n', '')} |"
            )
