// graphnet._C: the C++ kernels behind graphnet's gates, bound with pybind11.
//
// This file only moves data between numpy and the kernels: it checks dtypes, makes
// inputs C-contiguous (a copy only when they are not), allocates outputs, and releases
// the GIL while a kernel runs. Shape checks live next to the kernels (conv_geometry,
// pool_geometry) and throw std::invalid_argument, which pybind11 turns into ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <tuple>
#include <unistd.h>
#include <utility>
#include <vector>

#include "array_pool.h"
#include "attention.h"
#include "cache_line.h"
#include "conv.h"
#include "conv_pooled.h"
#include "dropout.h"
#include "elementwise.h"
#include "gemm.h"
#include "matmul.h"
#include "group_norm.h"
#include "norm.h"
#include "optim.h"
#include "pointwise.h"
#include "pool.h"
#include "recurrent.h"
#include "row_means.h"
#include "softmax_loss.h"
#include "svm_loss.h"
#include "threads.h"
#include "walk.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace graphnet {
namespace {

// An array of T, C-contiguous and aligned to T, as the kernels read it: a plain ndarray that
// is one already is taken as it is (a check of its type, dtype and flags); anything else
// goes through numpy's conversion, which costs about 1,500 instructions even when it
// returns its argument, three times a small product's kernel. An array whose data starts
// off its items' alignment (np.frombuffer at an odd offset) is copied: the kernels' loops
// may load T as aligned, which is undefined behaviour there.
constexpr int kContigFlags =
    py::array::c_style | py::array::forcecast | py::detail::npy_api::NPY_ARRAY_ALIGNED_;

// Does a's data start on its items' alignment (numpy's ALIGNED flag)? Arrays the kernels
// read or write in place, without Contig's copy, must.
bool aligned(const py::handle& a) {
    return py::detail::array_proxy(a.ptr())->flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_;
}

// Do two dtypes describe the same items? An array's dtype is usually numpy's own object for
// its type, so the identity test answers at once; an array that went through pickle
// (multiprocessing, a deep copy) or whose dtype carries metadata has a dtype object of its
// own that numpy counts equivalent, and must be taken like any other (by identity alone, an
// unpickled float64 array was refused as "must be float32 or float64, got float64").
bool same_dtype(const py::dtype& a, const py::dtype& b) {
    return a.is(b) || py::detail::npy_api::get().PyArray_EquivTypes_(a.ptr(), b.ptr());
}

template <typename T>
struct Contig : py::array_t<T, kContigFlags> {
    using Array = py::array_t<T, kContigFlags>;
    Contig(const py::object& a)
        : Array(Py_TYPE(a.ptr()) == py::detail::npy_api::get().PyArray_Type_ && Array::check_(a) &&
                        aligned(a)
                    ? py::reinterpret_borrow<Array>(a)
                    : Array(a)) {}
};

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Calls fn(float{}) or fn(double{}) by the dtype of `a`. Other dtypes are refused rather
// than converted, so the output dtype is always the input dtype.
template <typename Fn>
auto dispatch_float(const py::array& a, const char* what, Fn&& fn) {
    if (same_dtype(a.dtype(), py::dtype::of<float>())) return fn(float{});
    if (same_dtype(a.dtype(), py::dtype::of<double>())) return fn(double{});
    fail(std::string(what) + " must be float32 or float64, got " + dtype_name(a) + " with shape " +
         shape_str(shape_of(a)));
}

// Mixed precision is refused: silently converting would hide a costly copy or a loss of
// precision. The caller casts explicitly if it really wants that.
void require_same_dtype(const py::array& ref, const char* ref_name, const py::array& a,
                        const char* name) {
    if (!same_dtype(a.dtype(), ref.dtype())) {
        fail(std::string(name) + " has dtype " + dtype_name(a) + " but " + ref_name + " has " +
             dtype_name(ref) + " (shapes " + shape_str(shape_of(a)) + " and " +
             shape_str(shape_of(ref)) + "); cast them to one dtype");
    }
}

void require_shape(const py::array& a, const Shape& want, const char* name) {
    if (shape_of(a) != want) {
        fail(std::string(name) + " must have shape " + shape_str(want) + ", got " +
             shape_str(shape_of(a)));
    }
}

// A Python type's name, for errors about arguments of the wrong kind.
std::string type_name(const py::handle& value) {
    return py::str(py::type::handle_of(value).attr("__name__")).cast<std::string>();
}

// `value`, a tuple (or list) of `count` items: else a ValueError naming `what`.
py::tuple items_of(const py::object& value, size_t count, const std::string& what) {
    const bool sequence = py::isinstance<py::tuple>(value) || py::isinstance<py::list>(value);
    if (!sequence || py::len(value) != count) {
        fail(what + " must be a tuple of " + std::to_string(count) + " items, got " +
             (sequence ? "one of " + std::to_string(py::len(value)) : "a " + type_name(value)));
    }
    return py::tuple(value);
}

// This machine's physical memory in bytes, asked once.
int64_t physical_memory() {
    static const int64_t bytes = int64_t(sysconf(_SC_PHYS_PAGES)) * int64_t(sysconf(_SC_PAGESIZE));
    return bytes;
}

// Refuses `count` items of `item_bytes` each that this machine's memory could not hold, with
// a ValueError naming `what` (a string, or a callable that makes one only on failure), before
// any work. An array broadcast through zero strides is few bytes whatever its shape: where a
// binding's work or scratch follows its logical size rather than an output it allocates
// (a sum of products, a table per batch entry), a shape of 2**40 would run for hours or
// throw std::bad_alloc naming nothing.
template <typename What>
void require_fits_in_memory(int64_t count, int64_t item_bytes, const What& what) {
    const auto message = [&] { return describe(what); };
    if (checked_mul(count, item_bytes, message) > physical_memory()) {
        fail(describe(what) + ": " + std::to_string(count) + " x " + std::to_string(item_bytes) +
             " bytes, more than this machine's memory could hold");
    }
}

// An int of a tuple argument, as int64: else a ValueError naming `what`.
int64_t int64_item(const py::handle& item, const std::string& what) {
    if (!PyLong_Check(item.ptr())) fail(what + " must be an int, got a " + type_name(item));
    int overflow = 0;
    const long long value = PyLong_AsLongLongAndOverflow(item.ptr(), &overflow);
    if (overflow != 0) fail(what + " " + std::string(py::str(item)) + " does not fit in 64 bits");
    return value;
}

// `what`'s pool argument (pool_height, pool_width, stride), the windows of an `op` checked
// against x (N, C, H, W).
PoolGeometry pool_of(const Shape& xs, const py::object& pool, const char* what, const char* op) {
    const std::string name = std::string(what) + " pool (pool_height, pool_width, stride)";
    const py::tuple window = items_of(pool, 3, name);
    return pool_geometry(xs, int64_item(window[0], name), int64_item(window[1], name),
                         int64_item(window[2], name), op);
}

// An array of a tuple argument (a list is converted, as for array arguments).
py::array array_item(const py::handle& item, const std::string& what) {
    py::array a = py::array::ensure(item);
    if (!a) fail(what + " must be an array, got a " + type_name(item));
    return a;
}

// The checks of a convolution's forward arguments, and its geometry.
ConvGeometry checked_conv_forward(const py::array& x, const py::array& w, const py::array& b,
                                  int64_t stride, int64_t pad) {
    const ConvGeometry g = conv_geometry(shape_of(x), shape_of(w), shape_of(b), stride, pad);
    require_same_dtype(x, "x", w, "w");
    require_same_dtype(x, "x", b, "b");
    keep_blas_single_threaded();
    return g;
}

// A norm's eps, which keeps 1 / sqrt(var + eps) finite on constant features: NaN, infinite,
// zero or negative ones would turn a whole batch into NaN or infinities.
void require_norm_eps(double eps, const char* norm) {
    if (!(eps > 0) || !std::isfinite(eps)) {
        fail(std::string(norm) + ": eps must be finite and > 0, got " + std::to_string(eps));
    }
}

// The activation a conv applies ("" for none, "relu" or "leaky_relu" of a slope >= 0).
ConvActivation conv_activation(const std::string& activation, double alpha) {
    if (activation.empty()) return {};
    if (activation == "relu") return {ConvActivation::kRelu, 0.0};
    if (activation != "leaky_relu") {
        fail("conv: activation '" + activation + "' is not one it can apply ('', relu, leaky_relu)");
    }
    if (!(alpha >= 0) || !std::isfinite(alpha)) {
        fail("conv: leaky_relu's alpha must be finite and >= 0 (its gradient is taken from its "
             "output), got " + std::to_string(alpha));
    }
    return {ConvActivation::kLeakyRelu, alpha};
}

py::array py_conv_forward(const py::array& x, const py::array& w, const py::array& b,
                       int64_t stride, int64_t pad, const std::string& activation, double alpha) {
    const ConvActivation act = conv_activation(activation, alpha);
    const ConvGeometry g = checked_conv_forward(x, w, b, stride, pad);
    return dispatch_float(x, "conv x", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> xc(x), wc(w), bc(b);
        py::array_t<T> out(g.out_shape());
        const T *xp = xc.data(), *wp = wc.data(), *bp = bc.data();
        T* op = out.mutable_data();
        py::gil_scoped_release nogil;
        conv_forward(g, xp, wp, bp, op, act);
        return out;
    });
}

py::tuple py_conv_relu_pool_forward(const py::array& x, const py::array& w, const py::array& b,
                                   int64_t stride, int64_t pad, int64_t pool_height,
                                   int64_t pool_width, int64_t pool_stride) {
    const ConvGeometry g = checked_conv_forward(x, w, b, stride, pad);
    const PoolGeometry p = pool_geometry(g.out_shape(), pool_height, pool_width, pool_stride);
    return dispatch_float(x, "conv x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> xc(x), wc(w), bc(b);
        py::array_t<T> pooled(p.out_shape());
        py::array_t<int32_t> winners(p.out_shape());
        const T *xp = xc.data(), *wp = wc.data(), *bp = bc.data();
        T* pp = pooled.mutable_data();
        int32_t* winp = winners.mutable_data();
        {
            py::gil_scoped_release nogil;
            conv_relu_pool_forward(g, p, xp, wp, bp, pp, winp);
        }
        return py::make_tuple(pooled, winners);
    });
}

py::tuple py_conv_backward(const py::array& dout, const py::array& x, const py::array& w,
                        int64_t stride, int64_t pad, bool need_dx, bool need_dw,
                        const std::string& activation, double alpha, const py::object& act_out) {
    const ConvActivation act = conv_activation(activation, alpha);
    const Shape b_shape{shape_of(w).empty() ? 0 : shape_of(w)[0]};
    const ConvGeometry g = conv_geometry(shape_of(x), shape_of(w), b_shape, stride, pad);
    require_shape(dout, g.out_shape(), "conv dout");
    require_same_dtype(x, "x", w, "w");
    require_same_dtype(x, "x", dout, "dout");
    if (act.kind != ConvActivation::kNone) {
        if (act_out.is_none()) fail("conv: a backward through an activation needs act_out");
        const py::array out = act_out.cast<py::array>();
        require_shape(out, g.out_shape(), "conv act_out");
        require_same_dtype(x, "x", out, "act_out");
    }
    keep_blas_single_threaded();
    return dispatch_float(x, "conv x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> dc(dout), xc(x), wc(w);
        // dout (contiguous: no copy) stands in for act_out where there is no activation: never
        // read then.
        Contig<T> oc(act.kind != ConvActivation::kNone ? act_out : py::object(dc));
        py::object dx = py::none(), dw = py::none();
        T *dxp = nullptr, *dwp = nullptr;
        if (need_dx) {
            py::array_t<T> a({g.N, g.C, g.H, g.W});
            dxp = a.mutable_data();
            dx = a;
        }
        if (need_dw) {
            py::array_t<T> a({g.F, g.C, g.HH, g.WW});
            dwp = a.mutable_data();
            dw = a;
        }
        py::array_t<T> db(g.F);
        const T *dp = dc.data(), *xp = xc.data(), *wp = wc.data(), *op = oc.data();
        T* dbp = db.mutable_data();
        {
            py::gil_scoped_release nogil;
            conv_backward(g, dp, xp, wp, dxp, dwp, dbp, act, op);
        }
        return py::make_tuple(dx, dw, db);
    });
}

py::tuple py_conv_pooled_backward(const py::array& dpool, const py::array& pooled,
                                 const py::array& winners, const py::array& x,
                                 const py::array& w, int64_t stride, int64_t pad) {
    const Shape b_shape{shape_of(w).empty() ? 0 : shape_of(w)[0]};
    const ConvGeometry g = conv_geometry(shape_of(x), shape_of(w), b_shape, stride, pad);
    const Shape ws = shape_of(winners);
    require_rank(ws, 4, "conv_pooled winners", "(N, F, Hq, Wq)");
    if (ws[0] != g.N || ws[1] != g.F) {
        fail("conv_pooled winners " + shape_str(ws) + " must have the N and F of the conv output " +
             shape_str(g.out_shape()));
    }
    if (!same_dtype(winners.dtype(), py::dtype::of<int32_t>())) {
        fail("conv_pooled winners must be int32 (from max_pool_forward), got " +
             dtype_name(winners));
    }
    require_shape(dpool, ws, "conv_pooled dpool");
    require_shape(pooled, ws, "conv_pooled pooled");
    require_same_dtype(x, "x", w, "w");
    require_same_dtype(x, "x", dpool, "dpool");
    require_same_dtype(x, "x", pooled, "pooled");
    // The kernel indexes a padded image with int32 offsets. One too large for them (a pad
    // of thousands of pixels, which the conv itself takes) goes the general way: the conv's
    // output gradient scattered from the pooled gradient where the relu passed it, then the
    // conv's own weight gradient.
    const auto padded = [&] {
        return "conv_pooled: the padded image of x " + shape_str(shape_of(x));
    };
    const bool offsets_fit =
        checked_mul(checked_mul(g.C, padded_size(g.H, g.pad, padded), padded),
                    padded_size(g.W, g.pad, padded), padded) <= INT32_MAX;
    Contig<int32_t> wc(winners);
    return dispatch_float(x, "conv x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> dc(dpool), pc(pooled), xc(x);
        py::array_t<T> dw({g.F, g.C, g.HH, g.WW}), db(g.F);
        const T *dp = dc.data(), *pp = pc.data(), *xp = xc.data();
        const int32_t* wp = wc.data();
        T *dwp = dw.mutable_data(), *dbp = db.mutable_data();
        if (!offsets_fit && g.N > 0) {
            check_winners(wp, wc.size(), g.Ho, g.Wo);
            Contig<T> weights(w);
            std::vector<T> masked(dc.size());
            std::vector<T> dconv(checked_mul(g.N, g.F * g.positions(), "conv_pooled: dout"));
            {
                py::gil_scoped_release nogil;
                // A product, as the relu gate's backward: the same signed zeros and 0 * inf.
                for (size_t i = 0; i < masked.size(); ++i) masked[i] = dp[i] * T(pp[i] > T(0));
                max_pool_backward(g.N * g.F, g.Ho, g.Wo, ws[2], ws[3], masked.data(), wp,
                                  dconv.data());
                conv_backward(g, dconv.data(), xp, weights.data(), static_cast<T*>(nullptr),
                              dwp, dbp);
            }
            return py::make_tuple(dw, db);
        }
        bool all_inside;
        {
            py::gil_scoped_release nogil;
            all_inside = conv_pooled_backward(g, ws[2] * ws[3], xp, pp, dp, wp, dwp, dbp);
        }
        if (!all_inside) check_winners(wp, wc.size(), g.Ho, g.Wo);  // finds the culprit, throws
        return py::make_tuple(dw, db);
    });
}

py::tuple py_max_pool_forward(const py::array& x, int64_t pool_height, int64_t pool_width,
                              int64_t stride, bool relu_first) {
    const PoolGeometry g = pool_geometry(shape_of(x), pool_height, pool_width, stride);
    return dispatch_float(x, "max_pool x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> xc(x);
        py::array_t<T> out(g.out_shape());
        py::array_t<int32_t> winners(g.out_shape());
        const T* xp = xc.data();
        T* op = out.mutable_data();
        int32_t* wp = winners.mutable_data();
        {
            py::gil_scoped_release nogil;
            max_pool_forward(g, xp, op, wp, relu_first);
        }
        return py::make_tuple(out, winners);
    });
}

py::array py_max_pool_backward(const py::array& dout, const py::array& winners, int64_t H,
                               int64_t W) {
    const Shape ws = shape_of(winners);
    require_rank(ws, 4, "max_pool winners", "(N, C, Ho, Wo)");
    require_shape(dout, ws, "max_pool dout");
    if (!same_dtype(winners.dtype(), py::dtype::of<int32_t>())) {
        fail("max_pool winners must be int32 (from max_pool_forward), got " + dtype_name(winners));
    }
    if (H < 1 || W < 1 || ws[2] > H || ws[3] > W ||
        checked_mul(H, W, "max_pool input plane") > INT32_MAX) {
        fail("max_pool input size " + std::to_string(H) + "x" + std::to_string(W) +
             " must be positive, hold the " + std::to_string(ws[2]) + "x" +
             std::to_string(ws[3]) + " windows of winners and fit int32 indices");
    }
    Contig<int32_t> wc(winners);
    // Checked before dx is allocated: dx is sized by H and W, which the caller gives, so a
    // wrong H or W with hostile winners would otherwise cost gigabytes before the error.
    check_winners(wc.data(), wc.size(), H, W);
    return dispatch_float(dout, "max_pool dout", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> dc(dout);
        py::array_t<T> dx(Shape{ws[0], ws[1], H, W});
        const T* dp = dc.data();
        const int32_t* wp = wc.data();
        T* dxp = dx.mutable_data();
        py::gil_scoped_release nogil;
        max_pool_backward(ws[0] * ws[1], H, W, ws[2], ws[3], dp, wp, dxp);  // all inside
        return dx;
    });
}

bool py_all_finite(const py::array& x) {
    return dispatch_float(x, "all_finite x", [&](auto zero) -> bool {
        using T = decltype(zero);
        Contig<T> xc(x);
        const T* xp = xc.data();
        const int64_t n = xc.size();
        py::gil_scoped_release nogil;
        return all_finite(n, xp);
    });
}

py::tuple py_relu_forward(const py::array& x) {
    return dispatch_float(x, "relu x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> xc(x);
        py::array_t<T> out(shape_of(x));
        py::array_t<bool> keep(shape_of(x));
        const T* xp = xc.data();
        T* op = out.mutable_data();
        bool* kp = keep.mutable_data();
        const int64_t n = xc.size();
        {
            py::gil_scoped_release nogil;
            relu_forward(n, xp, op, kp);
        }
        return py::make_tuple(out, keep);
    });
}

py::array py_relu_backward(const py::array& dout, py::array keep) {
    require_shape(dout, shape_of(keep), "relu dout");
    if (!same_dtype(keep.dtype(), py::dtype::of<bool>())) {
        fail("relu keep must be a bool mask, got " + dtype_name(keep));
    }
    return dispatch_float(dout, "relu dout", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> dc(dout);
        // The mask is uint8-sized bools; read as bytes, so no conversion pass can sneak in.
        py::array_t<uint8_t, py::array::c_style | py::array::forcecast> kc(keep.view("uint8"));
        py::array_t<T> dx(shape_of(dout));
        const T* dp = dc.data();
        const uint8_t* kp = kc.data();
        T* dxp = dx.mutable_data();
        const int64_t n = dc.size();
        py::gil_scoped_release nogil;
        relu_backward(n, dp, kp, dxp);
        return dx;
    });
}

py::tuple py_dropout_forward(const py::array& x, uint64_t key, double keep) {
    return dispatch_float(x, "dropout x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> xc(x);
        py::array_t<T> out(shape_of(x)), mask(shape_of(x));
        const T* xp = xc.data();
        T* op = out.mutable_data();
        T* mp = mask.mutable_data();
        const int64_t n = xc.size();
        {
            py::gil_scoped_release nogil;
            dropout_forward(n, xp, key, keep, op, mp);
        }
        return py::make_tuple(out, mask);
    });
}

py::array py_dropout_backward_rows(const py::array& dout, const py::array& mask) {
    require_same_dtype(mask, "mask", dout, "dropout dout");
    return dispatch_float(mask, "dropout mask", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> dc(dout), mc(mask);
        const int64_t rows = dc.size(), units = mc.size();
        if (rows == 0 ? units != 0 : units % rows != 0) {
            fail("dropout_backward_rows: mask " + shape_str(shape_of(mask)) + " is not rows of " +
                 "dout's " + std::to_string(rows) + " entries");
        }
        py::array_t<T> dx(shape_of(mask));
        const T *dp = dc.data(), *mp = mc.data();
        T* xp = dx.mutable_data();
        const int64_t cols = rows == 0 ? 0 : units / rows;
        py::gil_scoped_release nogil;
        dropout_backward_rows(rows, cols, dp, mp, xp);
        return dx;
    });
}

py::array py_sigmoid(const py::array& x) {
    if (!same_dtype(x.dtype(), py::dtype::of<float>())) {
        fail("sigmoid x must be float32, got " + dtype_name(x));
    }
    Contig<float> xc(x);
    py::array_t<float> out(shape_of(x));
    const float* xp = xc.data();
    float* op = out.mutable_data();
    const int64_t n = xc.size();
    py::gil_scoped_release nogil;
    sigmoid_forward(n, xp, op);
    return out;
}

// What the row bindings share: `index` int64, `values` (named values_name) float32 or
// float64, and kernel(index, values, out) run without the GIL into a new array of
// out_shape (its size checked first) and values' dtype.
template <typename Kernel>
py::array row_binding(const char* name, const py::array& index, const char* values_name,
                      const py::array& values, const Shape& out_shape, Kernel&& kernel) {
    if (!same_dtype(index.dtype(), py::dtype::of<int64_t>())) {
        fail(std::string(name) + " index must be int64, got " + dtype_name(index));
    }
    int64_t size = 1;
    for (int64_t n : out_shape) size = checked_mul(size, n, std::string(name) + " output");
    Contig<int64_t> ic(index);
    const std::string what = std::string(name) + " " + values_name;
    return dispatch_float(values, what.c_str(), [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> vc(values);
        py::array_t<T> out(out_shape);
        const int64_t* ip = ic.data();
        const T* vp = vc.data();
        T* op = out.mutable_data();
        py::gil_scoped_release nogil;
        kernel(ip, vp, op);
        return out;
    });
}

py::array py_scatter_add_rows(const py::array& index, const py::array& values, int64_t rows) {
    const Shape vs = shape_of(values);
    require_rank(vs, 2, "scatter_add_rows values", "(positions, width)");
    require_shape(index, Shape{vs[0]}, "scatter_add_rows index");
    if (rows < 0) fail("scatter_add_rows rows must be >= 0, got " + std::to_string(rows));
    return row_binding("scatter_add_rows", index, "values", values, Shape{rows, vs[1]},
                       [&](const int64_t* ip, auto vp, auto op) {
                           scatter_add_rows(vs[0], vs[1], ip, vp, rows, op);
                       });
}

py::array py_gather_rows(const py::array& index, const py::array& table) {
    const Shape ts = shape_of(table);
    require_rank(ts, 2, "gather_rows table", "(rows, width)");
    Shape out_shape = shape_of(index);
    out_shape.push_back(ts[1]);
    const int64_t count = static_cast<int64_t>(index.size());
    return row_binding("gather_rows", index, "table", table, out_shape,
                       [&](const int64_t* ip, auto tp, auto op) {
                           gather_rows(count, ts[1], ip, tp, ts[0], op);
                       });
}

// The softmax loss kernel on x (..., V) of dtype T, whose rows are all its leading axes,
// against int64 labels (one per row), each row weighted by weight (null: 1 each): (the
// weighted sum of the rows' losses, dx of x's shape or None).
template <typename T>
std::pair<double, py::object> softmax_loss_of(const Shape& xs, const py::array& x,
                                              const py::array& labels, const T* weight,
                                              bool gradient) {
    Contig<int64_t> yc(labels);
    Contig<T> xc(x);
    py::object dx = py::none();
    T* dxp = nullptr;
    if (gradient) {
        py::array_t<T> array(xs);
        dxp = array.mutable_data();
        dx = std::move(array);
    }
    const T* xp = xc.data();
    const int64_t* yp = yc.data();
    const int64_t V = xs.back(), rows = static_cast<int64_t>(labels.size());
    double loss;
    {
        py::gil_scoped_release nogil;
        loss = softmax_loss_rows(rows, V, xp, yp, weight, dxp);
    }
    return {loss, dx};
}

// x (rows, V) and its labels, for the softmax loss bindings.
Shape checked_softmax_loss(const py::array& x, const py::array& labels) {
    const Shape xs = shape_of(x);
    require_rank(xs, 2, "softmax loss x", "(rows, V)");
    require_shape(labels, Shape{xs[0]}, "softmax loss labels");
    if (!same_dtype(labels.dtype(), py::dtype::of<int64_t>())) {
        fail("softmax loss labels must be int64, got " + dtype_name(labels));
    }
    return xs;
}

py::tuple py_softmax_loss(const py::array& x, const py::array& labels, const py::array& weight,
                          bool gradient) {
    const Shape xs = checked_softmax_loss(x, labels);
    require_shape(weight, Shape{xs[0]}, "softmax loss row weights");
    require_same_dtype(x, "x", weight, "weight");
    return dispatch_float(x, "softmax loss x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> wc(weight);
        auto [loss, dx] = softmax_loss_of<T>(xs, x, labels, wc.data(), gradient);
        return py::make_tuple(loss, dx);
    });
}

// The softmax loss gate's numbers (gates/nn.py) in one call: the rows' losses summed in
// double, divided by the rows and rounded to x's dtype, and each entry of dx divided by the
// rows after the kernel wrote it: the numbers of `np.asarray(loss / rows, x.dtype)[()]` and
// `dx /= rows` after softmax_loss with weights of 1, without the six numpy calls around it,
// which at batch 1 cost a loss several times its arithmetic.
py::tuple py_mean_softmax_loss(const py::array& x, const py::array& labels, bool gradient) {
    const Shape xs = checked_softmax_loss(x, labels);
    if (xs[0] == 0) fail("mean softmax loss: x " + shape_str(xs) + " has no rows");
    return dispatch_float(x, "softmax loss x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        auto [loss, dx] = softmax_loss_of<T>(xs, x, labels, nullptr, gradient);
        const T rows = static_cast<T>(xs[0]);
        if (gradient) {
            auto d = py::reinterpret_borrow<py::array_t<T>>(dx);
            T* p = d.mutable_data();
            for (int64_t i = 0, n = xs[0] * xs[1]; i < n; ++i) p[i] /= rows;
        }
        py::array_t<T> mean(Shape{});
        *mean.mutable_data() = static_cast<T>(loss / static_cast<double>(xs[0]));
        return py::make_tuple(mean[py::tuple()], dx);  // the 0-d array's numpy scalar
    });
}

// rnn_layers.temporal_softmax_loss's numbers in one call, for x (N, T, V), the words y
// (N, T) int64 and the mask (N, T) bool or int64: each step weighs (mask != 0) / N, the
// weight `(mask.astype(bool) / max(N, 1)).astype(x.dtype)` makes (1 / N in double rounded to
// x's dtype, or 0), without the dozen numpy calls that make it and check the arguments,
// several times the kernel's time on one sequence. (the weighted sum of the steps' losses,
// dx (N, T, V) or None.)
py::tuple py_sequence_softmax_loss(const py::array& x, const py::array& y, const py::array& mask,
                                   bool gradient) {
    const Shape xs = shape_of(x);
    require_rank(xs, 3, "sequence softmax loss x", "(N, T, V)");
    const Shape steps{xs[0], xs[1]};
    require_shape(y, steps, "sequence softmax loss y");
    require_shape(mask, steps, "sequence softmax loss mask");
    if (!same_dtype(y.dtype(), py::dtype::of<int64_t>())) {
        fail("sequence softmax loss y must be int64, got " + dtype_name(y));
    }
    const bool bools = same_dtype(mask.dtype(), py::dtype::of<bool>());
    if (!bools && !same_dtype(mask.dtype(), py::dtype::of<int64_t>())) {
        fail("sequence softmax loss mask must be bool or int64, got " + dtype_name(mask));
    }
    const int64_t rows = checked_mul(xs[0], xs[1], "sequence softmax loss steps");
    return dispatch_float(x, "sequence softmax loss x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        const T share = static_cast<T>(1.0 / static_cast<double>(std::max<int64_t>(xs[0], 1)));
        require_fits_in_memory(rows, int64_t(sizeof(T)), [&] {
            return "sequence softmax loss x " + shape_str(xs) + "'s weights of its steps";
        });
        std::vector<T> weight(rows);
        if (bools) {
            const Contig<bool> mc(mask);
            for (int64_t i = 0; i < rows; ++i) weight[i] = mc.data()[i] ? share : T(0);
        } else {
            const Contig<int64_t> mc(mask);
            for (int64_t i = 0; i < rows; ++i) weight[i] = mc.data()[i] != 0 ? share : T(0);
        }
        auto [loss, dx] = softmax_loss_of<T>(xs, x, y, weight.data(), gradient);
        return py::make_tuple(loss, dx);
    });
}

py::tuple py_svm_loss(const py::array& x, const py::array& labels) {
    const Shape xs = shape_of(x);
    require_rank(xs, 2, "svm loss x", "(rows, C)");
    require_shape(labels, Shape{xs[0]}, "svm loss labels");
    if (!same_dtype(labels.dtype(), py::dtype::of<int64_t>())) {
        fail("svm loss labels must be int64, got " + dtype_name(labels));
    }
    Contig<int64_t> yc(labels);
    return dispatch_float(x, "svm loss x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> xc(x);
        py::array_t<T> dx(xs);
        const T* xp = xc.data();
        const int64_t* yp = yc.data();
        T* dxp = dx.mutable_data();
        double loss;
        {
            py::gil_scoped_release nogil;
            loss = svm_loss_rows(xs[0], xs[1], xp, yp, T(xs[0]), dxp);
        }
        return py::make_tuple(loss, dx);
    });
}

// kernel(x's entries in C order, out's) for a float array x and a new array out of x's
// dtype and `out_shape`, without the GIL: the means' bindings.
template <typename Kernel>
py::array float_map(const py::array& x, const char* what, const Shape& out_shape,
                    Kernel kernel) {
    return dispatch_float(x, what, [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> xc(x);
        py::array_t<T> out(out_shape);
        const T* xp = xc.data();
        T* op = out.mutable_data();
        py::gil_scoped_release nogil;
        kernel(xp, op);
        return out;
    });
}

py::array py_row_means(const py::array& x) {
    const Shape xs = shape_of(x);
    require_rank(xs, 2, "row_means x", "(rows, n)");
    return float_map(x, "row_means x", Shape{xs[0]},
                     [&](const auto* xp, auto* op) { row_means(xs[0], xs[1], xp, op); });
}

py::array py_middle_means(const py::array& x) {
    const Shape xs = shape_of(x);
    require_rank(xs, 3, "middle_means x", "(outer, n, inner)");
    return float_map(x, "middle_means x", Shape{xs[0], xs[2]}, [&](const auto* xp, auto* op) {
        middle_means(xs[0], xs[1], xs[2], xp, op);
    });
}

py::array py_spread_means(const py::array& dout, int64_t n) {
    const Shape ds = shape_of(dout);
    require_rank(ds, 2, "spread_means dout", "(outer, inner)");
    if (n < 0) throw py::value_error("spread_means n must be 0 or more, got " + std::to_string(n));
    checked_mul(checked_mul(ds[0], n, "spread_means dx"), ds[1], "spread_means dx");
    return float_map(dout, "spread_means dout", Shape{ds[0], n, ds[1]},
                     [&](const auto* dp, auto* xp) { spread_means(ds[0], n, ds[1], dp, xp); });
}

// c (m x n) = op(a) op(b), plus bias (n entries, or nullptr) added to each row after the
// product: numpy's `c += bias`, one rounding per element, without its call (0.6 us, a third
// of a small affine at batch 1). The matmul binding's and the affine chain's.
template <typename T>
void matmul_plus_bias(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                      const T* a, const T* b, const T* bias, T* c) {
    if (m == 0 || n == 0) return;  // an empty C, whatever the other size (up to 2**60)
    if (k > 0) return matmul(transpose_a, transpose_b, m, n, k, a, b, c, bias);
    for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) c[i * n + j] = bias != nullptr ? T(0) + bias[j] : T(0);
    }
}

py::array py_matmul(const py::array& a, const py::array& b, bool transpose_a, bool transpose_b,
                    const py::object& bias) {
    require_rank(shape_of(a), 2, "matmul a", "(rows, columns)");
    require_rank(shape_of(b), 2, "matmul b", "(rows, columns)");
    require_same_dtype(a, "a", b, "b");
    const bool biased = !bias.is_none();
    const py::array bias_array = biased ? py::array::ensure(bias) : py::array();
    if (biased) {
        if (!bias_array) fail("matmul bias must be an array");
        require_same_dtype(a, "a", bias_array, "bias");
        require_shape(bias_array, Shape{b.shape(transpose_b ? 0 : 1)}, "matmul bias");
    }
    const int64_t m = a.shape(transpose_a ? 1 : 0), k = a.shape(transpose_a ? 0 : 1);
    const int64_t n = b.shape(transpose_b ? 0 : 1), kb = b.shape(transpose_b ? 1 : 0);
    if (k != kb) {
        fail("matmul: op(a) is " + std::to_string(m) + " x " + std::to_string(k) + " but op(b) is " +
             std::to_string(kb) + " x " + std::to_string(n) + " (a " + shape_str(shape_of(a)) +
             ", b " + shape_str(shape_of(b)) + ")");
    }
    require_blas_size(std::max({checked_mul(m, k, "matmul a"), checked_mul(k, n, "matmul b"),
                                checked_mul(m, n, "matmul output")}),
                      [&] {
                          return "an operand of matmul (a " + shape_str(shape_of(a)) + ", b " +
                                 shape_str(shape_of(b)) + ")";
                      });
    keep_blas_single_threaded();
    return dispatch_float(a, "matmul a", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> ac(a), bc(b);
        const Contig<T> biasc(biased ? bias_array : b);  // read only when biased
        py::array_t<T> c(Shape{m, n});
        const T *ap = ac.data(), *bp = bc.data(), *biasp = biasc.data();
        T* cp = c.mutable_data();
        py::gil_scoped_release nogil;
        matmul_plus_bias(transpose_a, transpose_b, m, n, k, ap, bp, biased ? biasp : nullptr, cp);
        return c;
    });
}

// An operand of batched_matmul as a MatrixStack over the product's `batch` (its own
// batch axes aligned to the right, broadcast where it has one entry or none). An array
// the kernels cannot read in place (data off its items' alignment, strides that are not
// whole items) is copied first, into `kept`.
template <typename T>
MatrixStack<T> matrix_stack(const py::array& x, const Shape& batch, py::array& kept) {
    const auto in_place = [](const py::array& a) {
        if (!aligned(a)) return false;
        for (py::ssize_t axis = 0; axis < a.ndim(); ++axis) {
            if (a.strides(axis) % py::ssize_t(sizeof(T)) != 0) return false;
        }
        return true;
    };
    kept = in_place(x) ? x : Contig<T>(x);
    const auto stride = [&](py::ssize_t axis) {
        return int64_t(kept.strides(axis)) / int64_t(sizeof(T));
    };
    const py::ssize_t rank = kept.ndim(), first = int64_t(batch.size()) - (rank - 2);
    MatrixStack<T> s{static_cast<const T*>(kept.data()), kept.shape(rank - 2),
                     kept.shape(rank - 1), stride(rank - 2), stride(rank - 1),
                     Shape(batch.size(), 0)};
    for (py::ssize_t axis = 0; axis < rank - 2; ++axis) {
        if (kept.shape(axis) == batch[first + axis]) s.batch_strides[first + axis] = stride(axis);
    }
    return s;
}

// batched_matmul's `summed_to` (None: the product's batch): the batch axes of the result,
// aligned to the right with the product's, each its size or 1 (summed over); the result's
// batch shape and summed_to as batched_matmul takes it (the product's rank).
std::pair<Shape, Shape> summed_batch(const py::object& summed_to, const Shape& batch) {
    if (summed_to.is_none()) return {batch, batch};
    const bool sequence =
        py::isinstance<py::tuple>(summed_to) || py::isinstance<py::list>(summed_to);
    if (!sequence) fail("batched_matmul: summed_to must be a tuple, got a " + type_name(summed_to));
    const py::tuple sizes(summed_to);
    if (sizes.size() > batch.size()) {
        fail("batched_matmul: summed_to has " + std::to_string(sizes.size()) +
             " axes, more than the product's batch " + shape_str(batch));
    }
    Shape given, aligned(batch.size(), 1);
    const size_t first = batch.size() - sizes.size();
    for (size_t axis = 0; axis < sizes.size(); ++axis) {
        const int64_t size = int64_item(sizes[axis], "batched_matmul: summed_to's item");
        if (size != 1 && size != batch[first + axis]) {
            fail("batched_matmul: summed_to " + std::string(py::str(summed_to)) +
                 " is not the batch " + shape_str(batch) + " with some axes summed to 1");
        }
        given.push_back(size);
        aligned[first + axis] = size;
    }
    return {given, aligned};
}

py::array py_batched_matmul(const py::array& a, const py::array& b, bool transpose_a,
                            bool transpose_b, const py::object& summed_to) {
    const Shape as = shape_of(a), bs = shape_of(b);
    if (as.size() < 2 || bs.size() < 2) {
        fail("batched_matmul takes arrays of rank >= 2, got a " + shape_str(as) + " and b " +
             shape_str(bs));
    }
    require_same_dtype(a, "a", b, "b");
    const auto shapes = [&] { return " (a " + shape_str(as) + ", b " + shape_str(bs) + ")"; };
    // The batch: both operands' leading axes, aligned to the right, numpy's broadcasting.
    Shape batch(std::max(as.size(), bs.size()) - 2, 1);
    int64_t count = 1;
    for (size_t axis = 0; axis < batch.size(); ++axis) {
        const size_t from_end = batch.size() - axis;  // this axis of the batch, from the right
        const int64_t na = from_end <= as.size() - 2 ? as[as.size() - 2 - from_end] : 1;
        const int64_t nb = from_end <= bs.size() - 2 ? bs[bs.size() - 2 - from_end] : 1;
        if (na != nb && na != 1 && nb != 1) {
            fail("batched_matmul: the batch axes do not broadcast" + shapes());
        }
        batch[axis] = na == 1 ? nb : na;
        count = checked_mul(count, batch[axis], "batched_matmul's count of matrices");
    }
    const int64_t m = as[as.size() - (transpose_a ? 1 : 2)];
    const int64_t k = as[as.size() - (transpose_a ? 2 : 1)];
    const int64_t kb = bs[bs.size() - (transpose_b ? 1 : 2)];
    const int64_t n = bs[bs.size() - (transpose_b ? 2 : 1)];
    if (k != kb) {
        fail("batched_matmul: op(a) is " + std::to_string(m) + " x " + std::to_string(k) +
             " but op(b) is " + std::to_string(kb) + " x " + std::to_string(n) + shapes());
    }
    auto [out_shape, summed] = summed_batch(summed_to, batch);
    out_shape.push_back(m);
    out_shape.push_back(n);
    int64_t results = 1;
    for (const int64_t size : summed) results *= size;
    checked_mul(checked_mul(results, m, "batched_matmul output"), n, "batched_matmul output");
    if (results < count) {
        // A sum multiplies every product however few results it gives. The gate sums no more
        // products than its upstream gradient holds, so more than would fit is refused.
        require_fits_in_memory(count, checked_mul(checked_mul(m, n, "a product"),
                                                  int64_t(a.itemsize()), "a product"),
                               [&] {
                                   return "batched_matmul: summed_to sums " +
                                          std::to_string(count) + " products of " +
                                          std::to_string(m) + " x " + std::to_string(n) + shapes();
                               });
    }
    if (count > 0 && m > 0 && n > 0 && k > 0) {  // products to run: BLAS's 32-bit sizes
        require_blas_size(std::max({checked_mul(m, k, "batched_matmul a"),
                                    checked_mul(k, n, "batched_matmul b"), m * n}),
                          [&] { return "a matrix of batched_matmul" + shapes(); });
    }
    keep_blas_single_threaded();
    return dispatch_float(a, "batched_matmul a", [&](auto zero) -> py::array {
        using T = decltype(zero);
        py::array a_kept, b_kept;
        const MatrixStack<T> a_stack = matrix_stack<T>(a, batch, a_kept);
        const MatrixStack<T> b_stack = matrix_stack<T>(b, batch, b_kept);
        py::array_t<T> c(out_shape);
        T* cp = c.mutable_data();
        py::gil_scoped_release nogil;
        batched_matmul(transpose_a, transpose_b, batch, a_stack, b_stack, summed, cp);
        return c;
    });
}

py::array py_column_sums(const py::array& a) {
    require_rank(shape_of(a), 2, "column_sums a", "(rows, columns)");
    const int64_t m = a.shape(0), n = a.shape(1);
    return dispatch_float(a, "column_sums a", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> ac(a);
        py::array_t<T> out(Shape{n});
        const T* ap = ac.data();
        T* outp = out.mutable_data();
        py::gil_scoped_release nogil;
        column_sums(m, n, ap, outp);
        return out;
    });
}

// An affine map on the rows of x: out = rows @ w + b, rows the (R, D) matrix of x's values,
// R = the product of x's first `kept` axes (an affine layer keeps 1, a temporal affine 2),
// D = w.shape[0] = the product of the rest. The checks and both reshapes in one call: at
// one sequence a temporal affine's Python around its product cost half the 32 x 64 x 64
// product (docs/performance/overhead.md).
struct AffineRows {
    int64_t rows, features, outputs;  // R, D, M
    Shape kept;                       // x's first `kept` axes
};

AffineRows affine_rows(const py::array& x, const py::array& w, int64_t kept) {
    const Shape xs = shape_of(x), ws = shape_of(w);
    require_rank(ws, 2, "affine w", "(D, M)");
    if (kept < 1 || kept > static_cast<int64_t>(xs.size())) {
        fail("affine x of shape " + shape_str(xs) + " has no " + std::to_string(kept) +
             " leading axes to keep");
    }
    AffineRows a{1, 1, ws[1], Shape(xs.begin(), xs.begin() + kept)};
    for (size_t i = 0; i < xs.size(); ++i) {
        int64_t& product = static_cast<int64_t>(i) < kept ? a.rows : a.features;
        product = checked_mul(product, xs[i], "affine x's size");
    }
    if (a.features != ws[0]) {
        fail("affine x of shape " + shape_str(xs) + " has " + std::to_string(a.features) +
             " features past its first " + std::to_string(kept) + " axes but w has shape " +
             shape_str(ws));
    }
    require_blas_size(std::max({checked_mul(a.rows, a.features, "affine x"), a.features * a.outputs,
                                checked_mul(a.rows, a.outputs, "affine output")}),
                      [&] { return "an operand of affine (x " + shape_str(xs) + ", w " + shape_str(ws) + ")"; });
    return a;
}

py::array py_affine_forward(const py::array& x, const py::array& w, const py::array& b,
                            int64_t kept) {
    const AffineRows a = affine_rows(x, w, kept);
    require_same_dtype(x, "x", w, "w");
    require_same_dtype(x, "x", b, "b");
    require_shape(b, Shape{a.outputs}, "affine b");
    keep_blas_single_threaded();
    return dispatch_float(x, "affine x", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> xc(x), wc(w), bc(b);
        Shape out_shape = a.kept;
        out_shape.push_back(a.outputs);
        py::array_t<T> out(out_shape);
        const T *xp = xc.data(), *wp = wc.data(), *bp = bc.data();
        T* op = out.mutable_data();
        py::gil_scoped_release nogil;
        matmul_plus_bias(false, false, a.rows, a.outputs, a.features, xp, wp, bp, op);
        return out;
    });
}

// The gradients of out = rows @ w + b from dout (x's first `kept` axes, M), kept =
// dout.ndim - 1: dx = dout w^T in x's shape, dw = rows^T dout, db = dout's column sums
// (the same kernels as _C.matmul and _C.column_sums; one column summed as numpy sums it).
// needs: three bools; an input nobody needs gets None.
py::tuple py_affine_backward(const py::array& dout, const py::array& x, const py::array& w,
                             const py::sequence& needs) {
    const AffineRows a = affine_rows(x, w, dout.ndim() - 1);
    Shape dout_shape = a.kept;
    dout_shape.push_back(a.outputs);
    require_shape(dout, dout_shape, "affine dout");
    require_same_dtype(x, "x", w, "w");
    require_same_dtype(x, "x", dout, "dout");
    if (needs.size() != 3) fail("affine needs must be three bools");
    const auto needed = [&](size_t i) {
        const int truth = PyObject_IsTrue(needs[i].ptr());
        if (truth < 0) throw py::error_already_set();
        return truth == 1;
    };
    const bool need_dx = needed(0), need_dw = needed(1), need_db = needed(2);
    keep_blas_single_threaded();
    return dispatch_float(x, "affine x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> dc(dout), xc(x), wc(w);
        std::optional<py::array_t<T>> dx, dw, db;
        if (need_dx) dx.emplace(shape_of(x));
        if (need_dw) dw.emplace(Shape{a.features, a.outputs});
        if (need_db) db.emplace(Shape{a.outputs});
        const T *dp = dc.data(), *xp = xc.data(), *wp = wc.data();
        T* dxp = dx ? dx->mutable_data() : nullptr;
        T* dwp = dw ? dw->mutable_data() : nullptr;
        T* dbp = db ? db->mutable_data() : nullptr;
        {
            py::gil_scoped_release nogil;
            const T* no_bias = nullptr;
            if (dxp) matmul_plus_bias(false, true, a.rows, a.features, a.outputs, dp, wp, no_bias, dxp);
            if (dwp) matmul_plus_bias(true, false, a.features, a.outputs, a.rows, xp, dp, no_bias, dwp);
            if (dbp && a.outputs == 1) {
                dbp[0] = numpy_sum(dp, a.rows);
            } else if (dbp) {
                column_sums(a.rows, a.outputs, dp, dbp);
            }
        }
        auto or_none = [](std::optional<py::array_t<T>>& array) -> py::object {
            return array ? py::object(std::move(*array)) : py::none();
        };
        return py::make_tuple(or_none(dx), or_none(dw), or_none(db));
    });
}

// A hyperparameter's name in config and its largest value; every one is at least 0.
struct Hyperparameter {
    py::str name;
    double most;
};

// An update rule's fields in graphnet.optim's config: its hyperparameters in the order
// UpdateStep.hyper holds them, its state arrays (at most two), and whether it counts steps.
struct RuleFields {
    UpdateRule rule;
    py::str name;
    std::vector<Hyperparameter> hyperparameters;
    std::vector<py::str> states;
    bool counts_steps;
};

// Interned, so that a rule named by a string literal in Python is found by identity.
py::str interned(const char* text) { return py::reinterpret_steal<py::str>(PyUnicode_InternFromString(text)); }

const RuleFields& rule_fields(py::handle name) {
    constexpr double any = std::numeric_limits<double>::max();
    // beta1 and beta2 stay below 1: adam divides by 1 - beta**t.
    constexpr double below_one = 1.0 - 0x1p-53;  // the largest double below 1
    // Never destroyed: the interpreter may be gone when statics are.
    static const auto* rules = new std::vector<RuleFields>{
        {UpdateRule::sgd, interned("sgd"), {{interned("learning_rate"), any}}, {}, false},
        {UpdateRule::sgd_momentum, interned("sgd_momentum"),
         {{interned("learning_rate"), any}, {interned("momentum"), any}}, {interned("velocity")},
         false},
        {UpdateRule::rmsprop, interned("rmsprop"),
         {{interned("learning_rate"), any}, {interned("decay_rate"), 1.0},
          {interned("epsilon"), any}},
         {interned("cache")}, false},
        {UpdateRule::adam, interned("adam"),
         {{interned("learning_rate"), any}, {interned("beta1"), below_one},
          {interned("beta2"), below_one}, {interned("epsilon"), any}},
         {interned("m"), interned("v")}, true},
    };
    for (const RuleFields& fields : *rules) {
        if (name.ptr() == fields.name.ptr()) return fields;
    }
    for (const RuleFields& fields : *rules) {
        if (PyUnicode_Check(name.ptr()) && fields.name.equal(name)) return fields;
    }
    fail("update rule must be 'sgd', 'sgd_momentum', 'rmsprop' or 'adam', got " +
         std::string(py::repr(name)));
}

// The index of the first hyperparameter out of its range (NaN, infinite, negative, or a beta
// of 1 or more), the count of them when adam's t (already incremented) is below 1, or -1 when
// all are in range. Out of range, the update would write NaN or infinities into w.
int64_t out_of_range(const RuleFields& fields, const double* hyper, int64_t t) {
    const auto count = static_cast<int64_t>(fields.hyperparameters.size());
    for (int64_t i = 0; i < count; ++i) {
        if (!(hyper[i] >= 0 && hyper[i] <= fields.hyperparameters[i].most)) return i;
    }
    return fields.counts_steps && t < 1 ? count : -1;
}

// One step of `fields`' rule with these hyperparameters (in graphnet.optim's order) and adam's
// t (already incremented): else a ValueError naming the config field.
UpdateStep checked_step(const RuleFields& fields, const py::sequence& hyperparameter_values,
                        int64_t t) {
    const std::string rule = fields.name;
    UpdateStep step{fields.rule, {}, t};
    size_t count = 0;
    for (const py::handle value : hyperparameter_values) {
        const double number = PyFloat_AsDouble(value.ptr());  // as py::cast<double> converts
        if (number == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            fail("update: " + rule + "'s hyperparameters must be numbers, got " +
                 std::string(py::repr(value)));
        }
        if (count < fields.hyperparameters.size()) step.hyper[count] = number;
        ++count;
    }
    if (count != fields.hyperparameters.size()) {
        fail("update: " + rule + " takes " + std::to_string(fields.hyperparameters.size()) +
             " hyperparameters, got " + std::to_string(count));
    }
    const int64_t bad = out_of_range(fields, step.hyper, t);
    if (bad < 0) return step;
    if (bad == static_cast<int64_t>(fields.hyperparameters.size())) {
        const std::string steps_taken = t > std::numeric_limits<int64_t>::min()
                                            ? std::to_string(t - 1)
                                            : "-2**63 - 1";
        fail(rule + ": config['t'] counts the steps taken and must be >= 0, got " + steps_taken);
    }
    const Hyperparameter& field = fields.hyperparameters[bad];
    const std::string range =
        field.most == 1.0 ? "in [0, 1]" : field.most < 1.0 ? "in [0, 1)" : "finite and >= 0";
    fail(rule + ": config['" + std::string(field.name) + "'] must be " + range + ", got " +
         std::string(py::repr(hyperparameter_values[bad])));
}

using UpdateStates = std::array<py::object, 2>;  // a rule's state arrays; null past its count

// One step of a rule on arrays checked by the caller: w and the states C-contiguous and
// writeable, all of one float dtype and shape.
void run_update(const UpdateStep& step, py::array w, const py::array& dw,
                const UpdateStates& states) {
    dispatch_float(w, "update w", [&](auto zero) {
        using T = decltype(zero);
        Contig<T> dwc(dw);
        T* wp = static_cast<T*>(w.mutable_data());
        const auto data = [](const py::object& state) {
            return state ? static_cast<T*>(py::reinterpret_borrow<py::array>(state).mutable_data())
                         : nullptr;
        };
        T* state0 = data(states[0]);
        T* state1 = data(states[1]);
        const T* gp = dwc.data();
        const int64_t n = w.size();
        py::gil_scoped_release nogil;
        apply_update(step, n, wp, gp, state0, state1);
    });
}

// The update writes into w and the states, so they must be C-contiguous, writeable arrays of
// one float dtype (what graphnet.optim hands over); the Python side falls back to numpy for
// anything else.
void py_update(py::handle rule, py::array w, const py::array& dw,
               const py::sequence& state_arrays, const py::sequence& hyperparameter_values,
               int64_t t) {
    const RuleFields& fields = rule_fields(rule);
    const size_t count = py::len(state_arrays);
    UpdateStates states;
    if (count == fields.states.size()) {
        for (size_t i = 0; i < count; ++i) {
            states[i] = state_arrays[i];
            if (!py::isinstance<py::array>(states[i])) fail("update: the states must be numpy arrays");
        }
    }
    const size_t hyperparameter_count = py::len(hyperparameter_values);
    if (count != fields.states.size() || hyperparameter_count != fields.hyperparameters.size()) {
        fail("update: " + std::string(fields.name) + " takes " +
             std::to_string(fields.states.size()) + " state arrays and " +
             std::to_string(fields.hyperparameters.size()) + " hyperparameters, got " +
             std::to_string(count) + " and " + std::to_string(hyperparameter_count));
    }
    const UpdateStep step = checked_step(fields, hyperparameter_values, t);
    require_same_dtype(w, "w", dw, "dw");
    require_shape(dw, shape_of(w), "dw");
    for (size_t i = 0; i < count; ++i) {
        const std::string name = fields.states[i];
        const auto state = py::reinterpret_borrow<py::array>(states[i]);
        require_same_dtype(w, "w", state, name.c_str());
        require_shape(state, shape_of(w), name.c_str());
    }
    for (size_t i = 0; i <= count; ++i) {
        const auto a = i == 0 ? w : py::reinterpret_borrow<py::array>(states[i - 1]);
        if (!(a.flags() & py::array::c_style) || !a.writeable() || !aligned(a)) {
            const std::string name = i == 0 ? std::string("w") : std::string(fields.states[i - 1]);
            fail("update: " + name + " must be a C-contiguous, aligned, writeable array");
        }
    }
    run_update(step, w, dw, states);
}

// The checks of the update's hyperparameters alone, for graphnet.optim's numpy path (arrays
// the kernel cannot take).
void py_check_update(py::handle rule, const py::sequence& hyperparameter_values, int64_t t) {
    checked_step(rule_fields(rule), hyperparameter_values, t);
}

// Is `a` a numpy array itself (no subclass) of float32 or float64, in native byte order?
bool plain_float_array(PyObject* a) {
    if (Py_TYPE(a) != py::detail::npy_api::get().PyArray_Type_) return false;
    const py::dtype dtype = py::reinterpret_borrow<py::array>(a).dtype();
    return same_dtype(dtype, py::dtype::of<float>()) || same_dtype(dtype, py::dtype::of<double>());
}

// Can the kernel update `a` in place as one of w's states: a plain array of w's dtype and
// shape, C-contiguous and writeable?
bool in_place_like(PyObject* a, const py::array& w) {
    if (a == nullptr || Py_TYPE(a) != py::detail::npy_api::get().PyArray_Type_) return false;
    const auto state = py::reinterpret_borrow<py::array>(a);
    return same_dtype(state.dtype(), w.dtype()) && shape_of(state) == shape_of(w) &&
           (state.flags() & py::array::c_style) && state.writeable() && aligned(state);
}

// config[key] as a double, for a Python float (numpy's float64 is one) or int, not a bool.
bool number_in(PyObject* config, PyObject* key, double& value) {
    PyObject* item = PyDict_GetItemWithError(config, key);  // borrowed
    if (item != nullptr && PyFloat_Check(item)) {
        value = PyFloat_AS_DOUBLE(item);
        return true;
    }
    if (item == nullptr || !PyLong_CheckExact(item)) return false;
    value = PyLong_AsDouble(item);
    return !(value == -1.0 && PyErr_Occurred());
}

// A graphnet.optim rule's everyday call in one step: every hyperparameter a Python number,
// adam's t an int, the state arrays ones the kernel updates in place, w and dw plain float
// arrays of one dtype and shape, w C-contiguous and writeable. Then it makes the Python
// path's update (the same kernel, so the same numbers) and its one change to config (adam:
// t += 1), and returns True. Anything else returns False having changed nothing, and the
// Python path checks it as before (its errors name the rule and the field).
bool py_update_step(py::handle rule, py::handle w_handle, py::handle dw_handle,
                    py::handle config_handle) {
    const RuleFields& fields = rule_fields(rule);
    PyObject* config = config_handle.ptr();
    if (!PyDict_CheckExact(config) || !plain_float_array(w_handle.ptr()) ||
        !plain_float_array(dw_handle.ptr())) {
        return false;
    }
    const auto w = py::reinterpret_borrow<py::array>(w_handle);
    const auto dw = py::reinterpret_borrow<py::array>(dw_handle);
    if (!same_dtype(dw.dtype(), w.dtype()) || shape_of(dw) != shape_of(w) ||
        !(w.flags() & py::array::c_style) || !w.writeable() || !aligned(w)) {
        return false;
    }
    UpdateStep step{fields.rule, {}, 0};
    for (size_t i = 0; i < fields.hyperparameters.size(); ++i) {
        if (!number_in(config, fields.hyperparameters[i].name.ptr(), step.hyper[i])) {
            if (PyErr_Occurred()) PyErr_Clear();  // an int too large for a double: Python's path
            return false;
        }
    }
    static const auto* t_key = new py::str("t");
    if (fields.counts_steps) {
        PyObject* t = PyDict_GetItemWithError(config, t_key->ptr());
        if (t == nullptr || !PyLong_CheckExact(t)) return false;
        int overflow = 0;
        const long long t_before = PyLong_AsLongLongAndOverflow(t, &overflow);
        if (overflow != 0 || t_before == std::numeric_limits<long long>::max()) return false;
        step.t = t_before + 1;
    }
    if (out_of_range(fields, step.hyper, step.t) >= 0) return false;
    // Owned: another thread may replace them in config while the kernel runs without the GIL.
    UpdateStates states;
    for (size_t i = 0; i < fields.states.size(); ++i) {
        PyObject* state = PyDict_GetItemWithError(config, fields.states[i].ptr());
        if (!in_place_like(state, w)) return false;
        states[i] = py::reinterpret_borrow<py::object>(state);
    }
    if (fields.counts_steps) config_handle[*t_key] = py::int_(step.t);
    run_update(step, w, dw, states);
    return true;
}

Cell cell_named(const std::string& name) {
    if (name == "rnn") return Cell::rnn;
    if (name == "lstm") return Cell::lstm;
    fail("recurrent cell must be 'rnn' or 'lstm', got '" + name + "'");
}

// The inputs' checks shared by the forward and backward passes: shapes, one dtype.
RecurrentGeometry checked_recurrent(const std::string& cell, const py::array& x,
                                    const py::array& h0, const py::array& Wx,
                                    const py::array& Wh, const Shape& b_shape) {
    const RecurrentGeometry g = recurrent_geometry(cell_named(cell), shape_of(x), shape_of(h0),
                                                   shape_of(Wx), shape_of(Wh), b_shape);
    require_same_dtype(x, "x", h0, "h0");
    require_same_dtype(x, "x", Wx, "Wx");
    require_same_dtype(x, "x", Wh, "Wh");
    keep_blas_single_threaded();
    return g;
}

// The recurrent forward's outputs (the states saved for the backward) from a pool of
// freed blocks: a training step frees them after its backward and the next forward asks
// for the same sizes again. Fresh memory costs a page fault per 4 KB page at first touch
// (the LSTM's gates alone, N*T x 4H floats, are 800 faults at N = 32, T = 50, H = 128,
// and 1664 faults a training step were most of them). Blocks are kept by exact size,
// at most kPooledBlocks of them (the oldest freed first), touched under the GIL only:
// taken while the arrays are made, given back by their capsule's destructor.
class BlockPool {
  public:
    void* take(size_t bytes) {
        for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it) {
            if (it->first == bytes) {
                void* p = it->second;
                blocks_.erase(std::next(it).base());
                return p;
            }
        }
        void* p = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign + kAlign);
        if (p == nullptr) throw std::bad_alloc();
        return p;
    }
    void give(void* p, size_t bytes) {
        if (blocks_.size() == kPooledBlocks) {
            std::free(blocks_.front().second);
            blocks_.erase(blocks_.begin());
        }
        blocks_.emplace_back(bytes, p);
    }

  private:
    static constexpr size_t kAlign = 64, kPooledBlocks = 8;
    std::vector<std::pair<size_t, void*>> blocks_;
};

BlockPool& recurrent_pool() {
    static BlockPool* pool = new BlockPool();  // never destroyed: capsules may outlive exit
    return *pool;
}

// A C-contiguous array of `shape` on a block from recurrent_pool().
template <typename T>
py::array_t<T> pooled_array(const Shape& shape) {
    int64_t n = 1;
    for (int64_t extent : shape) n = checked_mul(n, extent, "recurrent output");
    const size_t bytes = static_cast<size_t>(checked_mul(n, int64_t(sizeof(T)),
                                                         "recurrent output"));
    struct Block {
        void* p;
        size_t bytes;
    };
    Block* block = new Block{recurrent_pool().take(bytes), bytes};
    py::capsule owner(block, [](void* b) {
        Block* done = static_cast<Block*>(b);
        recurrent_pool().give(done->p, done->bytes);
        delete done;
    });
    return py::array_t<T>(shape, static_cast<T*>(block->p), owner);
}

py::tuple py_recurrent_forward(const std::string& cell, const py::array& x, const py::array& h0,
                               const py::array& Wx, const py::array& Wh, const py::array& b,
                               bool keep) {
    const RecurrentGeometry g = checked_recurrent(cell, x, h0, Wx, Wh, shape_of(b));
    require_same_dtype(x, "x", b, "b");
    return dispatch_float(x, "recurrent x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> xc(x), h0c(h0), wxc(Wx), whc(Wh), bc(b);
        const Shape states{g.N, g.T, g.H};
        py::array_t<T> h = pooled_array<T>(states);
        py::object act = py::none(), c = py::none(), tanh_c = py::none();
        T *actp = nullptr, *cp = nullptr, *tcp = nullptr;
        if (g.cell == Cell::lstm) {
            const Shape cell_states = keep ? states : Shape{g.N, g.H};
            auto cs = pooled_array<T>(cell_states), ts = pooled_array<T>(cell_states);
            cp = cs.mutable_data(), tcp = ts.mutable_data();
            c = cs, tanh_c = ts;
            if (keep) {  // without keep, the kernel's own scratch
                auto a = pooled_array<T>(Shape{g.N, g.T, g.G()});
                actp = a.mutable_data(), act = a;
            }
        }
        const T *xp = xc.data(), *h0p = h0c.data(), *wxp = wxc.data(), *whp = whc.data(),
                *bp = bc.data();
        T* hp = h.mutable_data();
        {
            py::gil_scoped_release nogil;
            recurrent_forward(g, keep, xp, h0p, wxp, whp, bp, hp, actp, cp, tcp);
        }
        if (!keep) return py::make_tuple(h, py::none(), py::none(), py::none());
        return py::make_tuple(h, act, c, tanh_c);
    });
}

py::tuple py_recurrent_backward(const std::string& cell, const py::array& dh,
                                const py::array& x, const py::array& h0, const py::array& Wx,
                                const py::array& Wh, const py::array& h, const py::object& act,
                                const py::object& c, const py::object& tanh_c) {
    const Shape wh = shape_of(Wh);
    const RecurrentGeometry g =
        checked_recurrent(cell, x, h0, Wx, Wh, Shape{wh.size() == 2 ? wh[1] : 0});
    const Shape states{g.N, g.T, g.H};
    require_shape(dh, states, "recurrent dh");
    require_shape(h, states, "recurrent h");
    require_same_dtype(x, "x", dh, "dh");
    require_same_dtype(x, "x", h, "h");
    // The LSTM's saved gates and cell states, checked like the rest; the RNN has none.
    std::vector<py::array> saved;
    if (g.cell == Cell::lstm) {
        const std::pair<const py::object*, Shape> expected[] = {
            {&act, Shape{g.N, g.T, g.G()}}, {&c, states}, {&tanh_c, states}};
        for (const auto& [obj, shape] : expected) {
            if (obj->is_none()) {
                fail("lstm backward needs the forward's gates and cell states (act, c, tanh_c)");
            }
            saved.push_back(obj->cast<py::array>());
            require_shape(saved.back(), shape, "lstm saved state");
            require_same_dtype(x, "x", saved.back(), "lstm saved state");
        }
    }
    return dispatch_float(x, "recurrent x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> dhc(dh), xc(x), h0c(h0), wxc(Wx), whc(Wh), hc(h);
        std::vector<Contig<T>> saved_c(saved.begin(), saved.end());
        const T* sp[3] = {nullptr, nullptr, nullptr};
        for (size_t i = 0; i < saved_c.size(); ++i) sp[i] = saved_c[i].data();
        py::array_t<T> dx(shape_of(x)), dh0(shape_of(h0)), dWx(shape_of(Wx)), dWh(wh),
            db(Shape{g.G()});
        const T *dhp = dhc.data(), *xp = xc.data(), *h0p = h0c.data(), *wxp = wxc.data(),
                *whp = whc.data(), *hp = hc.data();
        T *dxp = dx.mutable_data(), *dh0p = dh0.mutable_data(), *dwxp = dWx.mutable_data(),
          *dwhp = dWh.mutable_data(), *dbp = db.mutable_data();
        {
            py::gil_scoped_release nogil;
            recurrent_backward(g, dhp, xp, h0p, wxp, whp, hp, sp[0], sp[1], sp[2], dxp, dh0p,
                               dwxp, dwhp, dbp);
        }
        return py::make_tuple(dx, dh0, dWx, dWh, db);
    });
}


// ---- normalization (cpp/norm.h): batchnorm, spatial batchnorm, layernorm, groupnorm ----

// A (K,) parameter or statistic of x's dtype, as a contiguous array.
template <typename T>
Contig<T> per_slice(const py::array& a, const py::array& x, int64_t K, const char* name) {
    require_same_dtype(x, "x", a, name);
    require_shape(a, Shape{K}, name);
    return Contig<T>(a);
}

// x (N, C, ...) as (outer N, K C, inner the product of the rest): one slice per channel.
NormShape channel_shape(const py::array& x, const char* what) {
    const Shape s = shape_of(x);
    if (s.size() < 2) fail(std::string(what) + " x must be (N, C, ...), got shape " + shape_str(s));
    int64_t inner = 1;
    for (size_t i = 2; i < s.size(); ++i) inner *= s[i];  // a numpy array's size fits
    return NormShape{s[0], s[1], inner};
}

Pointwise pointwise_op(const std::string& op);  // below, with the pointwise kernels

// The activation a norm applies to its output (PointwiseAct): none for "", else one of the
// ops `takes` allows, which `names` lists.
template <typename T>
PointwiseAct<T> norm_act(const std::string& activation, double alpha, const char* norm,
                         bool (*takes)(Pointwise), const char* names) {
    if (activation.empty()) return {false, Pointwise::gelu, T(0)};
    const Pointwise op = pointwise_op(activation);
    if (!takes(op)) {
        fail(std::string(norm) + ": activation '" + activation + "' is not one it can apply (" +
             names + ")");
    }
    return {true, op, static_cast<T>(alpha)};
}

// A batchnorm's: a leaky relu, in its loops (a relu is relu=true).
template <typename T>
PointwiseAct<T> batchnorm_act(const std::string& activation, double alpha) {
    const auto leaky = [](Pointwise op) { return op == Pointwise::leaky_relu; };
    return norm_act<T>(activation, alpha, "batchnorm", leaky, "leaky_relu");
}

// A groupnorm's: an op whose backward reads its input.
template <typename T>
PointwiseAct<T> groupnorm_act(const std::string& activation, double alpha) {
    return norm_act<T>(activation, alpha, "groupnorm", pointwise_saves_input,
                       "gelu, gelu_tanh, leaky_relu, relu, softplus");
}

// What channel_norm_forward returns: out (None where not kept), the statistics, and with
// a pool its pooled values and winners (else None).
struct ChannelNormOut {
    py::object out;
    py::array mean, var, inv_std;
    py::object pooled, winners;
};

// With skip (an array of x's shape and dtype, relu only): out = relu(norm + skip), or
// relu(skip + norm) with skip_first. With activation (no relu): its leaky relu. With pool
// (after a relu or the activation): a max pool of out, each plane pooled as it is written.
ChannelNormOut channel_norm(const py::array& x, const py::array& gamma, const py::array& beta,
                            double eps, const py::object& mean, const py::object& var, bool relu,
                            const py::object& skip, bool skip_first, const py::object& pool,
                            bool keep, const std::string& activation, double alpha) {
    require_norm_eps(eps, "batchnorm");
    const NormShape s = channel_shape(x, "batchnorm");
    const bool train = mean.is_none() || var.is_none();
    if (!skip.is_none() && !relu) fail("batchnorm: a skip is added before a relu only");
    std::optional<PoolGeometry> g;
    if (!pool.is_none()) {
        if (!relu && activation.empty()) {
            fail("batchnorm: a max pool follows a relu or an activation only");
        }
        g = pool_of(shape_of(x), pool, "batchnorm", "batchnorm's max_pool");
    }
    if (!g && !keep) fail("batchnorm: only a pooled forward may leave its output unwritten");
    if (relu && !activation.empty()) fail("batchnorm: a relu or an activation, not both");
    return dispatch_float(x, "batchnorm x", [&](auto zero) -> ChannelNormOut {
        using T = decltype(zero);
        const PointwiseAct<T> act = batchnorm_act<T>(activation, alpha);
        Contig<T> xc(x), gc = per_slice<T>(gamma, x, s.K, "gamma"),
                         bc = per_slice<T>(beta, x, s.K, "beta");
        std::optional<Contig<T>> skipc;
        if (!skip.is_none()) {
            const py::array other = skip.cast<py::array>();
            require_same_dtype(x, "x", other, "skip");
            require_shape(other, shape_of(x), "batchnorm skip");
            skipc = Contig<T>(other);
        }
        std::optional<py::array_t<T>> out, pooled;
        std::optional<py::array_t<int32_t>> winners;
        if (keep) out.emplace(shape_of(x));
        // Each thread's block of planes of the relu's output where it is not kept; 1x1
        // planes take the column loops and are pooled after them: all of them.
        std::vector<T> scratch;
        std::optional<NormPool<T>> pooling;
        if (g) {
            pooled.emplace(g->out_shape()), winners.emplace(g->out_shape());
            if (!keep) {
                scratch.resize(static_cast<size_t>(
                    s.inner == 1 ? s.outer * s.K
                                 : num_threads() * std::min(norm_pool_block(s.inner), s.outer * s.K) *
                                       s.inner));
            }
            pooling = NormPool<T>{g->H, g->W, g->pool_height, g->pool_width, g->stride, g->Ho,
                                  g->Wo, pooled->mutable_data(), winners->mutable_data(),
                                  scratch.data()};
        }
        const NormTail<T> tail{relu, skipc ? skipc->data() : nullptr, skip_first,
                               pooling ? &*pooling : nullptr, act};
        py::array_t<T> m(s.K), v(s.K), inv(s.K);
        if (!train) {  // copies of the running averages: the kernel reads them there
            m = py::array_t<T>(s.K, per_slice<T>(mean.cast<py::array>(), x, s.K,
                                                  "running_mean").data());
            v = py::array_t<T>(s.K, per_slice<T>(var.cast<py::array>(), x, s.K,
                                                  "running_var").data());
        }
        const T *xp = xc.data(), *gp = gc.data(), *bp = bc.data();
        T *mp = m.mutable_data(), *vp = v.mutable_data(), *ip = inv.mutable_data(),
          *op = out ? out->mutable_data() : nullptr;
        {
            py::gil_scoped_release nogil;
            channel_norm_forward(s, train, tail, eps, xp, gp, bp, mp, vp, ip, op);
        }
        const py::object kept = out ? py::object(*out) : py::none();
        if (g) return ChannelNormOut{kept, m, v, inv, *pooled, *winners};
        return ChannelNormOut{kept, m, v, inv, py::none(), py::none()};
    });
}

py::tuple py_channel_norm_forward(const py::array& x, const py::array& gamma,
                                  const py::array& beta, double eps, const py::object& mean,
                                  const py::object& var, bool relu, const py::object& skip,
                                  bool skip_first, const py::object& pool, bool keep,
                                  const std::string& activation, double alpha) {
    const ChannelNormOut r = channel_norm(x, gamma, beta, eps, mean, var, relu, skip, skip_first,
                                          pool, keep, activation, alpha);
    if (r.pooled.is_none()) return py::make_tuple(r.out, r.mean, r.var, r.inv_std);
    return py::make_tuple(r.out, r.mean, r.var, r.inv_std, r.pooled, r.winners);
}

// A batchnorm's running average as its state holds it: zeros of x's dtype before the first
// step, else a (C,) array of any dtype (the numpy reference's may differ from x's).
template <typename T>
py::array running_or_zeros(const py::object& running, int64_t C, const char* name) {
    if (running.is_none()) {
        py::array_t<T> zeros(C);
        std::fill_n(zeros.mutable_data(), C, T(0));
        return std::move(zeros);
    }
    const py::array array = py::array::ensure(running);
    if (!array) {
        fail(std::string("batchnorm: ") + name + " must be an array, got a " + type_name(running));
    }
    require_shape(array, Shape{C}, (std::string("batchnorm: ") + name).c_str());
    return array;
}

// momentum * running + (1 - momentum) * batch: a new array, numpy's bits (running_average)
// for a Python float momentum and running of the batch's dtype, else numpy's own expression,
// which promotes (a float32 momentum, running averages in float64).
template <typename T>
py::object updated_average(const py::array& running, const py::array& batch,
                           const py::object& momentum) {
    if (!PyFloat_CheckExact(momentum.ptr()) || !same_dtype(running.dtype(), batch.dtype())) {
        return momentum * running + (py::int_(1) - momentum) * batch;
    }
    Contig<T> r(running), b(batch);
    py::array_t<T> out(b.size());
    running_average(static_cast<int64_t>(b.size()), PyFloat_AS_DOUBLE(momentum.ptr()), r.data(),
                    b.data(), out.mutable_data());
    return std::move(out);
}

// The batchnorm gate's forward (graphnet/kernels/norm.py) in one call: channel_norm with the
// running averages, which eval mode normalizes with (in x's dtype) and train mode updates
// -> (out, mean, inv_std, running_mean, running_var[, pooled, winners]).
py::tuple py_batchnorm_forward(const py::array& x, const py::array& gamma, const py::array& beta,
                               double eps, const py::object& momentum,
                               const py::object& running_mean, const py::object& running_var,
                               bool train, bool relu,
                               const py::object& skip, bool skip_first, const py::object& pool,
                               bool keep, const std::string& activation, double alpha) {
    const NormShape s = channel_shape(x, "batchnorm");
    return dispatch_float(x, "batchnorm x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        py::object mean = running_or_zeros<T>(running_mean, s.K, "running_mean");
        py::object var = running_or_zeros<T>(running_var, s.K, "running_var");
        if (train && x.size() == 0) {
            fail("batchnorm: train mode needs a non-empty batch, got x of shape " +
                 shape_str(shape_of(x)));
        }
        const auto in_x_dtype = [&](const py::object& a) {
            return same_dtype(a.cast<py::array>().dtype(), x.dtype()) ? a : a.attr("astype")(x.dtype());
        };
        const ChannelNormOut r =
            channel_norm(x, gamma, beta, eps, train ? py::none() : in_x_dtype(mean),
                         train ? py::none() : in_x_dtype(var), relu, skip, skip_first, pool, keep,
                         activation, alpha);
        if (train) {
            mean = updated_average<T>(mean.cast<py::array>(), r.mean, momentum);
            var = updated_average<T>(var.cast<py::array>(), r.var, momentum);
        }
        if (r.pooled.is_none()) return py::make_tuple(r.out, r.mean, r.inv_std, mean, var);
        return py::make_tuple(r.out, r.mean, r.inv_std, mean, var, r.pooled, r.winners);
    });
}

// With a relu (beta given): dout is the gradient of the relu's output. With relu_out (the
// output of a forward with a skip added before its relu): likewise, and the masked dout
// comes back fourth. With activation (the forward's, and beta): dout is the gradient of its
// output, taken at the normalized entries.
py::tuple py_channel_norm_backward(const py::array& dout, const py::array& x,
                                   const py::array& gamma, const py::array& mean,
                                   const py::array& inv_std, bool train,
                                   const py::object& beta, const py::object& relu_out,
                                   const std::string& activation, double alpha) {
    const NormShape s = channel_shape(x, "batchnorm");
    require_shape(dout, shape_of(x), "batchnorm dout");
    require_same_dtype(x, "x", dout, "dout");
    const bool from_output = !relu_out.is_none();
    if (!activation.empty() && from_output) fail("batchnorm: a relu or an activation, not both");
    return dispatch_float(x, "batchnorm x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        const PointwiseAct<T> act = batchnorm_act<T>(activation, alpha);
        if (act.active && beta.is_none()) {
            fail("batchnorm: a backward through activation '" + activation + "' needs beta");
        }
        Contig<T> dc(dout), xc(x), gc = per_slice<T>(gamma, x, s.K, "gamma"),
                               mc = per_slice<T>(mean, x, s.K, "mean"),
                               ic = per_slice<T>(inv_std, x, s.K, "inv_std");
        const bool relu = (!beta.is_none() && !act.active) || from_output;
        Contig<T> bc = beta.is_none() ? gc : per_slice<T>(beta.cast<py::array>(), x, s.K, "beta");
        std::optional<Contig<T>> outc;
        std::optional<py::array_t<T>> masked;
        if (from_output) {
            const py::array out = relu_out.cast<py::array>();
            require_same_dtype(x, "x", out, "relu_out");
            require_shape(out, shape_of(x), "batchnorm relu_out");
            outc = Contig<T>(out);
            masked = py::array_t<T>(shape_of(x));
        }
        py::array_t<T> dx(shape_of(x)), dgamma(s.K), dbeta(s.K);
        const T *dp = dc.data(), *xp = xc.data(), *gp = gc.data(), *mp = mc.data(),
                *ip = ic.data(), *bp = bc.data(), *op = outc ? outc->data() : nullptr;
        T *dxp = dx.mutable_data(), *dgp = dgamma.mutable_data(), *dbp = dbeta.mutable_data(),
          *wp = masked ? masked->mutable_data() : nullptr;
        {
            py::gil_scoped_release nogil;
            channel_norm_backward(s, train, relu, act, dp, xp, mp, ip, gp, bp, op, wp, dxp, dgp,
                                  dbp);
        }
        if (masked) return py::make_tuple(dx, dgamma, dbeta, *masked);
        return py::make_tuple(dx, dgamma, dbeta);
    });
}

// conv -> [eval-mode spatial batchnorm] -> [relu] -> [max pool] in one call, for the small
// eval batches whose walks would otherwise run them gate by gate (passes/conv_chain.py):
// every gate's value and what its cache keeps, bit for bit as their own calls make them
// (the same kernels, one after the other), without a Python gate and a binding call each.
// norm: (gamma, beta, running_mean, running_var) of x's dtype, or None; add: an array of
// the conv's output shape and x's dtype added next (a residual block's skip), add_first
// whether it is the add gate's first operand, or None; pool: (height, width, stride), or
// None. Returns (conv_out[, norm_out, mean, inv_std][, sum][, relu_out, keep][, pooled,
// winners]).
py::tuple py_conv_chain_forward(const py::array& x, const py::array& w, const py::array& b,
                                int64_t stride, int64_t pad, const py::object& norm, double eps,
                                const py::object& add, bool add_first, bool relu,
                                const py::object& pool) {
    const ConvGeometry g = checked_conv_forward(x, w, b, stride, pad);
    const bool normed = !norm.is_none();
    if (normed) require_norm_eps(eps, "conv chain norm");
    std::optional<PoolGeometry> p;
    if (!pool.is_none()) p = pool_of(g.out_shape(), pool, "conv chain", "max_pool");
    std::vector<py::array> params;
    if (normed) {
        const std::string what = "conv chain norm (gamma, beta, running_mean, running_var)";
        for (const auto& item : items_of(norm, 4, what)) params.push_back(array_item(item, what));
    }
    const int64_t n = checked_mul(g.N, checked_mul(g.F, g.positions(), "conv output"),
                                  "conv output");
    return dispatch_float(x, "conv x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> xc(x), wc(w), bc(b);
        py::array_t<T> conv_out(g.out_shape());
        py::list results;
        results.append(conv_out);
        const T* last = conv_out.data();
        // The norm's arrays: its parameters, copies of the running averages (as
        // channel_norm_forward's binding makes them), inv_std and its output.
        std::optional<Contig<T>> gamma, beta;
        std::optional<py::array_t<T>> mean, var, inv_std, norm_out;
        if (normed) {
            gamma = per_slice<T>(params[0], x, g.F, "gamma");
            beta = per_slice<T>(params[1], x, g.F, "beta");
            mean = py::array_t<T>(g.F, per_slice<T>(params[2], x, g.F, "running_mean").data());
            var = py::array_t<T>(g.F, per_slice<T>(params[3], x, g.F, "running_var").data());
            inv_std = py::array_t<T>(g.F);
            norm_out = py::array_t<T>(g.out_shape());
            results.append(*norm_out), results.append(*mean), results.append(*inv_std);
            last = norm_out->data();
        }
        std::optional<Contig<T>> addend;
        std::optional<py::array_t<T>> sum;
        if (!add.is_none()) {
            const py::array other = add.cast<py::array>();
            require_same_dtype(x, "x", other, "add");
            require_shape(other, g.out_shape(), "add");
            addend = Contig<T>(other);
            sum = py::array_t<T>(g.out_shape());
            results.append(*sum);
        }
        std::optional<py::array_t<T>> relu_out;
        std::optional<py::array_t<bool>> keep;
        if (relu) {
            relu_out = py::array_t<T>(g.out_shape());
            keep = py::array_t<bool>(g.out_shape());
            results.append(*relu_out), results.append(*keep);
        }
        std::optional<py::array_t<T>> pooled;
        std::optional<py::array_t<int32_t>> winners;
        if (p) {
            pooled = py::array_t<T>(p->out_shape());
            winners = py::array_t<int32_t>(p->out_shape());
            results.append(*pooled), results.append(*winners);
        }
        {
            py::gil_scoped_release nogil;
            conv_forward(g, xc.data(), wc.data(), bc.data(), conv_out.mutable_data());
            if (normed) {
                channel_norm_forward(NormShape{g.N, g.F, g.positions()}, false, NormTail<T>{}, eps,
                                     conv_out.data(), gamma->data(), beta->data(),
                                     mean->mutable_data(), var->mutable_data(),
                                     inv_std->mutable_data(), norm_out->mutable_data());
            }
            if (sum) {  // in the add gate's order of operands (a NaN's payload)
                const T* other = addend->data();
                T* out = sum->mutable_data();
                if (add_first) {
                    for (int64_t i = 0; i < n; ++i) out[i] = other[i] + last[i];
                } else {
                    for (int64_t i = 0; i < n; ++i) out[i] = last[i] + other[i];
                }
                last = out;
            }
            if (relu) {
                relu_forward(n, last, relu_out->mutable_data(), keep->mutable_data());
                last = relu_out->data();
            }
            if (p) max_pool_forward(*p, last, pooled->mutable_data(), winners->mutable_data(), false);
        }
        return py::tuple(results);
    });
}

// An affine layer -> [batchnorm (eval mode) or layernorm] -> [relu] as one call
// (passes/affine_chain.py), every gate's value and cache computed by the kernels the gates
// call, in their order: x (N, D) rows, w (D, M), b (M,); norm: None, (gamma, beta,
// running_mean, running_var) of a batchnorm, or with layer, (gamma, beta) of a layernorm,
// each (M,). Returns (affine_out[, norm_out, mean, inv_std][, relu_out, keep]): the
// batchnorm's mean a copy of the running mean, as channel_norm_forward's binding makes it;
// the layernorm's mean and inv_std per row.
py::tuple py_affine_chain_forward(const py::array& x, const py::array& w, const py::array& b,
                                  const py::object& norm, double eps, bool layer, bool relu) {
    if (!norm.is_none()) {
        require_norm_eps(eps, layer ? "affine chain layernorm" : "affine chain batchnorm");
    }
    const Shape xs = shape_of(x), ws = shape_of(w);
    require_rank(xs, 2, "affine chain x", "(N, D)");
    require_rank(ws, 2, "affine chain w", "(D, M)");
    require_same_dtype(x, "x", w, "w");
    const int64_t N = xs[0], D = xs[1], M = ws[1];
    if (ws[0] != D) fail("affine chain: x " + shape_str(xs) + " but w " + shape_str(ws));
    require_same_dtype(x, "x", b, "b");
    require_shape(b, Shape{M}, "affine chain b");
    require_blas_size(std::max({checked_mul(N, D, "affine chain x"), checked_mul(D, M, "affine chain w"),
                                checked_mul(N, M, "affine chain output")}),
                      [&] {
                          return "an operand of the affine chain (x " + shape_str(xs) + ", w " +
                                 shape_str(ws) + ")";
                      });
    const Shape out_shape{N, M};
    const bool normed = !norm.is_none();
    std::vector<py::array> params;
    if (normed) {
        const std::string what = layer ? "affine chain norm (gamma, beta)"
                                       : "affine chain norm (gamma, beta, running_mean, running_var)";
        for (const auto& item : items_of(norm, layer ? 2 : 4, what)) {
            params.push_back(array_item(item, what));
        }
        if (layer && M == 0) fail("affine chain: a layernorm needs at least one feature");
    }
    keep_blas_single_threaded();
    return dispatch_float(x, "affine chain x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> xc(x), wc(w), bc(b);
        py::array_t<T> affine_out(out_shape);
        py::list results;
        results.append(affine_out);
        const T* last = affine_out.data();
        std::optional<Contig<T>> gamma, beta;
        std::optional<py::array_t<T>> mean, var, inv_std, norm_out;
        if (normed) {
            gamma = per_slice<T>(params[0], x, M, "gamma");
            beta = per_slice<T>(params[1], x, M, "beta");
            if (layer) {
                mean = py::array_t<T>(N);
                inv_std = py::array_t<T>(N);
            } else {
                mean = py::array_t<T>(M, per_slice<T>(params[2], x, M, "running_mean").data());
                var = py::array_t<T>(M, per_slice<T>(params[3], x, M, "running_var").data());
                inv_std = py::array_t<T>(M);
            }
            norm_out = py::array_t<T>(out_shape);
            results.append(*norm_out), results.append(*mean), results.append(*inv_std);
            last = norm_out->data();
        }
        std::optional<py::array_t<T>> relu_out;
        std::optional<py::array_t<bool>> keep;
        if (relu) {
            relu_out = py::array_t<T>(out_shape);
            keep = py::array_t<bool>(out_shape);
            results.append(*relu_out), results.append(*keep);
        }
        {
            py::gil_scoped_release nogil;
            matmul_plus_bias(false, false, N, M, D, xc.data(), wc.data(), bc.data(),
                             affine_out.mutable_data());
            if (normed && layer) {
                layer_norm_forward(N, M, false, eps, affine_out.data(), gamma->data(),
                                   beta->data(), mean->mutable_data(), inv_std->mutable_data(),
                                   norm_out->mutable_data());
            } else if (normed) {
                channel_norm_forward(NormShape{N, M, 1}, false, NormTail<T>{}, eps,
                                     affine_out.data(), gamma->data(), beta->data(),
                                     mean->mutable_data(), var->mutable_data(),
                                     inv_std->mutable_data(), norm_out->mutable_data());
            }
            if (relu) relu_forward(N * M, last, relu_out->mutable_data(), keep->mutable_data());
        }
        return py::tuple(results);
    });
}

// A layernorm's x (N, ..., D): the samples (all its leading axes, each vector of D features
// normalized alone: (N, T, D) normalizes N * T of them) and D, at least one feature.
std::pair<int64_t, int64_t> layer_norm_rows(const Shape& xs) {
    if (xs.size() < 2) fail("layernorm x must be (N, D) or (N, ..., D), got shape " + shape_str(xs));
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < xs.size(); ++i) rows = checked_mul(rows, xs[i], "layernorm rows");
    if (xs.back() == 0) {
        fail("layernorm: x has shape " + shape_str(xs) + "; a sample needs at least one feature");
    }
    return {rows, xs.back()};
}

py::tuple py_layer_norm_forward(const py::array& x, const py::array& gamma,
                                const py::array& beta, double eps, bool relu) {
    require_norm_eps(eps, "layernorm");
    const Shape xs = shape_of(x);
    const auto [N, D] = layer_norm_rows(xs);
    return dispatch_float(x, "layernorm x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> xc(x), gc = per_slice<T>(gamma, x, D, "gamma"),
                         bc = per_slice<T>(beta, x, D, "beta");
        py::array_t<T> m(N), inv(N), out(xs);
        const T *xp = xc.data(), *gp = gc.data(), *bp = bc.data();
        T *mp = m.mutable_data(), *ip = inv.mutable_data(), *op = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            layer_norm_forward(N, D, relu, eps, xp, gp, bp, mp, ip, op);
        }
        return py::make_tuple(out, m, inv);
    });
}

py::tuple py_layer_norm_backward(const py::array& dout, const py::array& x,
                                 const py::array& gamma, const py::array& mean,
                                 const py::array& inv_std, const py::object& beta) {
    const Shape xs = shape_of(x);
    const auto [N, D] = layer_norm_rows(xs);
    require_shape(dout, xs, "layernorm dout");
    require_same_dtype(x, "x", dout, "dout");
    return dispatch_float(x, "layernorm x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> dc(dout), xc(x), gc = per_slice<T>(gamma, x, D, "gamma"),
                               mc = per_slice<T>(mean, x, N, "mean"),
                               ic = per_slice<T>(inv_std, x, N, "inv_std");
        const bool relu = !beta.is_none();
        Contig<T> bc = relu ? per_slice<T>(beta.cast<py::array>(), x, D, "beta") : gc;
        py::array_t<T> dx(xs), dgamma(D), dbeta(D);
        const T *dp = dc.data(), *xp = xc.data(), *gp = gc.data(), *mp = mc.data(),
                *ip = ic.data(), *bp = bc.data();
        T *dxp = dx.mutable_data(), *dgp = dgamma.mutable_data(), *dbp = dbeta.mutable_data();
        {
            py::gil_scoped_release nogil;
            layer_norm_backward(N, D, relu, dp, xp, mp, ip, gp, bp, dxp, dgp, dbp);
        }
        return py::make_tuple(dx, dgamma, dbeta);
    });
}

// x (N, C, H, W) in G groups of channels; gamma and beta (C,).
Shape checked_groups(const py::array& x, int64_t G) {
    const Shape xs = shape_of(x);
    require_rank(xs, 4, "groupnorm x", "(N, C, H, W)");
    if (G < 1 || xs[1] % G != 0) {
        fail("groupnorm: G = " + std::to_string(G) + " groups must divide the " +
             std::to_string(xs[1]) + " channels of x " + shape_str(xs));
    }
    checked_mul(xs[0], G, "groupnorm: the number of (sample, group) pairs");  // C = 0: any G
    return xs;
}


// The pool after a groupnorm's activation: None, or (pool_height, pool_width, stride), its
// windows checked against x's planes; `op` names it.
std::optional<PoolGeometry> group_pool(const Shape& xs, const py::object& pool,
                                       const char* op = "groupnorm's avg_pool") {
    if (pool.is_none()) return std::nullopt;
    return pool_of(xs, pool, "groupnorm", op);
}

// max_pool: the pool is a max pool's, and its winners come back fourth.
py::tuple py_group_norm_forward(const py::array& x, const py::array& gamma,
                                const py::array& beta, int64_t G, double eps,
                                const std::string& activation, double alpha,
                                const py::object& pool, bool max_pool) {
    require_norm_eps(eps, "groupnorm");
    const Shape xs = checked_groups(x, G);
    if (max_pool && pool.is_none()) fail("groupnorm: max_pool needs the pool's windows");
    const std::optional<PoolGeometry> pooled =
        group_pool(xs, pool, max_pool ? "groupnorm's max_pool" : "groupnorm's avg_pool");
    const AvgPoolPlane plane = pooled ? avg_pool_plane(*pooled) : AvgPoolPlane{};
    return dispatch_float(x, "groupnorm x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        const PointwiseAct<T> act = groupnorm_act<T>(activation, alpha);
        Contig<T> xc(x), gc = per_slice<T>(gamma, x, xs[1], "gamma"),
                         bc = per_slice<T>(beta, x, xs[1], "beta");
        py::array_t<T> m(xs[0] * G), inv(xs[0] * G), out(pooled ? pooled->out_shape() : xs);
        const T *xp = xc.data(), *gp = gc.data(), *bp = bc.data();
        T *mp = m.mutable_data(), *ip = inv.mutable_data(), *op = out.mutable_data();
        std::optional<py::array_t<int32_t>> winners;
        if (max_pool) winners.emplace(pooled->out_shape());
        int32_t* wp = winners ? winners->mutable_data() : nullptr;
        {
            py::gil_scoped_release nogil;
            group_norm_forward(xs[0], xs[1], xs[2] * xs[3], G, eps, act, pooled ? &plane : nullptr,
                               wp, xp, gp, bp, mp, ip, op);
        }
        if (winners) return py::make_tuple(out, m, inv, *winners);
        return py::make_tuple(out, m, inv);
    });
}

// winners (a max pool's, of the forward with max_pool): the pool is that max pool.
py::tuple py_group_norm_backward(const py::array& dout, const py::array& x,
                                 const py::array& gamma, int64_t G, const py::array& mean,
                                 const py::array& inv_std, const py::object& beta,
                                 const std::string& activation, double alpha,
                                 const py::object& pool, const py::object& winners) {
    const Shape xs = checked_groups(x, G);
    if (!winners.is_none() && pool.is_none()) fail("groupnorm: winners need the pool's windows");
    const std::optional<PoolGeometry> pooled =
        group_pool(xs, pool, winners.is_none() ? "groupnorm's avg_pool" : "groupnorm's max_pool");
    const AvgPoolPlane plane = pooled ? avg_pool_plane(*pooled) : AvgPoolPlane{};
    require_shape(dout, pooled ? pooled->out_shape() : xs, "groupnorm dout");
    require_same_dtype(x, "x", dout, "dout");
    std::optional<Contig<int32_t>> wc;
    if (!winners.is_none()) {
        const py::array w = winners.cast<py::array>();
        if (!same_dtype(w.dtype(), py::dtype::of<int32_t>())) {
            fail("groupnorm winners must be int32 (from its forward), got " + dtype_name(w));
        }
        require_shape(w, pooled->out_shape(), "groupnorm winners");
        wc.emplace(w);
        check_winners(wc->data(), static_cast<int64_t>(wc->size()), xs[2], xs[3]);
    }
    const int32_t* wp = wc ? wc->data() : nullptr;
    return dispatch_float(x, "groupnorm x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        const PointwiseAct<T> act = groupnorm_act<T>(activation, alpha);
        if (act.active && beta.is_none()) {
            fail("groupnorm: a backward through an activation needs beta");
        }
        const int64_t groups = xs[0] * G;
        Contig<T> dc(dout), xc(x), gc = per_slice<T>(gamma, x, xs[1], "gamma"),
                               mc = per_slice<T>(mean, x, groups, "mean"),
                               ic = per_slice<T>(inv_std, x, groups, "inv_std");
        Contig<T> bc = act.active ? per_slice<T>(beta.cast<py::array>(), x, xs[1], "beta") : gc;
        py::array_t<T> dx(xs), dgamma(xs[1]), dbeta(xs[1]);
        const T *dp = dc.data(), *xp = xc.data(), *gp = gc.data(), *mp = mc.data(),
                *ip = ic.data(), *bp = bc.data();
        T *dxp = dx.mutable_data(), *dgp = dgamma.mutable_data(), *dbp = dbeta.mutable_data();
        {
            py::gil_scoped_release nogil;
            group_norm_backward(xs[0], xs[1], xs[2] * xs[3], G, act, pooled ? &plane : nullptr, wp,
                                dp, xp, mp, ip, gp, bp, dxp, dgp, dbp);
        }
        return py::make_tuple(dx, dgamma, dbeta);
    });
}

// ---- end of normalization ----

// ---- pointwise ----

Pointwise pointwise_op(const std::string& op) {
    static const std::pair<const char*, Pointwise> ops[] = {
        {"gelu", Pointwise::gelu},         {"gelu_tanh", Pointwise::gelu_tanh},
        {"leaky_relu", Pointwise::leaky_relu}, {"relu", Pointwise::relu},
        {"softplus", Pointwise::softplus}, {"sigmoid", Pointwise::sigmoid},
        {"tanh", Pointwise::tanh}};
    for (const auto& [name, value] : ops) {
        if (op == name) return value;
    }
    fail("unknown pointwise op '" + op +
         "' (gelu, gelu_tanh, leaky_relu, relu, softplus, sigmoid, tanh)");
}

py::array py_pointwise_forward(const std::string& op, const py::array& x, double alpha) {
    const Pointwise which = pointwise_op(op);
    if (which == Pointwise::tanh) fail("pointwise_forward has no tanh (numpy's is as fast)");
    return dispatch_float(x, "pointwise x", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> xc(x);
        py::array_t<T> out(shape_of(x));
        const T* xp = xc.data();
        T* op_ = out.mutable_data();
        const int64_t n = xc.size();
        py::gil_scoped_release nogil;
        pointwise_forward(which, n, xp, static_cast<T>(alpha), op_);
        return out;
    });
}

py::tuple py_pointwise_forward_slope(const std::string& op, const py::array& x) {
    const Pointwise which = pointwise_op(op);
    if (!pointwise_has_slope(which)) {
        fail("pointwise_forward_slope takes gelu or gelu_tanh, not '" + op + "'");
    }
    return dispatch_float(x, "pointwise x", [&](auto zero) -> py::tuple {
        using T = decltype(zero);
        Contig<T> xc(x);
        py::array_t<T> out(shape_of(x)), slope(shape_of(x));
        const T* xp = xc.data();
        T *op_ = out.mutable_data(), *sp = slope.mutable_data();
        const int64_t n = xc.size();
        {
            py::gil_scoped_release nogil;
            pointwise_forward_slope(which, n, xp, op_, sp);
        }
        return py::make_tuple(out, slope);
    });
}

py::array py_pointwise_backward(const std::string& op, const py::array& dout,
                                const py::array& saved, double alpha) {
    const Pointwise which = pointwise_op(op);
    require_shape(dout, shape_of(saved), "pointwise dout");
    require_same_dtype(saved, "saved", dout, "dout");
    return dispatch_float(dout, "pointwise dout", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> dc(dout), sc(saved);
        py::array_t<T> dx(shape_of(dout));
        const T *dp = dc.data(), *sp = sc.data();
        T* dxp = dx.mutable_data();
        const int64_t n = dc.size();
        py::gil_scoped_release nogil;
        pointwise_backward(which, n, dp, sp, static_cast<T>(alpha), dxp);
        return dx;
    });
}

py::array py_erf(const py::array& x) {
    return dispatch_float(x, "erf x", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> xc(x);
        py::array_t<T> out(shape_of(x));
        const T* xp = xc.data();
        T* op = out.mutable_data();
        const int64_t n = xc.size();
        py::gil_scoped_release nogil;
        erf_forward(n, xp, op);
        return out;
    });
}

// (rows, cols) of an array seen as rows along its last axis.
std::pair<int64_t, int64_t> rows_of(const py::array& a, const char* what) {
    if (a.ndim() < 1) fail(std::string(what) + " must have at least one axis, got a scalar");
    const int64_t cols = a.shape(a.ndim() - 1);
    int64_t rows = 1;
    for (py::ssize_t i = 0; i + 1 < a.ndim(); ++i) rows *= a.shape(i);
    return {rows, cols};
}

py::array py_softmax_forward(const py::array& x, bool log) {
    const auto [rows, cols] = rows_of(x, "softmax x");
    return dispatch_float(x, "softmax x", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> xc(x);
        py::array_t<T> out(shape_of(x));
        const T* xp = xc.data();
        T* op = out.mutable_data();
        py::gil_scoped_release nogil;
        softmax_rows_forward(rows, cols, xp, op, log);
        return out;
    });
}

py::array py_softmax_backward(const py::array& dout, const py::array& out, bool log) {
    require_shape(dout, shape_of(out), "softmax dout");
    require_same_dtype(out, "out", dout, "dout");
    const auto [rows, cols] = rows_of(out, "softmax out");
    return dispatch_float(dout, "softmax dout", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> dc(dout), oc(out);
        py::array_t<T> dx(shape_of(dout));
        const T *dp = dc.data(), *op = oc.data();
        T* dxp = dx.mutable_data();
        py::gil_scoped_release nogil;
        softmax_rows_backward(rows, cols, dp, op, dxp, log);
        return dx;
    });
}

// One operand of the attention kernels (attention.h): a numpy view (batch..., rows, cols)
// with its last axis contiguous, as its first element, each pair's offset from there and
// the rows' stride, all in elements. Views are read in place: no copy.
struct PairLayout {
    std::vector<int64_t> offset;
    int64_t row_stride = 0, col_stride = 0;
};

PairLayout pair_layout(const py::array& a, const Shape& want, const char* name,
                       bool unit_columns = true) {
    require_shape(a, want, name);
    if (!aligned(a)) fail(std::string(name) + " is not aligned to its items (an odd byte offset)");
    const int64_t rank = a.ndim(), item = a.itemsize();
    std::vector<int64_t> stride(rank);
    for (int64_t i = 0; i < rank; ++i) {
        if (a.strides(i) % item) fail(std::string(name) + " has strides that are not whole items");
        stride[i] = a.shape(i) > 1 ? a.strides(i) / item : 0;
    }
    PairLayout p;
    p.row_stride = stride[rank - 2];
    p.col_stride = stride[rank - 1];
    if (unit_columns && a.size() > 0 && a.shape(rank - 1) > 1 && p.col_stride != 1) {
        fail(std::string(name) + " must have its last axis contiguous");
    }
    int64_t pairs = 1;
    for (int64_t i = 0; i + 2 < rank; ++i) pairs = checked_mul(pairs, want[i], name);
    // Views broadcast over the batch are few bytes; their pairs' offsets are not.
    require_fits_in_memory(pairs, int64_t(sizeof(int64_t)), [&] {
        return std::string(name) + " " + shape_str(want) + "'s offsets of its matrices";
    });
    p.offset.assign(pairs, 0);
    std::vector<int64_t> index(rank > 2 ? rank - 2 : 0, 0);
    for (int64_t b = 1, at = 0; b < pairs; ++b) {  // an odometer over the batch axes
        int64_t axis = static_cast<int64_t>(index.size()) - 1;
        while (index[axis] + 1 == want[axis]) {
            at -= index[axis] * stride[axis];
            index[axis--] = 0;
        }
        ++index[axis];
        at += stride[axis];
        p.offset[b] = at;
    }
    return p;
}

template <typename T>
PairMatrices<const T> pair_input(const py::array& a, const PairLayout& p) {
    return {static_cast<const T*>(a.data()), p.offset.data(), p.row_stride};
}

template <typename T>
PairMatrices<T> pair_output(py::array& a, const PairLayout& p) {
    return {static_cast<T*>(a.mutable_data()), p.offset.data(), p.row_stride};
}

Shape with_matrix(Shape batch, int64_t rows, int64_t cols) {
    batch.push_back(rows);
    batch.push_back(cols);
    return batch;
}

// q (batch..., S, d), k (batch..., L, d), v (batch..., L, dv) of one float dtype and one
// batch shape (the caller broadcasts them): their sizes and layouts, and the checks of the
// arrays that go with them (of q's dtype, the batch shape and their matrices' shapes).
struct AttentionOperands {
    const py::array& q_array;
    Shape batch;
    AttentionShape s;
    PairLayout q, k, v;

    AttentionOperands(const py::array& qa, const py::array& ka, const py::array& va)
        : q_array(qa) {
        const Shape qs = shape_of(qa), ks = shape_of(ka), vs = shape_of(va);
        if (qs.size() < 2) fail("attention q must be (batch..., S, d), got " + shape_str(qs));
        if (ks.size() != qs.size() || vs.size() != qs.size()) {
            fail("attention k " + shape_str(ks) + " and v " + shape_str(vs) +
                 " must have the rank of q " + shape_str(qs));
        }
        batch.assign(qs.begin(), qs.end() - 2);
        s = {1, qs[qs.size() - 2], ks[ks.size() - 2], qs.back(), vs.back()};
        for (const int64_t n : batch) s.pairs = checked_mul(s.pairs, n, "attention pairs");
        q = layout(qa, s.S, s.d, "attention q");
        k = layout(ka, s.L, s.d, "attention k");
        v = layout(va, s.L, s.dv, "attention v");
    }

    PairLayout layout(const py::array& a, int64_t rows, int64_t cols, const char* name) const {
        require_same_dtype(q_array, "attention q", a, name);
        return pair_layout(a, with_matrix(batch, rows, cols), name);
    }

    // An array the kernel writes: a matrix per pair, none shared (no broadcast axis).
    PairLayout output(const py::array& a, int64_t rows, int64_t cols, const char* name) const {
        if (!a.writeable()) fail(std::string(name) + " is read-only: the kernel writes it");
        for (py::ssize_t i = 0; i < a.ndim() && a.size() > 0; ++i) {
            if (a.shape(i) > 1 && a.strides(i) == 0) {
                fail(std::string(name) + " is a broadcast view");
            }
        }
        return layout(a, rows, cols, name);
    }

    // written: the forward's weights, which it writes.
    void check_weights(const py::array& weights, bool written) const {
        if (written && !weights.writeable()) {
            fail("attention weights are read-only: the forward writes them");
        }
        require_same_dtype(q_array, "attention q", weights, "attention weights");
        // Each pair's transposed (L x S): attention.h.
        require_shape(weights, with_matrix(batch, s.L, s.S), "attention weights");
        if (!(weights.flags() & py::array::c_style) || !aligned(weights)) {
            fail("attention weights must be C-contiguous and aligned to their items");
        }
    }
};

// An empty array of `shape` (of a's rank) in a's memory order, as np.empty_like(a,
// shape=shape) lays it out: its axes' strides in the order of a's, largest first. A result
// laid out as the input it comes from undoes the transposes that brought the input for free
// (a head split's merge after attention copies nothing). A broadcast input, or an order in
// which the rows would not be contiguous, gets C order.
py::array empty_in_order_of(const py::array& a, const Shape& shape) {
    const size_t rank = shape.size();
    const auto item = static_cast<int64_t>(a.itemsize());
    std::vector<size_t> order(rank);  // the axes, largest stride of a's first
    for (size_t i = 0; i < rank; ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) {
        return std::abs(a.strides(i)) > std::abs(a.strides(j));
    });
    bool broadcast = false;
    for (size_t i = 0; i + 2 < rank; ++i) broadcast = broadcast || a.strides(i) == 0;
    std::vector<int64_t> strides(rank);
    int64_t step = item;
    for (size_t i = rank; i-- > 0;) {
        strides[order[i]] = step;
        step *= std::max<int64_t>(shape[order[i]], 1);
    }
    if (broadcast || (rank > 0 && shape[rank - 1] > 1 && strides[rank - 1] != item)) {
        return py::array(a.dtype(), shape);
    }
    return py::array(a.dtype(), shape, strides);
}

// An output the caller gave, or None: then one of `shape` in the memory order of `like`.
py::array output_or_new(const py::object& given, const py::array& like, const Shape& shape) {
    return given.is_none() ? empty_in_order_of(like, shape) : given.cast<py::array>();
}

py::tuple py_attention_forward(const py::array& q, const py::array& k, const py::array& v,
                               const py::object& mask, double scale,
                               const py::object& weights_given, const py::object& out_given) {
    const AttentionOperands in(q, k, v);
    const AttentionShape& s = in.s;
    py::array out = output_or_new(out_given, q, with_matrix(in.batch, s.S, s.dv));
    py::array weights = weights_given.is_none()
                                  ? py::array(q.dtype(), with_matrix(in.batch, s.L, s.S))
                                  : weights_given.cast<py::array>();
    const PairLayout ol = in.output(out, s.S, s.dv, "attention out");
    in.check_weights(weights, true);
    PairLayout ml;
    AttentionMask m;
    py::array mask_array;
    if (!mask.is_none()) {
        mask_array = mask.cast<py::array>();
        if (!same_dtype(mask_array.dtype(), py::dtype::of<uint8_t>())) {
            fail("attention mask must be uint8 (booleans viewed as bytes), got " +
                 dtype_name(mask_array));
        }
        ml = pair_layout(mask_array, with_matrix(in.batch, s.S, s.L), "attention mask", false);
        m = {static_cast<const uint8_t*>(mask_array.data()), ml.offset.data(), ml.row_stride,
             ml.col_stride};
    }
    dispatch_float(q, "attention q", [&](auto zero) {
        using T = decltype(zero);
        const auto qp = pair_input<T>(q, in.q), kp = pair_input<T>(k, in.k);
        const auto vp = pair_input<T>(v, in.v);
        const auto op = pair_output<T>(out, ol);
        T* wp = static_cast<T*>(weights.mutable_data());
        py::gil_scoped_release nogil;
        attention_forward(s, static_cast<T>(scale), qp, kp, vp, m, wp, op);
    });
    return py::make_tuple(out, weights);
}

py::tuple py_attention_backward(const py::array& q, const py::array& k, const py::array& v,
                                const py::array& weights, const py::array& dout, double scale,
                                const py::object& dq_given, const py::object& dk_given,
                                const py::object& dv_given) {
    const AttentionOperands in(q, k, v);
    const AttentionShape& s = in.s;
    in.check_weights(weights, false);
    py::array dq = output_or_new(dq_given, q, with_matrix(in.batch, s.S, s.d));
    py::array dk = output_or_new(dk_given, k, with_matrix(in.batch, s.L, s.d));
    py::array dv = output_or_new(dv_given, v, with_matrix(in.batch, s.L, s.dv));
    const PairLayout dol = in.layout(dout, s.S, s.dv, "attention dout");
    const PairLayout dql = in.output(dq, s.S, s.d, "attention dq");
    const PairLayout dkl = in.output(dk, s.L, s.d, "attention dk");
    const PairLayout dvl = in.output(dv, s.L, s.dv, "attention dv");
    dispatch_float(q, "attention q", [&](auto zero) {
        using T = decltype(zero);
        const auto qp = pair_input<T>(q, in.q), kp = pair_input<T>(k, in.k);
        const auto vp = pair_input<T>(v, in.v), dop = pair_input<T>(dout, dol);
        const auto dqp = pair_output<T>(dq, dql), dkp = pair_output<T>(dk, dkl);
        const auto dvp = pair_output<T>(dv, dvl);
        const T* wp = static_cast<const T*>(weights.data());
        py::gil_scoped_release nogil;
        attention_backward(s, static_cast<T>(scale), qp, kp, vp, wp, dop, dqp, dkp, dvp);
    });
    return py::make_tuple(dq, dk, dv);
}

py::array py_avg_pool_forward(const py::array& x, int64_t pool_height, int64_t pool_width,
                              int64_t stride) {
    const PoolGeometry g = pool_geometry(shape_of(x), pool_height, pool_width, stride, "avg_pool");
    return dispatch_float(x, "avg_pool x", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> xc(x);
        py::array_t<T> out(g.out_shape());
        const T* xp = xc.data();
        T* op = out.mutable_data();
        py::gil_scoped_release nogil;
        avg_pool_forward(g, xp, op);
        return out;
    });
}

py::array py_avg_pool_backward(const py::array& dout, int64_t H, int64_t W, int64_t pool_height,
                               int64_t pool_width, int64_t stride) {
    const Shape ds = shape_of(dout);
    require_rank(ds, 4, "avg_pool dout", "(N, C, Ho, Wo)");
    const PoolGeometry g =
        pool_geometry({ds[0], ds[1], H, W}, pool_height, pool_width, stride, "avg_pool");
    require_shape(dout, g.out_shape(), "avg_pool dout");
    return dispatch_float(dout, "avg_pool dout", [&](auto zero) -> py::array {
        using T = decltype(zero);
        Contig<T> dc(dout);
        py::array_t<T> dx(Shape{g.N, g.C, g.H, g.W});
        const T* dp = dc.data();
        T* dxp = dx.mutable_data();
        py::gil_scoped_release nogil;
        avg_pool_backward(g, dp, dxp);
        return dx;
    });
}

// ---- end of pointwise ----

// The kernels' scratch the calling thread keeps (conv buffers, recurrent scratch); each
// store frees what it keeps when it looks after a release (cache_line.h), so a count after
// release_array_pool is that of what is left.
int64_t kernel_scratch_bytes() { return KeptBuffer::kept_bytes() + recurrent_kept_bytes(); }

// The mode named "off", "auto" or "always" of a path's setter (set_lane_conv and the like):
// never, where it pays, or wherever it can run.
template <typename Mode>
Mode path_mode(const std::string& setter, const std::string& mode) {
    if (mode == "off") return Mode::kOff;
    if (mode == "auto") return Mode::kWherePays;
    if (mode == "always") return Mode::kEverywhere;
    fail(setter + ": mode must be 'off', 'auto' or 'always', got '" + mode + "'");
}

}  // namespace
}  // namespace graphnet

PYBIND11_MODULE(_C, m) {
    using namespace graphnet;
    blas_init();
    m.attr("array_pool") = array_pool_handler();  // array_pool.h
    m.def("set_array_memory_handler", &set_array_memory_handler, "handler"_a.none(true),
          "Makes handler (a numpy mem_handler capsule, e.g. array_pool) the current context's\n"
          "numpy memory handler and returns the one it replaces; None changes nothing and\n"
          "returns None.");
    m.def("array_pool_counts", [] {
        const ArrayPoolCounts counts = array_pool_counts();
        pybind11::dict out;
        out["in_use_bytes"] = counts.in_use_bytes;
        out["kept_bytes"] = counts.kept_bytes;
        out["peak_bytes"] = counts.peak_bytes;
        out["reused_blocks"] = counts.reused_blocks;
        out["new_blocks"] = counts.new_blocks;
        out["kernel_scratch_bytes"] = kernel_scratch_bytes();
        return out;
    }, "The array pool's bytes in use, kept and at the peak, and its blocks reused and new;\n"
       "the kernels' scratch the calling thread keeps for its next calls.");
    m.def("keep_freed_heap", &keep_freed_heap,
          "Has the C library keep the heap's freed memory for the next allocations (glibc:\n"
          "blocks under 32 MB from the heap, up to 64 MB kept free at its top) rather than\n"
          "return it whenever 128 KB are free; True if it took the settings (array_pool.h).");
    m.def("release_array_pool", [] {
        release_array_pool();
        ++kept_scratch_releases;
        kernel_scratch_bytes();  // frees the calling thread's now (see kernel_scratch_bytes)
    }, "Returns the array pool's kept blocks and the kernels' kept scratch to the system\n"
       "(the calling thread's now, another thread's when it next runs a kernel).");
    m.doc() = "graphnet C++ kernels (conv: direct AVX2 or im2col + OpenBLAS GEMM; max pool)";
    m.attr("__version__") = "0.1.0";
    bind_walks(m);  // walk.h

    m.def("conv_forward", &py_conv_forward, "x"_a, "w"_a, "b"_a, "stride"_a, "pad"_a,
          "activation"_a = "", "alpha"_a = 0.0,  // not keyword-only: see matmul
          "Convolution (cross-correlation) of x (N, C, H, W) with w (F, C, HH, WW) plus b (F,)\n"
          "-> out (N, F, 1 + (H + 2 pad - HH) // stride, 1 + (W + 2 pad - WW) // stride).\n"
          "x, w, b must share one dtype, float32 or float64; out has that dtype.\n"
          "activation='relu' / 'leaky_relu' (slope alpha >= 0): that activation of out, as its\n"
          "gate takes it, each image's while in cache.");
    // Flags by position or by name: a keyword takes pybind11's slow path (see matmul's).
    m.def("conv_backward", &py_conv_backward, "dout"_a, "x"_a, "w"_a, "stride"_a, "pad"_a,
          "need_dx"_a = true, "need_dw"_a = true, "activation"_a = "",
          "alpha"_a = 0.0, "act_out"_a = py::none(),
          "Gradients of conv_forward -> (dx, dw, db). need_dx=False / need_dw=False skip\n"
          "that gradient entirely and return None in its place. activation (as conv_forward's)\n"
          "with act_out, conv_forward's output with it: dout is act_out's gradient, and the\n"
          "conv's own, dout * (act_out > 0 ? 1 : alpha), is taken chunk by chunk, never whole.");
    m.def("conv_relu_pool_forward", &py_conv_relu_pool_forward, "x"_a, "w"_a, "b"_a, "stride"_a,
          "pad"_a, "pool_height"_a, "pool_width"_a, "pool_stride"_a,
          "max_pool_forward(relu(conv_forward(x, w, b, stride, pad)), ...) -> (pooled, winners),\n"
          "bit for bit, without writing the convolution's output: each image is pooled while\n"
          "its convolution is in cache.");
    m.def("conv_pooled_backward", &py_conv_pooled_backward, "dpool"_a, "pooled"_a, "winners"_a,
          "x"_a, "w"_a, "stride"_a, "pad"_a,
          "(dw, db) of conv -> relu -> max_pool from the pooled gradient: the conv's output\n"
          "gradient is dpool at each window's winner where the pooled value is > 0, else 0.\n"
          "pooled, winners: max_pool_forward's outputs; x, w: the conv's input and weights.");
    m.def("max_pool_forward", &py_max_pool_forward, "x"_a, "pool_height"_a, "pool_width"_a,
          "stride"_a, "relu_first"_a = false,  // not keyword-only: see matmul
          "Max pooling of x (N, C, H, W), no padding -> (out, winners): out is\n"
          "(N, C, 1 + (H - ph) // stride, 1 + (W - pw) // stride); winners (int32, same shape)\n"
          "holds each window's winner as an index into its (H, W) plane. Ties: the first\n"
          "maximum in row-major window order wins; NaN counts as the maximum.\n"
          "relu_first=True pools relu(x) (as relu_forward computes it) without writing it.");
    m.def("max_pool_backward", &py_max_pool_backward, "dout"_a, "winners"_a, "H"_a, "W"_a,
          "Gradient of max_pool_forward -> dx (N, C, H, W): each window's whole gradient goes\n"
          "to its winner; overlapping windows add up.");
    m.def("all_finite", &py_all_finite, "x"_a,
          "Whether x (float32 or float64, any shape) holds no NaN and no infinity: "
          "np.isfinite(x).all() without its temporary.");
    m.def("relu_forward", &py_relu_forward, "x"_a,
          "(max(x, 0), x > 0) in one threaded pass; float32 or float64, any shape.");
    m.def("relu_backward", &py_relu_backward, "dout"_a, "keep"_a,
          "dout where keep (the mask relu_forward returned), else 0.");
    m.def("dropout_forward", &py_dropout_forward, "x"_a, "key"_a, "keep"_a,
          "Inverted dropout in train mode -> (out, mask), in one threaded pass; float32 or\n"
          "float64, any shape. Unit i (C order) is kept, with probability keep in (0, 1], where\n"
          "the top 53 bits of SplitMix64's output i + 1 from state key (a uint64), as a uniform\n"
          "in [0, 1), are below keep: the same mask for any thread count, build and dtype.\n"
          "mask: 1 / keep in x's dtype where kept, else 0; out = x * mask.");
    m.def("dropout_backward_rows", &py_dropout_backward_rows, "dout"_a, "mask"_a,
          "Dropout's backward of a gradient constant along rows: dx (mask's shape) =\n"
          "dout[r] * mask[r, j], mask's units (C order) taken as dout.size rows of equal length\n"
          "(dout: one number per row, a mean's over mask's trailing axes); same dtype, float32\n"
          "or float64.");
    m.def("sigmoid", &py_sigmoid, "x"_a,
          "1 / (1 + exp(-x)) of a float32 array in one threaded pass (AVX2 where the CPU has\n"
          "it and set_avx2_activations allows, within 3 units in the last place).");
    m.def("scatter_add_rows", &py_scatter_add_rows, "index"_a, "values"_a, "rows"_a,
          "(rows, width) zeros plus, at row index[p], values[p] for each position p in order\n"
          "(a word embedding's weight gradient); index int64 (positions,) in [0, rows),\n"
          "values (positions, width) float32 or float64.");
    m.def("gather_rows", &py_gather_rows, "index"_a, "table"_a,
          "table[index]: for each int64 index in [0, rows) (of any shape), its row of table\n"
          "(rows, width), float32 or float64 -> (index's shape..., width) (a word\n"
          "embedding's lookup). Indices outside [0, rows) raise ValueError.");
    m.def("softmax_loss", &py_softmax_loss, "x"_a, "labels"_a, "weight"_a, "gradient"_a = true,
          "Softmax cross-entropy of each row of x (rows, V) against its int64 label, times\n"
          "its weight: (the weighted sum of the rows' losses, dx (rows, V)); x and weight\n"
          "of one float dtype. gradient=False: (the loss, None), dx not computed. Labels\n"
          "outside [0, V) raise ValueError.");
    m.def("mean_softmax_loss", &py_mean_softmax_loss, "x"_a, "labels"_a, "gradient"_a = true,
          "The softmax loss gate's: softmax_loss with a weight of 1 per row, its loss divided\n"
          "by the rows (in float64) as a numpy scalar of x's dtype, dx (rows, V) divided by\n"
          "the rows; x (rows >= 1, V) float32 or float64, labels int64. gradient=False:\n"
          "(the loss, None). Labels outside [0, V) raise ValueError.");
    m.def("sequence_softmax_loss", &py_sequence_softmax_loss, "x"_a, "y"_a, "mask"_a,
          "gradient"_a = true,
          "temporal_softmax_loss's numbers: softmax_loss over the steps of x (N, T, V),\n"
          "float32 or float64, against the words y (N, T) int64, each step weighted by\n"
          "(mask != 0) / N rounded to x's dtype, mask (N, T) bool or int64: (the weighted\n"
          "sum, dx (N, T, V)); gradient=False: (the sum, None). Labels outside [0, V) raise\n"
          "ValueError.");
    m.def("svm_loss", &py_svm_loss, "x"_a, "labels"_a,
          "Multiclass hinge loss (margin 1) of x (rows, C), float32 or float64, against its\n"
          "int64 labels: (the loss summed in double and divided by rows, dx (rows, C)).\n"
          "Labels outside [0, C) raise ValueError.");
    m.def("row_means", &py_row_means, "x"_a,
          "The mean of each row of x (rows, n), float32 or float64, with numpy's pairwise\n"
          "summation: np.mean(x, axis=1)'s numbers, bit for bit.");
    m.def("middle_means", &py_middle_means, "x"_a,
          "The means over the middle axis of x (outer, n, inner), float32 or float64, as\n"
          "(outer, inner), summed in order: np.mean(x, axis=1)'s numbers, bit for bit.");
    m.def("spread_means", &py_spread_means, "dout"_a, "n"_a,
          "A mean's gradient over its middle axis: dout (outer, inner), float32 or float64,\n"
          "divided by n and copied to each of the n entries, (outer, n, inner): the bits of\n"
          "np.broadcast_to(np.true_divide(dout[:, None], n), ...).copy().");
    // Not keyword-only: pybind11 takes any keyword argument through a slow path (0.8 us a
    // call), as much as a small product, so the gates pass them by position.
    m.def("matmul", &py_matmul, "a"_a, "b"_a, "transpose_a"_a = false, "transpose_b"_a = false,
          "bias"_a = py::none(),
          "op(a) @ op(b) on graphnet's threads, op = transpose when asked (no copy is made\n"
          "for it); a and b: 2-D, one dtype, float32 or float64. bias (columns of the\n"
          "result,), of that dtype: added to every row of the result.");
    m.def("batched_matmul", &py_batched_matmul, "a"_a, "b"_a, "transpose_a"_a = false,
          "transpose_b"_a = false, "summed_to"_a = py::none(),
          "np.matmul(op(a), op(b)) for a and b of rank >= 2, one dtype, float32 or float64,\n"
          "op transposing the last two axes when asked: their leading (batch) axes broadcast\n"
          "(a broadcast operand is read in place, not copied); each matrix of the result\n"
          "has matmul's bits for its two matrices, on any thread count. summed_to (a tuple:\n"
          "the batch, aligned to the right, with axes of 1 where it is summed over): the\n"
          "products summed in the batch's order, one at a time, as np.sum adds the stack.");
    m.def("column_sums", &py_column_sums, "a"_a,
          "Each column's sum over the rows in order, of a 2-D float32 or float64 array, on\n"
          "graphnet's threads: a.sum(axis=0)'s bits where a has 2+ columns (numpy sums a\n"
          "single column pairwise).");
    m.def("affine_forward", &py_affine_forward, "x"_a, "w"_a, "b"_a, "kept"_a,
          "out = rows @ w + b, rows the (R, D) matrix of x's values (R the product of x's\n"
          "first `kept` axes, D = w.shape[0] the rest's), out of shape x.shape[:kept] + (M,);\n"
          "x, w (D, M), b (M,): one dtype, float32 or float64. matmul's numbers.");
    m.def("affine_backward", &py_affine_backward, "dout"_a, "x"_a, "w"_a, "needs"_a,
          "The gradients of affine_forward(x, w, b, dout.ndim - 1) from dout (x's kept\n"
          "axes, M): (dx in x's shape, dw (D, M), db (M,)), each None where needs (three\n"
          "bools) says so; matmul's and column_sums' numbers (one column: numpy's sum).");
    m.def("update", &py_update, "rule"_a, "w"_a, "dw"_a, "states"_a, "hyperparameters"_a,
          "t"_a = 0,
          "One step of update rule 'sgd', 'sgd_momentum', 'rmsprop' or 'adam' in place on w\n"
          "and its states (none; velocity; cache; m, v), C-contiguous, one float dtype, with\n"
          "its hyperparameters in graphnet.optim's order (learning_rate; + momentum; +\n"
          "decay_rate, epsilon; + beta1, beta2, epsilon) and adam's t already incremented.\n"
          "Same numbers as graphnet.optim's numpy path.");
    m.def("check_update", &py_check_update, "rule"_a, "hyperparameters"_a, "t"_a = 0,
          "ValueError unless update(rule, ..., hyperparameters, t) would take these: every\n"
          "hyperparameter finite and >= 0, decay_rate <= 1, beta1 and beta2 < 1, adam's t >= 1.");
    m.def("update_step", &py_update_step, "rule"_a, "w"_a, "dw"_a, "config"_a,
          "graphnet.optim.<rule>(w, dw, config) when config is well-formed (Python numbers,\n"
          "adam's t an int, the state arrays to update in place) and w, dw plain float arrays\n"
          "of one dtype and shape, w C-contiguous and writeable: the update made, adam's t\n"
          "incremented, True. Anything else: False, nothing changed.");
    m.def("recurrent_forward", &py_recurrent_forward, "cell"_a, "x"_a, "h0"_a, "Wx"_a, "Wh"_a,
          "b"_a, "keep"_a = true,
          "A tanh RNN (cell 'rnn') or an LSTM from a zero cell state (cell 'lstm', gates\n"
          "i, f, o, g) over x (N, T, D) from h0 (N, H) -> (h (N, T, H), act, c, tanh_c); the\n"
          "last three (the LSTM's activated gates (N, T, 4H), cell states and their tanh\n"
          "(N, T, H)) are None for the RNN, and with keep=False (inference: no backward\n"
          "will read them; the same h, bit for bit). One dtype, float32 or float64.");
    m.def("recurrent_backward", &py_recurrent_backward, "cell"_a, "dh"_a, "x"_a, "h0"_a, "Wx"_a,
          "Wh"_a, "h"_a, "act"_a, "c"_a, "tanh_c"_a,
          "Gradients of recurrent_forward from dh (N, T, H), given its inputs and outputs\n"
          "-> (dx, dh0, dWx, dWh, db). The same for any number of threads, bit for bit.");
    m.def("set_avx2_activations", &set_avx2_activations, "enabled"_a,
          "Compute the recurrent kernels' float32 sigmoid and tanh on AVX2 (the default where\n"
          "the CPU has AVX2 and FMA); False uses the C library's, to compare the two.");
    m.def("avx2_activations_active", &avx2_activations_active,
          "Whether the recurrent kernels' float32 sigmoid and tanh run on AVX2.");
    m.def("set_avx512_activations", &set_avx512_activations, "enabled"_a,
          "Where they run on AVX2 and the CPU has AVX-512F, run them sixteen lanes at a time\n"
          "(the default; the pointwise kernels and the groupnorm loops as well); False keeps\n"
          "the eight-lane ones, to compare the two.");
    m.def("avx512_activations_active", &avx512_activations_active,
          "Whether the recurrent kernels' float32 sigmoid and tanh run on AVX-512.");
    // ---- normalization ----
    m.def("conv_chain_forward", &py_conv_chain_forward, "x"_a, "w"_a, "b"_a, "stride"_a,
          "pad"_a, "norm"_a = py::none(), "eps"_a = 1e-5, "add"_a = py::none(),
          "add_first"_a = false, "relu"_a = false, "pool"_a = py::none(),
          "conv -> [eval-mode spatial batchnorm, norm = (gamma, beta, running_mean,\n"
          "running_var)] -> [+ add, an array of the conv's output shape (add_first: add + it)]\n"
          "-> [relu] -> [max pool, pool = (height, width, stride)] in one call: (conv_out[,\n"
          "norm_out, mean, inv_std][, sum][, relu_out, keep][, pooled, winners]), each as\n"
          "conv_forward, channel_norm_forward, numpy's +, relu_forward and max_pool_forward\n"
          "return it.");
    m.def("affine_chain_forward", &py_affine_chain_forward, "x"_a, "w"_a, "b"_a,
          "norm"_a = py::none(), "eps"_a = 1e-5, "layer"_a = false, "relu"_a = false,
          "x (N, D) @ w (D, M) + b -> [eval-mode batchnorm, norm = (gamma, beta,\n"
          "running_mean, running_var), or with layer a layernorm, norm = (gamma, beta)] ->\n"
          "[relu] in one call: (affine_out[, norm_out, mean, inv_std][, relu_out, keep]), each\n"
          "as matmul, channel_norm_forward (layer_norm_forward) and relu_forward return it.");
    m.def("channel_norm_forward", &py_channel_norm_forward, "x"_a, "gamma"_a, "beta"_a, "eps"_a,
          "mean"_a = py::none(), "var"_a = py::none(), "relu"_a = false, "skip"_a = py::none(),
          "skip_first"_a = false, "pool"_a = py::none(), "keep"_a = true, "activation"_a = "",
          "alpha"_a = 0.0,
          "Batchnorm of x (N, C, ...) per channel (axis 1) -> (out, mean, var, inv_std), the\n"
          "last three (C,) in x's dtype. Without mean and var: the batch's (biased variance),\n"
          "in one float64 pass; with them (eval mode): those. out = gamma * (x - mean) * inv_std\n"
          "+ beta, inv_std = 1 / sqrt(var + eps); relu: its relu; with skip (x's shape, relu\n"
          "only): the relu of it + skip (skip_first: skip + it). pool (relu or activation, x (N, C, H,\n"
          "W)): (pool_height, pool_width, stride) of a max pool of that, pooled in the same\n"
          "pass -> (out, mean, var, inv_std, pooled, winners), max_pool_forward's last two;\n"
          "keep=False (pooled only): out is not written (None). activation \"leaky_relu\" (no\n"
          "relu): its leaky relu of slope alpha (then pooled, with pool). Deterministic for any\n"
          "number of threads.");
    m.def("batchnorm_forward", &py_batchnorm_forward, "x"_a, "gamma"_a, "beta"_a, "eps"_a,
          "momentum"_a, "running_mean"_a, "running_var"_a, "train"_a, "relu"_a = false,
          "skip"_a = py::none(), "skip_first"_a = false, "pool"_a = py::none(), "keep"_a = true,
          "activation"_a = "", "alpha"_a = 0.0,
          "The batchnorm gate's forward: channel_norm_forward with the running averages\n"
          "((C,) arrays of any float dtype, None: zeros of x's dtype) -> (out, mean, inv_std,\n"
          "running_mean, running_var[, pooled, winners]). train: the batch's statistics, and\n"
          "the running averages updated as momentum * running + (1 - momentum) * batch (new\n"
          "arrays, numpy's bits and promotions); else the running averages (in x's dtype)\n"
          "normalize, and come back as they were. The rest as channel_norm_forward's.");
    m.def("channel_norm_backward", &py_channel_norm_backward, "dout"_a, "x"_a, "gamma"_a,
          "mean"_a, "inv_std"_a, "train"_a, "beta"_a = py::none(), "relu_out"_a = py::none(),
          "activation"_a = "", "alpha"_a = 0.0,
          "Gradients of channel_norm_forward -> (dx, dgamma, dbeta); train: mean and inv_std\n"
          "were the batch's (they depend on x), else constants. With beta: of the forward with\n"
          "relu, dout being the relu output's gradient. With relu_out (the output of a forward\n"
          "with a skip): dout passes where it is positive -> (dx, dgamma, dbeta, masked dout).\n"
          "With activation (the forward's) and beta: dout is the gradient of the activation's\n"
          "output.");
    m.def("layer_norm_forward", &py_layer_norm_forward, "x"_a, "gamma"_a, "beta"_a, "eps"_a,
          "relu"_a = false,
          "Layernorm of the rows of x (N, D), or of each D-vector of x (N, ..., D): R of them\n"
          "-> (out (x's shape), mean (R,), inv_std (R,)); relu: out is the relu of the\n"
          "normalized rows. D = 0 raises ValueError.");
    m.def("layer_norm_backward", &py_layer_norm_backward, "dout"_a, "x"_a, "gamma"_a, "mean"_a,
          "inv_std"_a, "beta"_a = py::none(),
          "Gradients of layer_norm_forward -> (dx (x's shape), dgamma, dbeta); with beta: of\n"
          "the forward with relu, dout being the relu output's gradient.");
    m.def("group_norm_forward", &py_group_norm_forward, "x"_a, "gamma"_a, "beta"_a, "G"_a,
          "eps"_a, "activation"_a = "", "alpha"_a = 0.0, "pool"_a = py::none(),
          "max_pool"_a = false,
          "Groupnorm of x (N, C, H, W) in G groups of channels, gamma and beta (C,) ->\n"
          "(out, mean (N * G,), inv_std (N * G,)); activation (gelu, gelu_tanh, leaky_relu\n"
          "with slope alpha, softplus): out is that of the normalized x; pool\n"
          "(pool_height, pool_width, stride): out is avg_pool_forward's of that, or with\n"
          "max_pool max_pool_forward's, its winners (N, C, Ho, Wo) returned fourth.");
    m.def("group_norm_backward", &py_group_norm_backward, "dout"_a, "x"_a, "gamma"_a, "G"_a,
          "mean"_a, "inv_std"_a, "beta"_a = py::none(), "activation"_a = "", "alpha"_a = 0.0,
          "pool"_a = py::none(), "winners"_a = py::none(),
          "Gradients of group_norm_forward -> (dx, dgamma, dbeta); with an activation (and\n"
          "beta) and a pool: of the forward with them, dout being its output's gradient\n"
          "(with winners, the forward's with max_pool: of its max pool's).");
    // ---- end of normalization ----
    // ---- pointwise ----
    m.def("pointwise_forward", &py_pointwise_forward, "op"_a, "x"_a, "alpha"_a = 0.0,
          "One elementwise gate's forward in one threaded pass, float32 or float64, any shape:\n"
          "op gelu, gelu_tanh, leaky_relu (alpha), softplus or sigmoid (the transcendental\n"
          "ones on AVX2 where avx2_activations_active(), see cpp/pointwise_avx2.h).");
    m.def("pointwise_forward_slope", &py_pointwise_forward_slope, "op"_a, "x"_a,
          "(out, slope): pointwise_forward(op, x) and, in the same pass, f'(x) for gelu or\n"
          "gelu_tanh, such that dout * slope is pointwise_backward(op, dout, x) bit for bit.");
    m.def("pointwise_backward", &py_pointwise_backward, "op"_a, "dout"_a, "saved"_a,
          "alpha"_a = 0.0,
          "dout * f'(x) of pointwise_forward's op (also tanh); saved is x for gelu,\n"
          "gelu_tanh, leaky_relu and softplus, the forward's output for sigmoid and tanh.");
    m.def("erf", &py_erf, "x"_a,
          "The error function of a float32 or float64 array (float32 on AVX2 within 2 units\n"
          "in the last place of the exact value; else the C library's).");
    m.def("attention_forward", &py_attention_forward, "q"_a, "k"_a, "v"_a, "mask"_a, "scale"_a,
          "weights"_a, "out"_a,
          "Scaled dot-product attention of each (batch, head) pair into weights and out "
          "(views of one batch shape, last axes contiguous; weights (..., L, S), each pair's "
          "transposed; mask: uint8 or None); returns (out, weights). out None: one in q's "
          "memory order; weights None: a C-contiguous one.");
    m.def("attention_backward", &py_attention_backward, "q"_a, "k"_a, "v"_a, "weights"_a,
          "dout"_a, "scale"_a, "dq"_a, "dk"_a, "dv"_a,
          "Gradients of attention_forward into dq, dk, dv (one matrix per pair), returned; "
          "each None: one in the memory order of q, k, v.");
    // Flags by position or by name: a keyword takes pybind11's slow path (see matmul's).
    m.def("softmax_forward", &py_softmax_forward, "x"_a, "log"_a = false,
          "Softmax (log=True: log softmax) along the last axis, shifted by each row's max.");
    m.def("softmax_backward", &py_softmax_backward, "dout"_a, "out"_a, "log"_a = false,
          "Gradient of softmax_forward from its output.");
    m.def("avg_pool_forward", &py_avg_pool_forward, "x"_a, "pool_height"_a, "pool_width"_a,
          "stride"_a, "Average pooling of x (N, C, H, W), max_pool_forward's windows.");
    m.def("avg_pool_backward", &py_avg_pool_backward, "dout"_a, "H"_a, "W"_a, "pool_height"_a,
          "pool_width"_a, "stride"_a,
          "Gradient of avg_pool_forward -> dx (N, C, H, W): each window's gradient / its\n"
          "size to each of its entries; overlapping windows add up.");
    // ---- end of pointwise ----
    m.def("set_num_threads", &set_num_threads, "n"_a,
          "Threads the kernels use, 1 to 1024 (default: OMP_NUM_THREADS, else all cores).");
    m.def("get_num_threads", &num_threads);
    m.def("max_num_threads", [] { return kMaxThreads; }, "The most set_num_threads takes.");
    m.def("set_direct_conv", &set_direct_conv, "enabled"_a,
          "Use the direct AVX2 kernels for float32 stride-1 convolutions (the default where\n"
          "the CPU has AVX2 and FMA); False forces im2col + GEMM, to compare the two.");
    m.def("direct_conv_active", &direct_conv_active,
          "Whether float32 stride-1 convolutions run on the direct AVX2 kernels.");
    m.def(
        "set_winograd_conv",
        [](const std::string& mode, const std::string& tiles) {
            const WinogradTiles tile = [&] {
                if (tiles == "auto") return WinogradTiles::kWherePays;
                if (tiles == "2x2") return WinogradTiles::k2x2;
                if (tiles == "4x4") return WinogradTiles::k4x4;
                fail("set_winograd_conv: tiles must be 'auto', '2x2' or '4x4', got '" + tiles + "'");
            }();
            if (mode == "off") return set_winograd_conv(WinogradMode::kOff, tile);
            if (mode == "auto") return set_winograd_conv(WinogradMode::kWherePays, tile);
            if (mode == "always") return set_winograd_conv(WinogradMode::kEverywhere, tile);
            fail("set_winograd_conv: mode must be 'off', 'auto' or 'always', got '" + mode + "'");
        },
        "mode"_a, "tiles"_a = "auto",
        "Where float32 3x3 convolutions with stride 1 and pad 1, and 5x5 ones with pad 2, run\n"
        "Winograd on AVX-512 (forward, dx and dw; the forward and dx of narrower pads too):\n"
        "'auto' (the default) on layers where it is faster, 'always' on every such layer,\n"
        "'off' never, to compare the paths.\n"
        "tiles: the output tiles of a 3x3 layer's passes, F(4x4, 3x3) or F(2x2, 3x3):\n"
        "'auto' (the default) 4x4 where they are faster, or always '2x2' or '4x4'.");
    m.def(
        "set_pad_skip_conv",
        [](const std::string& mode) { set_pad_skip_conv(path_mode<PadSkipMode>("set_pad_skip_conv", mode)); },
        "mode"_a,
        "Where stride-1 convolutions whose pad lies inside the kernel skip the taps that fall\n"
        "into the padding (all three passes): 'auto' (the default) on the wide layers on small\n"
        "images that run im2col + GEMM, 'always' on every such layer, 'off' never, to compare.");
    m.def(
        "set_lane_conv",
        [](const std::string& mode) { set_lane_conv(path_mode<LaneForwardMode>("set_lane_conv", mode)); },
        "mode"_a,
        "Where strided float32 forwards on AVX-512 put the output positions along the lanes\n"
        "and the filters in registers (the lane kernel) rather than the filters along the\n"
        "lanes: 'auto' (the default) on layers of few filters where it is faster, 'always'\n"
        "on every such layer, 'off' never, to compare the paths.");
    m.def(
        "set_column_dx",
        [](const std::string& mode) { set_column_dx(path_mode<ColumnDxMode>("set_column_dx", mode)); },
        "mode"_a,
        "Where the input gradients of strided float32 layers on AVX-512 run as columns (dout^T\n"
        "w with the weights as they are, then col2im) rather than on the phases (the weights\n"
        "packed per call): 'auto' (the default) on small batches of small images of many\n"
        "filters, 'always' on every such layer, 'off' never, to compare the paths.");
    m.def(
        "set_column_dw",
        [](const std::string& mode) { set_column_dw(path_mode<ColumnDwMode>("set_column_dw", mode)); },
        "mode"_a,
        "Where the weight gradients of strided float32 layers on AVX-512 run as columns (dout\n"
        "times im2col's rows, written in dw's own layout) rather than on the phases (summed\n"
        "transposed, then transposed into dw): 'auto' (the default) on small batches of small\n"
        "images of many filters, 'always' on every such layer (those of few filters too, which\n"
        "'auto' may give the lane kernel), 'off' never, to compare the paths.");
    m.def(
        "strided_gradient_paths",
        [](const py::array& x, const py::array& w, int64_t stride, int64_t pad) {
            const Shape b_shape{shape_of(w).empty() ? 0 : shape_of(w)[0]};
            const ConvGeometry g = conv_geometry(shape_of(x), shape_of(w), b_shape, stride, pad);
            const StridedGradientPaths paths = strided_gradient_paths(g);
            return py::make_tuple(paths.dx, paths.dw);
        },
        "x"_a, "w"_a, "stride"_a, "pad"_a,
        "The paths conv_backward gives a float32 layer's (dx, dw) under set_lane_conv,\n"
        "set_column_dx and set_column_dw as they are now: 'columns', 'lanes', 'phases' (the\n"
        "tap kernel on the phase planes) or 'other' (not a strided layer on AVX-512, or a pass\n"
        "the phases leave to im2col + GEMM). For the tests, where the bits cannot tell.");
    m.def("set_avx512_conv", &set_avx512_conv, "enabled"_a,
          "Run the direct conv kernels with AVX-512 where the CPU has it (the default);\n"
          "False keeps them on AVX2, to compare the two.");
    m.def("avx512_conv_active", &avx512_conv_active,
          "Whether the direct conv kernels run on AVX-512.");
    m.def("set_avx512_matmul", &set_avx512_matmul, "enabled"_a,
          "Run matmul's batch-times-narrow-weights products on the AVX-512 kernel where the\n"
          "CPU has it (the default); False keeps them on OpenBLAS and the AVX2 kernel.");
    m.def("avx512_matmul_active", &avx512_matmul_active,
          "Whether matmul's batch-times-narrow-weights products run on AVX-512.");
#ifdef GRAPHNET_X86_KERNELS
    m.attr("x86_kernels_built") = true;
#else
    m.attr("x86_kernels_built") = false;  // another CPU, or GRAPHNET_PORTABLE: portable code only
#endif
}
