// graphnet._C: the C++ kernels behind graphnet's gates.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
    m.doc() = "graphnet C++ kernels";
    m.attr("__version__") = "0.1.0";
}
