// ${top}: LayerNorm over the last dimension, the cost model's "layernorm" operator.
//
// R rows of C values each, L values per cycle. Two passes over each row, each a loop of
// ceil(C/L) iterations pipelined at II=1: the sums that give mean and variance, then
// (x - mean) / sqrt(variance + epsilon) * gamma + beta. The cost model's ideal cycles,
// R * ceil(C/L), count one pass; a calibration from this kernel's report absorbs the rest.
// Values are B-bit fixed point with B/2 integer bits; statistics carry B fractional bits.
#include <ap_fixed.h>
#include <hls_math.h>

static const int R = ${r};
static const int C = ${c};
static const int L = ${l};
static const int B = ${b};
static const int FOLDS = (C + L - 1) / L;
// Integer bits that a sum of C values (and of C squares) needs beyond one value's.
static const int GROWTH_BITS = ${growth_bits};

typedef ap_fixed<B, B / 2> data_t;
typedef ap_fixed<B + GROWTH_BITS, B / 2 + GROWTH_BITS> sum_t;
typedef ap_fixed<2 * B + GROWTH_BITS, B + GROWTH_BITS> square_sum_t;
typedef ap_fixed<2 * B, B> stat_t;
// 1/C is at least 2^-GROWTH_BITS: B significant bits after the leading zeros.
typedef ap_ufixed<B + GROWTH_BITS + 1, 1> reciprocal_t;

// Dividing by a constant is multiplying by its reciprocal: no divider per row.
static const reciprocal_t INVERSE_C = 1.0 / C;
// 2^-B, the smallest step of stat_t: about PyTorch's default 1e-5 at 16 bits, and never zero.
static const stat_t EPSILON = ${epsilon};

// Rows arrive folded, one memory per lane: inputs[l][r][f] is value c = f*L + l of row r, and
// gamma[l][f] and beta[l][f] that column's scale and shift. Vitis HLS partitions arrays on the
// interface along their first dimension only.
void ${top}(const data_t inputs[L][R][FOLDS], const data_t gamma[L][FOLDS],
            const data_t beta[L][FOLDS], data_t outputs[L][R][FOLDS]) {
#pragma HLS ARRAY_PARTITION variable=inputs complete dim=1
#pragma HLS ARRAY_PARTITION variable=gamma complete dim=1
#pragma HLS ARRAY_PARTITION variable=beta complete dim=1
#pragma HLS ARRAY_PARTITION variable=outputs complete dim=1
    // One partial sum per lane, so each pipelined iteration has no dependence between lanes.
    sum_t lane_sum[L];
    square_sum_t lane_square_sum[L];
#pragma HLS ARRAY_PARTITION variable=lane_sum complete
#pragma HLS ARRAY_PARTITION variable=lane_square_sum complete
rows:
    for (int r = 0; r < R; r++) {
    statistics_pass:
        for (int f = 0; f < FOLDS; f++) {
#pragma HLS PIPELINE II=1
            for (int l = 0; l < L; l++) {
                if (f == 0) {
                    lane_sum[l] = 0;
                    lane_square_sum[l] = 0;
                }
                if (f * L + l < C) {
                    const data_t x = inputs[l][r][f];
                    lane_sum[l] += x;
                    lane_square_sum[l] += x * x;
                }
            }
        }
        sum_t row_sum = 0;
        square_sum_t row_square_sum = 0;
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            row_sum += lane_sum[l];
            row_square_sum += lane_square_sum[l];
        }
        const stat_t mean = row_sum * INVERSE_C;
        stat_t variance = row_square_sum * INVERSE_C - mean * mean;
        // Rounding can take a variance of (nearly) zero below zero, out of sqrt's domain.
        if (variance < 0) {
            variance = 0;
        }
        const stat_t deviation = hls::sqrt(stat_t(variance + EPSILON));
        const stat_t inverse_deviation = stat_t(1) / deviation;
    normalize_pass:
        for (int f = 0; f < FOLDS; f++) {
#pragma HLS PIPELINE II=1
            for (int l = 0; l < L; l++) {
                if (f * L + l < C) {
                    const stat_t normalized = (inputs[l][r][f] - mean) * inverse_deviation;
                    outputs[l][r][f] = normalized * gamma[l][f] + beta[l][f];
                }
            }
        }
    }
}
