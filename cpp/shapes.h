// Shape checks shared by the kernels. Every mistake becomes std::invalid_argument
// (Python sees ValueError) with the shapes in the message, before any memory is touched.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace graphnet {

using Shape = std::vector<int64_t>;

inline std::string shape_str(const Shape& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) {
        out += std::to_string(s[i]);
        if (s.size() == 1 || i + 1 < s.size()) out += s.size() == 1 ? "," : ", ";
    }
    return out + ")";
}

[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

inline void require_rank(const Shape& s, size_t rank, const char* name, const char* layout) {
    if (s.size() != rank) {
        fail(std::string(name) + " must be " + std::to_string(rank) + "-D " + layout +
             ", got shape " + shape_str(s));
    }
}

// Number of window positions along one axis: the course's 1 + (size - window) // stride,
// or -1 if the window does not fit at all.
inline int64_t out_size(int64_t size, int64_t window, int64_t stride) {
    return window > size ? -1 : 1 + (size - window) / stride;
}

// BLAS takes 32-bit sizes, and one image's im2col matrix must be addressable.
inline void require_blas_size(int64_t elements, const std::string& what) {
    if (elements > INT32_MAX) fail(what + " is too large for the 32-bit BLAS");
}

}  // namespace graphnet
