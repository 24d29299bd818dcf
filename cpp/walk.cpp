// The executor's two loops without hooks (graphnet/core/executor.py): each step's gate is a
// Python callable, called here as Python's own loop would call it, in the same order and
// with the same errors. In a scalar circuit the gates are a few numpy scalar operations, and
// unpacking the plan's entries, indexing the value lists and routing each gradient in
// bytecode cost more than the gates (docs/performance/overhead.md); here they cost a few
// dozen instructions a step.
//
// Nothing the loops read is trusted: a plan entry of the wrong shape or an index out of
// range raises TypeError or IndexError, as the Python loop would, never a crash. Every
// object is held by a strong reference while it is used: a gate may replace entries of
// the lists it is handed.
#include "walk.h"

#include <Python.h>
#include <pybind11/numpy.h>

#include <vector>

namespace graphnet {
namespace {

// An owned reference, released when it goes out of scope.
class Ref {
public:
    explicit Ref(PyObject* object = nullptr) : object_(object) {}
    Ref(const Ref&) = delete;
    Ref& operator=(const Ref&) = delete;
    ~Ref() { Py_XDECREF(object_); }
    PyObject* get() const { return object_; }
    PyObject* release() {
        PyObject* object = object_;
        object_ = nullptr;
        return object;
    }
    void reset(PyObject* object) {
        Py_XDECREF(object_);
        object_ = object;
    }
    explicit operator bool() const { return object_ != nullptr; }

private:
    PyObject* object_;
};

// Failures set a Python exception and make the loops return false.
bool fail(PyObject* type, const char* message) {
    PyErr_SetString(type, message);
    return false;
}

// list[index] as a new reference (nullptr and IndexError when out of range).
PyObject* list_item(PyObject* list, Py_ssize_t index) {
    if (index < 0 || index >= PyList_GET_SIZE(list)) {
        PyErr_SetString(PyExc_IndexError, "list index out of range");
        return nullptr;
    }
    PyObject* item = PyList_GET_ITEM(list, index);
    Py_INCREF(item);
    return item;
}

// list[index] = value, taking the reference to value.
bool set_list_item(PyObject* list, Py_ssize_t index, PyObject* value) {
    if (index < 0 || index >= PyList_GET_SIZE(list)) {
        Py_DECREF(value);
        return fail(PyExc_IndexError, "list assignment index out of range");
    }
    return PyList_SetItem(list, index, value) == 0;
}

// The plan's entries are tuples of a known length.
PyObject* entry_at(PyObject* loop, Py_ssize_t step, Py_ssize_t length) {
    PyObject* entry = list_item(loop, step);
    if (entry != nullptr && (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != length)) {
        Py_DECREF(entry);
        PyErr_SetString(PyExc_TypeError, "a plan's loop entry has the wrong form");
        return nullptr;
    }
    return entry;
}

// An index held by an entry (-1 with an error set when it is not an int).
Py_ssize_t index_of(PyObject* number) {
    if (!PyLong_Check(number)) {
        fail(PyExc_TypeError, "a plan's index is not an int");
        return -1;
    }
    return PyLong_AsSsize_t(number);
}

bool index_failed(Py_ssize_t index) { return index == -1 && PyErr_Occurred(); }

// sequence[position] as a new reference, as Python's subscript would read it.
PyObject* item_at(PyObject* sequence, Py_ssize_t position) {
    if (PyTuple_CheckExact(sequence)) {
        if (position < 0 || position >= PyTuple_GET_SIZE(sequence)) {
            PyErr_SetString(PyExc_IndexError, "tuple index out of range");
            return nullptr;
        }
        PyObject* item = PyTuple_GET_ITEM(sequence, position);
        Py_INCREF(item);
        return item;
    }
    Ref key(PyLong_FromSsize_t(position));
    return key ? PyObject_GetItem(sequence, key.get()) : nullptr;
}

// `first, second = result`, with Python's errors for anything else.
bool unpack_pair(PyObject* result, Ref& first, Ref& second) {
    if (PyTuple_CheckExact(result) && PyTuple_GET_SIZE(result) == 2) {
        first.reset(PyTuple_GET_ITEM(result, 0));
        second.reset(PyTuple_GET_ITEM(result, 1));
        Py_INCREF(first.get());
        Py_INCREF(second.get());
        return true;
    }
    Ref items(PySequence_Fast(result, "cannot unpack a gate's result: not a pair"));
    if (!items) return false;
    const Py_ssize_t size = PySequence_Fast_GET_SIZE(items.get());
    if (size != 2) {
        PyErr_Format(PyExc_ValueError,
                     size < 2 ? "not enough values to unpack (expected 2, got %zd)"
                              : "too many values to unpack (expected 2)",
                     size);
        return false;
    }
    first.reset(PySequence_Fast_GET_ITEM(items.get(), 0));
    second.reset(PySequence_Fast_GET_ITEM(items.get(), 1));
    Py_INCREF(first.get());
    Py_INCREF(second.get());
    return true;
}

// Calls run with the values at `inputs` (a tuple of indices). The arguments sit one slot
// into their array, which lets a bound method put its self there instead of copying them.
PyObject* call_on_values(PyObject* run, PyObject* inputs, PyObject* values) {
    if (!PyTuple_Check(inputs)) {
        PyErr_SetString(PyExc_TypeError, "a plan's inputs are not a tuple");
        return nullptr;
    }
    const Py_ssize_t arity = PyTuple_GET_SIZE(inputs);
    constexpr Py_ssize_t kOnStack = 8;  // gates have 1-3 inputs; a concat may have many
    PyObject* on_stack[kOnStack + 1];
    std::vector<PyObject*> on_heap;
    PyObject** slots = on_stack;
    if (arity > kOnStack) {
        on_heap.resize(static_cast<size_t>(arity) + 1);
        slots = on_heap.data();
    }
    PyObject** arguments = slots + 1;
    Py_ssize_t held = 0;  // the arguments[:held] are owned references
    PyObject* result = nullptr;
    for (; held < arity; ++held) {
        const Py_ssize_t index = index_of(PyTuple_GET_ITEM(inputs, held));
        if (index_failed(index) || (arguments[held] = list_item(values, index)) == nullptr)
            break;
    }
    if (held == arity)
        result = PyObject_Vectorcall(run, arguments,
                                     static_cast<size_t>(arity) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     nullptr);
    for (Py_ssize_t i = 0; i < held; ++i) Py_DECREF(arguments[i]);
    return result;
}

bool forward_step(PyObject* entry, PyObject* values, PyObject* caches, PyObject* store) {
    const Py_ssize_t out = index_of(PyTuple_GET_ITEM(entry, 0));
    if (index_failed(out)) return false;
    PyObject* run = PyTuple_GET_ITEM(entry, 1);
    if (PyTuple_GET_ITEM(entry, 3) == Py_True) {  // a fused step writes its nodes' entries itself
        Ref done(PyObject_CallOneArg(run, store));
        return static_cast<bool>(done);
    }
    Ref result(call_on_values(run, PyTuple_GET_ITEM(entry, 2), values));
    Ref value, cache;
    if (!result || !unpack_pair(result.get(), value, cache)) return false;
    return set_list_item(values, out, value.release()) && set_list_item(caches, out, cache.release());
}

// Whether a and b are both numpy arrays (not subclasses) of the same shape, read from the
// arrays' own fields: two `.shape` tuples built and compared cost more than the walk's
// other work for a gradient it routes (most gradients have their input's shape).
bool same_array_shape(PyObject* a, PyObject* b) {
    using pybind11::detail::array_proxy;
    using pybind11::detail::npy_api;
    const npy_api& numpy = npy_api::get();
    if (Py_TYPE(a) != numpy.PyArray_Type_ || Py_TYPE(b) != numpy.PyArray_Type_) return false;
    const auto *x = array_proxy(a), *y = array_proxy(b);
    if (x->nd != y->nd) return false;
    for (int axis = 0; axis < x->nd; ++axis)
        if (x->dimensions[axis] != y->dimensions[axis]) return false;
    return true;
}

// The gradient `grad` sent to input j: None is nothing sent; a gradient of another shape than
// the input's (a broadcast) is summed down to it. Sets `grad` to nullptr with no error for None.
bool received(Ref& grad, PyObject* float64, PyObject* unbroadcast, PyObject* values,
              Py_ssize_t j) {
    if (Py_TYPE(grad.get()) == reinterpret_cast<PyTypeObject*>(float64)) return true;
    if (grad.get() == Py_None) {
        grad.reset(nullptr);
        return true;
    }
    Ref value(list_item(values, j));
    if (!value) return false;
    if (same_array_shape(grad.get(), value.get())) return true;
    Ref grad_shape(PyObject_GetAttrString(grad.get(), "shape"));
    if (!grad_shape) return false;
    Ref value_shape(PyObject_GetAttrString(value.get(), "shape"));
    if (!value_shape) return false;
    const int differs = PyObject_RichCompareBool(grad_shape.get(), value_shape.get(), Py_NE);
    if (differs < 0) return false;
    if (differs) {
        PyObject* arguments[] = {grad.get(), value_shape.get()};
        grad.reset(PyObject_Vectorcall(unbroadcast, arguments, 2, nullptr));
        if (!grad) return false;
    }
    return true;
}

// Whether `sum`, an input's gradient so far, can take its next consumer's `grad` in place:
// a float32 or float64 array that the gradient list (and the caller's reference) alone
// hold, over memory of its own, of the dtype and shape `sum + grad` has. Then it is a sum
// of two or more edges' gradients that this walk made, which nothing else reads: the first
// edge's gradient, kept at its edge slot, or one a gate also sent elsewhere, is held more
// than twice. In place, the transformer's four-consumer inputs add their third and fourth
// gradients without a new array each (512 KB at batch 64); the same bits as `sum + grad`.
bool sole_sum(PyObject* sum, PyObject* grad) {
    using pybind11::detail::array_descriptor_proxy;
    using pybind11::detail::array_proxy;
    using pybind11::detail::npy_api;
    const npy_api& numpy = npy_api::get();
    if (Py_REFCNT(sum) != 2 || !same_array_shape(sum, grad)) return false;
    const auto *into = array_proxy(sum), *added = array_proxy(grad);
    const int type = array_descriptor_proxy(into->descr)->type_num;
    constexpr int kOwnWriteable = npy_api::NPY_ARRAY_OWNDATA_ | npy_api::NPY_ARRAY_WRITEABLE_;
    return (type == npy_api::NPY_FLOAT_ || type == npy_api::NPY_DOUBLE_) &&
           into->base == nullptr && (into->flags & kOwnWriteable) == kOwnWriteable &&
           into->nd != 0 && numpy.PyArray_EquivTypes_(into->descr, added->descr);
}

struct BackwardLists {
    PyObject *values, *caches, *grads, *edges, *store, *float64, *unbroadcast;
};

// One target (position, input index, edge slot or None) of a step's gradients `sent`.
bool route(PyObject* target, PyObject* sent, const BackwardLists& lists) {
    if (!PyTuple_Check(target) || PyTuple_GET_SIZE(target) != 3)
        return fail(PyExc_TypeError, "a plan's gradient target has the wrong form");
    const Py_ssize_t position = index_of(PyTuple_GET_ITEM(target, 0));
    if (index_failed(position)) return false;
    const Py_ssize_t j = index_of(PyTuple_GET_ITEM(target, 1));
    if (index_failed(j)) return false;
    Ref grad(item_at(sent, position));
    if (!grad || !received(grad, lists.float64, lists.unbroadcast, lists.values, j)) return false;
    if (!grad) return true;  // a gate that gives this input no gradient
    PyObject* edge = PyTuple_GET_ITEM(target, 2);
    if (edge == Py_None) return set_list_item(lists.grads, j, grad.release());  // its one consumer
    // Fan-out: the input gets the sum of its consumers' gradients; each edge's own is kept.
    const Py_ssize_t slot = index_of(edge);
    if (index_failed(slot)) return false;
    Py_INCREF(grad.get());
    if (!set_list_item(lists.edges, slot, grad.get())) return false;
    Ref before(list_item(lists.grads, j));
    if (!before) return false;
    if (before.get() == Py_None) return set_list_item(lists.grads, j, grad.release());
    PyObject* sum = sole_sum(before.get(), grad.get())
                        ? PyNumber_InPlaceAdd(before.get(), grad.get())
                        : PyNumber_Add(before.get(), grad.get());
    return sum != nullptr && set_list_item(lists.grads, j, sum);
}

bool backward_step(PyObject* entry, const BackwardLists& lists) {
    const Py_ssize_t out = index_of(PyTuple_GET_ITEM(entry, 0));
    if (index_failed(out)) return false;
    PyObject* run = PyTuple_GET_ITEM(entry, 1);
    PyObject* needs = PyTuple_GET_ITEM(entry, 2);
    PyObject* targets = PyTuple_GET_ITEM(entry, 3);
    Ref sent;
    if (PyTuple_GET_ITEM(entry, 4) == Py_True) {  // a fused step reads its entries itself
        PyObject* slots[] = {nullptr, lists.store, needs};
        sent.reset(PyObject_Vectorcall(run, slots + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr));
    } else {
        Ref upstream(list_item(lists.grads, out));
        if (!upstream) return false;
        Ref cache(list_item(lists.caches, out));
        if (!cache) return false;
        PyObject* slots[] = {nullptr, upstream.get(), cache.get(), needs};  // see call_on_values
        sent.reset(PyObject_Vectorcall(run, slots + 1, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr));
    }
    if (!sent) return false;
    if (!PyTuple_Check(targets)) return fail(PyExc_TypeError, "a plan's targets are not a tuple");
    for (Py_ssize_t t = 0; t < PyTuple_GET_SIZE(targets); ++t)
        if (!route(PyTuple_GET_ITEM(targets, t), sent.get(), lists)) return false;
    return true;
}

// Runs `step` over the loop's entries; on an error, progress[0] = the failing step's number.
template <typename Step>
void walk(const pybind11::list& loop, const pybind11::list& progress, Py_ssize_t length,
          Step&& step) {
    for (Py_ssize_t number = 0; number < PyList_GET_SIZE(loop.ptr()); ++number) {
        Ref entry(entry_at(loop.ptr(), number, length));
        if (entry && step(entry.get())) continue;
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyObject* failed = PyLong_FromSsize_t(number);
        if (failed != nullptr && PyList_GET_SIZE(progress.ptr()) > 0)
            PyList_SetItem(progress.ptr(), 0, failed);
        else
            Py_XDECREF(failed);
        PyErr_Restore(type, value, traceback);
        throw pybind11::error_already_set();
    }
}

}  // namespace

void bind_walks(pybind11::module_& m) {
    using namespace pybind11::literals;
    m.def(
        "forward_walk",
        [](const pybind11::list& loop, const pybind11::list& values, const pybind11::list& caches,
           const pybind11::object& store, const pybind11::list& progress) {
            walk(loop, progress, 4, [&](PyObject* entry) {
                return forward_step(entry, values.ptr(), caches.ptr(), store.ptr());
            });
        },
        "loop"_a, "values"_a, "caches"_a, "store"_a, "progress"_a,
        "Runs a forward plan's loop entries (node, run, input indices, fused):\n"
        "values[node], caches[node] = run(*values[inputs]), or run(store) for a fused step.\n"
        "On an error progress[0] is the failing step's number.");
    m.def(
        "backward_walk",
        [](const pybind11::list& loop, const pybind11::list& values, const pybind11::list& caches,
           const pybind11::list& grads, const pybind11::list& edges, const pybind11::object& store,
           const pybind11::type& float64, const pybind11::object& unbroadcast,
           const pybind11::list& progress) {
            const BackwardLists lists{values.ptr(), caches.ptr(), grads.ptr(), edges.ptr(),
                                      store.ptr(),  float64.ptr(), unbroadcast.ptr()};
            walk(loop, progress, 5, [&](PyObject* entry) { return backward_step(entry, lists); });
        },
        "loop"_a, "values"_a, "caches"_a, "grads"_a, "edges"_a, "store"_a, "float64"_a,
        "unbroadcast"_a, "progress"_a,
        "Runs a backward plan's loop entries (node, run, needs, targets, fused), routing each\n"
        "gradient sent to its input: a float64 number as it is, None skipped, another shape\n"
        "summed down by unbroadcast(grad, shape); an input's one consumer stores it, a fan-out\n"
        "keeps it at its edge slot and adds it to the input's sum (in place into a sum the\n"
        "walk made and nothing else holds). On an error progress[0] is the failing step's\n"
        "number.");
}

}  // namespace graphnet
