// ${top}: GELU, the cost model's "gelu" operator (the MLP's activation).
//
// R x C values, L per cycle: a loop of ceil(C/L) iterations per row pipelined at II=1, so
// R * ceil(C/L) cycles, the cost model's ideal cycles. It uses the tanh approximation
// 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))).
// Values are B-bit fixed point with B/2 integer bits.
#include <ap_fixed.h>
#include <hls_math.h>

static const int R = ${r};
static const int C = ${c};
static const int L = ${l};
static const int B = ${b};
static const int FOLDS = (C + L - 1) / L;

typedef ap_fixed<B, B / 2> data_t;
// x^3 needs three times the integer bits of x.
typedef ap_fixed<2 * B, 3 * (B / 2)> cube_t;
// tanh is +-1 to B bits beyond |x| = 8, so its argument saturates there instead of wrapping;
// hls::tanh returns its argument's type, so the argument carries B fractional bits.
typedef ap_fixed<B + 4, 4, AP_RND, AP_SAT> saturated_arg_t;
// hls_math takes plain ap_fixed (default quantization and overflow modes) only.
typedef ap_fixed<B + 4, 4> tanh_arg_t;
typedef ap_fixed<B + 2, 2> coefficient_t;

static const coefficient_t SQRT_2_OVER_PI = 0.7978845608;
static const coefficient_t CUBIC = 0.044715;
static const coefficient_t HALF = 0.5;

// Rows arrive folded, one memory per lane: inputs[l][r][f] is value c = f*L + l of row r.
// Vitis HLS partitions arrays on the interface along their first dimension only.
void ${top}(const data_t inputs[L][R][FOLDS], data_t outputs[L][R][FOLDS]) {
#pragma HLS ARRAY_PARTITION variable=inputs complete dim=1
#pragma HLS ARRAY_PARTITION variable=outputs complete dim=1
rows:
    for (int r = 0; r < R; r++) {
    folds:
        for (int f = 0; f < FOLDS; f++) {
#pragma HLS PIPELINE II=1
            for (int l = 0; l < L; l++) {
                if (f * L + l < C) {
                    const data_t x = inputs[l][r][f];
                    const cube_t cube = x * x * x;
                    const saturated_arg_t saturated = SQRT_2_OVER_PI * (x + CUBIC * cube);
                    const tanh_arg_t argument = saturated;
                    outputs[l][r][f] = HALF * x * (1 + hls::tanh(argument));
                }
            }
        }
    }
}
