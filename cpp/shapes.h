// Shape checks shared by the kernels. Every mistake becomes std::invalid_argument
// (Python sees ValueError) with the shapes in the message, before any memory is touched.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
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

// What a failed check names: a string, or a callable that makes one, so that a check that
// passes (every call but a mistake) builds no message: the strings of a conv's geometry
// checks cost as much as a small conv's kernel.
template <typename What>
std::string describe(const What& what) {
    if constexpr (std::is_invocable_v<const What&>) {
        return what();
    } else {
        return std::string(what);
    }
}

inline void require_rank(const Shape& s, size_t rank, const char* name, const char* layout) {
    if (s.size() != rank) {
        fail(std::string(name) + " must be " + std::to_string(rank) + "-D " + layout +
             ", got shape " + shape_str(s));
    }
}

// Geometry arithmetic on int64 sizes. A sum or product that does not fit is refused,
// naming what was being computed, instead of wrapping around: a wrapped size (a pad near
// 2^63, say) would pass the checks below and send the kernels out of bounds.
[[noreturn]] inline void fail_overflow(const std::string& what, int64_t a, const char* op,
                                       int64_t b) {
    fail(what + " does not fit in 64 bits (" + std::to_string(a) + op + std::to_string(b) + ")");
}

template <typename What>
int64_t checked_add(int64_t a, int64_t b, const What& what) {
    int64_t sum;
    if (__builtin_add_overflow(a, b, &sum)) fail_overflow(describe(what), a, " + ", b);
    return sum;
}

template <typename What>
int64_t checked_mul(int64_t a, int64_t b, const What& what) {
    int64_t product;
    if (__builtin_mul_overflow(a, b, &product)) fail_overflow(describe(what), a, " x ", b);
    return product;
}

// size + 2 * pad, checked; size and pad are >= 0.
template <typename What>
int64_t padded_size(int64_t size, int64_t pad, const What& what) {
    return checked_add(size, checked_mul(2, pad, what), what);
}

// Number of window positions along one axis: the course's 1 + (size - window) // stride,
// or -1 if the window does not fit at all. size >= 0, window >= 1 and stride >= 1, so
// nothing here can overflow.
inline int64_t out_size(int64_t size, int64_t window, int64_t stride) {
    return window > size ? -1 : 1 + (size - window) / stride;
}

// BLAS takes 32-bit sizes, and one image's im2col matrix must be addressable.
template <typename What>
void require_blas_size(int64_t elements, const What& what) {
    if (elements > INT32_MAX) fail(describe(what) + " is too large for the 32-bit BLAS");
}

}  // namespace graphnet
