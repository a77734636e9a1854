// Binary (1-bit) convolution: bit-packing and XNOR-popcount convolution over packed words.
// Plain C++17; no Python, no torch. Conventions (pinned by the tests):
//   sign(x) = +1 for x >= 0, -1 otherwise (NaN -> -1); a set bit means -1.
//   Packed activations are channels-last: [N][H + 2*ph][W + 2*pw][words], words = ceil(C / 64);
//   the spatial border is all-zero bits (= +1), channel tail bits are zero in activations and
//   weights alike, so they never count as mismatches.
// The public interface, one header per concern:
//   geometry.h     ConvShape, its validation and the size limits
//   buffer.h       WordBuffer, the aligned zeroed buffer of the packed layouts
//   weights.h      PackedWeights (weight packing)
//   padding.h      CorrectionTable (the padding correction for pad_value 0 and -1)
//   activations.h  PackedActivations, pack_activations
//   driver.h       binary_conv2d, binary_conv2d_sign and their fused epilogue
//   dispatch.h     the instruction sets and which one is active
// reference.h is the naive convolution the tests hold every path to. Internal: checks.h (the
// argument checks), kernels.h and micro_kernel.h (the driver's interface to the per-ISA kernels).
#pragma once
#include "activations.h"
#include "buffer.h"
#include "dispatch.h"
#include "driver.h"
#include "geometry.h"
#include "padding.h"
#include "weights.h"
