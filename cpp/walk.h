// The executor's forward and backward loops over a plan's entries (cpp/walk.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace graphnet {

// Adds forward_walk and backward_walk to the module.
void bind_walks(pybind11::module_& m);

}  // namespace graphnet
