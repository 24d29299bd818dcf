// A build for a CPU that is not x86 (or with GRAPHNET_PORTABLE) compiles no AVX2 or
// AVX-512 code: cpu_features.h then says the CPU has neither, so every caller takes its
// portable path and these entry points, which the portable code still names, are never
// reached. They exist so that the module links; reaching one is a bug in a caller's check.
#include <stdexcept>
#include <string>

#include "activations_avx2.h"
#include "attention.h"
#include "activations_avx512.h"
#include "conv_direct.h"
#include "conv_taps.h"
#include "conv_winograd.h"
#include "dropout_isa.h"
#include "gemm_avx512.h"
#include "group_norm.h"
#include "lstm_cell_avx512.h"
#include "pool_avx2.h"
#include "pool_avx512.h"
#include "norm_avx2.h"
#include "norm_avx512.h"
#include "optim_avx2.h"
#include "panel_gemm_avx512.h"
#include "pointwise_avx2.h"
#include "pointwise_avx512.h"
#include "skinny_gemm.h"

namespace graphnet {
namespace {

[[noreturn]] void absent(const char* kernel) {
    throw std::logic_error(std::string(kernel) +
                           " is an x86 kernel, not built here; its caller must check "
                           "cpu_features.h first");
}

}  // namespace

template <typename T>
void pair_product_avx512(int64_t, int64_t, int64_t, const T*, int64_t, bool, const T*, int64_t, T,
                         T*, int64_t) {
    absent("pair_product_avx512");
}
template <typename T>
void pair_product_avx2(int64_t, int64_t, int64_t, const T*, int64_t, bool, const T*, int64_t, T,
                       T*, int64_t) {
    absent("pair_product_avx2");
}
#define GRAPHNET_PAIR_PRODUCTS(T)                                                              \
    template void pair_product_avx512<T>(int64_t, int64_t, int64_t, const T*, int64_t, bool,    \
                                         const T*, int64_t, T, T*, int64_t);                   \
    template void pair_product_avx2<T>(int64_t, int64_t, int64_t, const T*, int64_t, bool,      \
                                       const T*, int64_t, T, T*, int64_t);
GRAPHNET_PAIR_PRODUCTS(float)
GRAPHNET_PAIR_PRODUCTS(double)
#undef GRAPHNET_PAIR_PRODUCTS
void softmax_columns_avx512(int64_t, int64_t, float*, float*) { absent("softmax_columns_avx512"); }
void softmax_columns_avx512(int64_t, int64_t, double*, double*) {
    absent("softmax_columns_avx512");
}
void softmax_columns_avx2(int64_t, int64_t, float*, float*) { absent("softmax_columns_avx2"); }
void softmax_columns_avx2(int64_t, int64_t, double*, double*) { absent("softmax_columns_avx2"); }
int64_t direct_tile_filters(int64_t) { absent("direct_tile_filters"); }
void winograd_weights_avx512(const WinogradConv&, const WinogradWeights&, float*) {
    absent("winograd_weights_avx512");
}
int64_t winograd_forward_scratch_floats(const WinogradConv&) {
    absent("winograd_forward_scratch_floats");
}
int64_t winograd_forward_padded_floats(const WinogradConv&) {
    absent("winograd_forward_padded_floats");
}
void winograd_forward_images_avx512(const WinogradConv&, const WinogradInput&, const float*,
                                    int64_t, const float*, const float*, float*, float*) {
    absent("winograd_forward_images_avx512");
}
int64_t winograd_gradient_scratch_floats(const WinogradConv&) {
    absent("winograd_gradient_scratch_floats");
}
void winograd_weight_gradient_images_avx512(const WinogradConv&, const WinogradInput&,
                                            const float*, const float*, int64_t, float*,
                                            float*) {
    absent("winograd_weight_gradient_images_avx512");
}
void winograd_input_tiles_avx512(const WinogradConv&, const WinogradInput&, const float*, int64_t,
                                 float*, int64_t, float*) {
    absent("winograd_input_tiles_avx512");
}
void winograd_filters_forward_avx512(const WinogradConv&, const WinogradWeights&, int64_t, int64_t,
                                     const float*, int64_t, int64_t, const float*, float*,
                                     float*) {
    absent("winograd_filters_forward_avx512");
}
int64_t winograd_gradient_strip_floats(const WinogradConv&) {
    absent("winograd_gradient_strip_floats");
}
void winograd_gradient_tiles_avx512(const WinogradConv&, const WinogradInput&, const float*,
                                    const float*, int64_t, float*, float*, int64_t, float*) {
    absent("winograd_gradient_tiles_avx512");
}
void winograd_pairs_gradient_avx512(const WinogradConv&, const float*, const float*, int64_t,
                                    const WinogradPairs&, bool, float*, float*) {
    absent("winograd_pairs_gradient_avx512");
}
void winograd_weights_gradient_avx512(const WinogradConv&, const float*, float*) {
    absent("winograd_weights_gradient_avx512");
}
int64_t direct_tile_filters_avx512(int64_t) { absent("direct_tile_filters_avx512"); }
void direct_conv_forward_image(const DirectConv&, const float*, const float*, const float*,
                               float*) {
    absent("direct_conv_forward_image");
}
void direct_conv_forward_image_avx512(const DirectConv&, const float*, const float*,
                                      const float*, float*) {
    absent("direct_conv_forward_image_avx512");
}
void direct_conv_dw_images(const DirectConv&, const int64_t*, const float*, int64_t,
                           const float*, int64_t, float*) {
    absent("direct_conv_dw_images");
}
int64_t direct_dw_scratch_avx512(const DirectConv&) { absent("direct_dw_scratch_avx512"); }
void direct_conv_dw_images_avx512(const DirectConv&, const int64_t*, const float*, int64_t,
                                  const float*, int64_t, float*, float*, float*) {
    absent("direct_conv_dw_images_avx512");
}
void direct_conv_dw_channels_avx512(const DirectConv&, int64_t, const float*, const float*,
                                    int64_t, float*, float*, float*) {
    absent("direct_conv_dw_channels_avx512");
}
void direct_sparse_dw_rows(int64_t, int64_t, const float*, const int32_t*, const float*,
                           int64_t, float*) {
    absent("direct_sparse_dw_rows");
}
void skinny_gemm_rows(int64_t, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                      int64_t, float*) {
    absent("skinny_gemm_rows");
}
void gemm_rows_avx512(int64_t, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                      int64_t, float*, int64_t, bool, GemmTransposes, float*, const float*) {
    absent("gemm_rows_avx512");
}
void gemm_rows_avx512(int64_t, int64_t, int64_t, int64_t, const double*, int64_t,
                      const double*, int64_t, double*, int64_t, bool, GemmTransposes, double*,
                      const double*) {
    absent("gemm_rows_avx512");
}
void gemm_columns_through_transpose_avx512(int64_t, int64_t, int64_t, int64_t, const float*,
                                           int64_t, const float*, int64_t, float*, int64_t,
                                           float*) {
    absent("gemm_columns_through_transpose_avx512");
}
void gemm_columns_through_transpose_avx512(int64_t, int64_t, int64_t, int64_t, const double*,
                                           int64_t, const double*, int64_t, double*, int64_t,
                                           double*) {
    absent("gemm_columns_through_transpose_avx512");
}
int64_t gemm_few_rows_per_pass_avx512(int64_t, const float*) {
    absent("gemm_few_rows_per_pass_avx512");
}
int64_t gemm_few_rows_per_pass_avx512(int64_t, const double*) {
    absent("gemm_few_rows_per_pass_avx512");
}
void gemm_few_rows_avx512(int64_t, int64_t, int64_t, const float*, const float*, int64_t,
                          float*) {
    absent("gemm_few_rows_avx512");
}
void gemm_few_rows_avx512(int64_t, int64_t, int64_t, const double*, const double*, int64_t,
                          double*) {
    absent("gemm_few_rows_avx512");
}
void gemm_rows_grouped_avx512(int64_t, int64_t, int64_t, int64_t, const float*, int64_t,
                              InnerGroups, const float*, int64_t, float*, int64_t, bool) {
    absent("gemm_rows_grouped_avx512");
}
void gemm_rows_grouped_avx512(int64_t, int64_t, int64_t, int64_t, const double*, int64_t,
                              InnerGroups, const double*, int64_t, double*, int64_t, bool) {
    absent("gemm_rows_grouped_avx512");
}
void panel_gemm_avx512(int64_t, int64_t, int64_t, int64_t, const float*, int64_t, const float*,
                       bool, float*, int64_t) {
    absent("panel_gemm_avx512");
}
void lstm_cell_backward_avx512(int64_t, int64_t, const float*, const float*, const float*,
                               const float*, const float*, float*, float*) {
    absent("lstm_cell_backward_avx512");
}
void row_product_avx512(int64_t, int64_t, int64_t, const float*, const float*, int64_t, bool,
                        float*, bool) {
    absent("row_product_avx512");
}
void layer_norm_rows_backward_avx512(int64_t, int64_t, bool, const float*, const float*,
                                     const float*, const float*, const float*, const float*,
                                     float*, double*, double*) {
    absent("layer_norm_rows_backward_avx512");
}
void transposed_gemm_accumulate_avx512(int64_t, int64_t, int64_t, int64_t, const float*,
                                       int64_t, const float*, int64_t, float*, int64_t) {
    absent("transposed_gemm_accumulate_avx512");
}
void tap_conv_forward_avx512(const TapConv&, const int64_t*, const float*, const float*,
                             const float*, float*) {
    absent("tap_conv_forward_avx512");
}
void lane_conv_forward_avx512(const LaneConv&, const int64_t*, const float*, const float*,
                              const float*, float*) {
    absent("lane_conv_forward_avx512");
}
void tap_conv_dw_avx512(const TapConv&, const TapDwPositions&, const int64_t*, const float*,
                        const float*, float*) {
    absent("tap_conv_dw_avx512");
}
void pack_dw_positions_avx512(int64_t, int64_t, int64_t, int64_t, const float*, float*) {
    absent("pack_dw_positions_avx512");
}
void lane_conv_dw_avx512(const LaneDw&, const int64_t*, const float*, const float*, float*) {
    absent("lane_conv_dw_avx512");
}
void lane_dw_dout_avx512(int64_t, int64_t, int64_t, int64_t, const float*, float*, int64_t,
                         float*) {
    absent("lane_dw_dout_avx512");
}
void deinterleave_avx512(int64_t, int64_t, const float*, int64_t, float*, float*, int64_t) {
    absent("deinterleave_avx512");
}
void split_columns_avx512(int64_t, int64_t, int64_t, const float*, int64_t, float* const*,
                          int64_t) {
    absent("split_columns_avx512");
}
void merge_phase_pairs_avx512(const PhasePairs&, int64_t, const float*, const float*, int64_t,
                              float*, int64_t) {
    absent("merge_phase_pairs_avx512");
}
void column_sums_avx512(int64_t, int64_t, const float*, int64_t, float*) {
    absent("column_sums_avx512");
}
void copy_rows_avx512(int64_t, int64_t, const float*, int64_t, float*, int64_t) {
    absent("copy_rows_avx512");
}
void tap_transpose_avx512(int64_t, int64_t, const float*, int64_t, float*, int64_t) {
    absent("tap_transpose_avx512");
}
void tap_transpose_to_rows_avx512(int64_t, int64_t, const float*, int64_t, float* const*) {
    absent("tap_transpose_to_rows_avx512");
}
void sigmoid_avx2(int64_t, const float*, const float*, float*) { absent("sigmoid_avx2"); }
void tanh_avx2(int64_t, const float*, const float*, float*) { absent("tanh_avx2"); }
void sigmoid_avx512(int64_t, const float*, const float*, float*) { absent("sigmoid_avx512"); }
void tanh_avx512(int64_t, const float*, const float*, float*) { absent("tanh_avx512"); }
void relu_forward_avx2(int64_t, const double*, double*, bool*) { absent("relu_forward_avx2"); }
void relu_forward_avx2(int64_t, const float*, float*, bool*) { absent("relu_forward_avx2"); }
int64_t max_pool_row_2x2_avx2(int64_t, int32_t, int32_t, const float*, const float*, float*,
                              int32_t*, bool) {
    absent("max_pool_row_2x2_avx2");
}
int64_t max_pool_row_2x2_avx2(int64_t, int32_t, int32_t, const double*, const double*,
                              double*, int32_t*, bool) {
    absent("max_pool_row_2x2_avx2");
}
void max_pool_plane_avx2(const AvgPoolPlane&, const float*, float*, int32_t*, bool) {
    absent("max_pool_plane_avx2");
}
void max_pool_plane_avx2(const AvgPoolPlane&, const double*, double*, int32_t*, bool) {
    absent("max_pool_plane_avx2");
}
void max_pool_planes_avx2(const AvgPoolPlane&, int64_t, const float*, float*, int32_t*, bool) {
    absent("max_pool_planes_avx2");
}
void max_pool_planes_avx2(const AvgPoolPlane&, int64_t, const double*, double*, int32_t*, bool) {
    absent("max_pool_planes_avx2");
}
void max_pool_planes_avx512(const AvgPoolPlane&, int64_t, const float*, float*, int32_t*, bool) {
    absent("max_pool_planes_avx512");
}
void max_pool_planes_avx512(const AvgPoolPlane&, int64_t, const double*, double*, int32_t*,
                            bool) {
    absent("max_pool_planes_avx512");
}
void max_pool_planes_stride2_avx512(const AvgPoolPlane&, int64_t, const float*, float*,
                                    int32_t*, bool) {
    absent("max_pool_planes_stride2_avx512");
}
void max_pool_planes_stride2_avx512(const AvgPoolPlane&, int64_t, const double*, double*,
                                    int32_t*, bool) {
    absent("max_pool_planes_stride2_avx512");
}
int64_t max_unpool_planes_2x2_avx512(const AvgPoolPlane&, int64_t, const float*, const int32_t*,
                                     float*) {
    absent("max_unpool_planes_2x2_avx512");
}
int64_t max_unpool_planes_2x2_avx512(const AvgPoolPlane&, int64_t, const double*,
                                     const int32_t*, double*) {
    absent("max_unpool_planes_2x2_avx512");
}
int64_t max_unpool_planes_stride1_avx512(const AvgPoolPlane&, int64_t, const float*,
                                         const int32_t*, float*) {
    absent("max_unpool_planes_stride1_avx512");
}
int64_t max_unpool_planes_stride1_avx512(const AvgPoolPlane&, int64_t, const double*,
                                         const int32_t*, double*) {
    absent("max_unpool_planes_stride1_avx512");
}
void avg_pool_planes_forward_avx512(const AvgPoolPlane&, int64_t, const float*, float*) {
    absent("avg_pool_planes_forward_avx512");
}
void avg_pool_planes_forward_avx512(const AvgPoolPlane&, int64_t, const double*, double*) {
    absent("avg_pool_planes_forward_avx512");
}
void avg_pool_planes_backward_avx512(const AvgPoolPlane&, int64_t, const float*, float*) {
    absent("avg_pool_planes_backward_avx512");
}
void avg_pool_planes_backward_avx512(const AvgPoolPlane&, int64_t, const double*, double*) {
    absent("avg_pool_planes_backward_avx512");
}
void avg_pool_tiny_planes_backward_avx512(const AvgPoolPlane&, int64_t, const float*, float*) {
    absent("avg_pool_tiny_planes_backward_avx512");
}
void avg_pool_tiny_planes_backward_avx512(const AvgPoolPlane&, int64_t, const double*, double*) {
    absent("avg_pool_tiny_planes_backward_avx512");
}
void avg_pool_planes_forward_avx2(const AvgPoolPlane&, int64_t, const float*, float*) {
    absent("avg_pool_planes_forward_avx2");
}
void avg_pool_planes_forward_avx2(const AvgPoolPlane&, int64_t, const double*, double*) {
    absent("avg_pool_planes_forward_avx2");
}
void avg_pool_planes_backward_avx2(const AvgPoolPlane&, int64_t, const float*, float*) {
    absent("avg_pool_planes_backward_avx2");
}
void avg_pool_planes_backward_avx2(const AvgPoolPlane&, int64_t, const double*, double*) {
    absent("avg_pool_planes_backward_avx2");
}
int64_t pointwise_forward_avx512(Pointwise, int64_t, const float*, float*) {
    absent("pointwise_forward_avx512");
}
int64_t pointwise_forward_avx512(Pointwise, int64_t, const double*, double*) {
    absent("pointwise_forward_avx512");
}
int64_t pointwise_backward_avx512(Pointwise, int64_t, const float*, const float*, float*) {
    absent("pointwise_backward_avx512");
}
int64_t pointwise_backward_avx512(Pointwise, int64_t, const double*, const double*, double*) {
    absent("pointwise_backward_avx512");
}
int64_t pointwise_forward_slope_avx512(Pointwise, int64_t, const float*, float*, float*) {
    absent("pointwise_forward_slope_avx512");
}
int64_t pointwise_forward_slope_avx512(Pointwise, int64_t, const double*, double*, double*) {
    absent("pointwise_forward_slope_avx512");
}
void pointwise_forward_slope_avx2(Pointwise, int64_t, const float*, float*, float*) {
    absent("pointwise_forward_slope_avx2");
}
void pointwise_forward_slope_avx2(Pointwise, int64_t, const double*, double*, double*) {
    absent("pointwise_forward_slope_avx2");
}
void pointwise_forward_avx2(Pointwise, int64_t, const float*, float, float*) {
    absent("pointwise_forward_avx2");
}
void pointwise_backward_avx2(Pointwise, int64_t, const float*, const float*, float, float*) {
    absent("pointwise_backward_avx2");
}
void pointwise_forward_avx2(Pointwise, int64_t, const double*, double, double*) {
    absent("pointwise_forward_avx2");
}
void pointwise_backward_avx2(Pointwise, int64_t, const double*, const double*, double, double*) {
    absent("pointwise_backward_avx2");
}
void erf_avx2(int64_t, const float*, float*) { absent("erf_avx2"); }
double exp_shifted_sum_avx2(int64_t, const double*, double, double*) {
    absent("exp_shifted_sum_avx2");
}
void log_softmax_row_backward_avx2(int64_t, const double*, const double*, double, double*) {
    absent("log_softmax_row_backward_avx2");
}
float exp_shifted_sum_avx2(int64_t, const float*, float, float*) {
    absent("exp_shifted_sum_avx2");
}
void log_softmax_row_backward_avx2(int64_t, const float*, const float*, float, float*) {
    absent("log_softmax_row_backward_avx2");
}

template <typename T>
void channel_norm_forward_avx2(const NormShape&, bool, const NormTail<T>&, double, const T*,
                               const T*, const T*, T*, T*, T*, T*) {
    absent("channel_norm_forward_avx2");
}
template <typename T>
void channel_norm_backward_avx2(const NormShape&, bool, bool, const PointwiseAct<T>&, const T*,
                                const T*, const T*, const T*, const T*, const T*, const T*, T*,
                                T*, T*, T*, double*) {
    absent("channel_norm_backward_avx2");
}
template <typename T>
void layer_norm_forward_avx2(int64_t, int64_t, bool, double, const T*, const T*, const T*, T*,
                             T*, T*) {
    absent("layer_norm_forward_avx2");
}
template <typename T>
void layer_norm_backward_avx2(int64_t, int64_t, bool, const T*, const T*, const T*, const T*,
                              const T*, const T*, T*, T*, T*, double*, double*) {
    absent("layer_norm_backward_avx2");
}
template <typename T>
void group_norm_forward_avx2(int64_t, int64_t, int64_t, int64_t, double, const PointwiseAct<T>&,
                             const GroupPool<T>&, const T*, const T*, const T*, T*, T*, T*) {
    absent("group_norm_forward_avx2");
}
template <typename T>
void group_norm_backward_avx2(int64_t, int64_t, int64_t, int64_t, const PointwiseAct<T>&,
                              const GroupPool<T>&, const T*, const T*, const T*, const T*,
                              const T*, const T*, T*, T*, T*, double*, double*) {
    absent("group_norm_backward_avx2");
}
template <typename T>
void group_norm_forward_avx512(int64_t, int64_t, int64_t, int64_t, double, const PointwiseAct<T>&,
                               const GroupPool<T>&, const T*, const T*, const T*, T*, T*, T*) {
    absent("group_norm_forward_avx512");
}
template <typename T>
void group_norm_backward_avx512(int64_t, int64_t, int64_t, int64_t, const PointwiseAct<T>&,
                                const GroupPool<T>&, const T*, const T*, const T*, const T*,
                                const T*, const T*, T*, T*, T*, double*, double*) {
    absent("group_norm_backward_avx512");
}
#define GRAPHNET_NORM_ABSENT(T)                                                                \
    template void channel_norm_forward_avx2<T>(const NormShape&, bool, const NormTail<T>&,     \
                                               double, const T*, const T*, const T*, T*, T*,   \
                                               T*, T*);                                        \
    template void channel_norm_backward_avx2<T>(const NormShape&, bool, bool,                    \
                                                const PointwiseAct<T>&, const T*, const T*,      \
                                                const T*, const T*, const T*, const T*,          \
                                                const T*, T*, T*, T*, T*, double*);              \
    template void layer_norm_forward_avx2<T>(int64_t, int64_t, bool, double, const T*,         \
                                             const T*, const T*, T*, T*, T*);                  \
    template void layer_norm_backward_avx2<T>(int64_t, int64_t, bool, const T*, const T*,      \
                                              const T*, const T*, const T*, const T*, T*, T*,  \
                                              T*, double*, double*);                           \
    template void group_norm_forward_avx2<T>(int64_t, int64_t, int64_t, int64_t, double,       \
                                             const PointwiseAct<T>&, const GroupPool<T>&,          \
                                             const T*, const T*, const T*, T*, T*, T*);        \
    template void group_norm_backward_avx2<T>(int64_t, int64_t, int64_t, int64_t,              \
                                              const PointwiseAct<T>&, const GroupPool<T>&,         \
                                              const T*, const T*, const T*, const T*,          \
                                              const T*, const T*, T*, T*, T*, double*,         \
                                              double*);                                        \
    template void group_norm_forward_avx512<T>(int64_t, int64_t, int64_t, int64_t, double,     \
                                               const PointwiseAct<T>&, const GroupPool<T>&,        \
                                               const T*, const T*, const T*, T*, T*, T*);      \
    template void group_norm_backward_avx512<T>(int64_t, int64_t, int64_t, int64_t,            \
                                                const PointwiseAct<T>&, const GroupPool<T>&,       \
                                                const T*, const T*, const T*, const T*,        \
                                                const T*, const T*, T*, T*, T*, double*,       \
                                                double*);
GRAPHNET_NORM_ABSENT(float)
GRAPHNET_NORM_ABSENT(double)
#undef GRAPHNET_NORM_ABSENT

template <typename T>
void adam_elements_avx2(const AdamScalars<T>&, int64_t, T*, const T*, T*, T*) {
    absent("adam_elements_avx2");
}
template void adam_elements_avx2<float>(const AdamScalars<float>&, int64_t, float*,
                                        const float*, float*, float*);
template void adam_elements_avx2<double>(const AdamScalars<double>&, int64_t, double*,
                                         const double*, double*, double*);

#define GRAPHNET_DROPOUT_ELEMENTS(name, T)                                                 \
    void name(int64_t, int64_t, uint64_t, uint64_t, T, const T*, T*, T*) { absent(#name); }
GRAPHNET_DROPOUT_ELEMENTS(dropout_elements_avx2, float)
GRAPHNET_DROPOUT_ELEMENTS(dropout_elements_avx2, double)
GRAPHNET_DROPOUT_ELEMENTS(dropout_elements_avx512, float)
GRAPHNET_DROPOUT_ELEMENTS(dropout_elements_avx512, double)
#undef GRAPHNET_DROPOUT_ELEMENTS

}  // namespace graphnet
