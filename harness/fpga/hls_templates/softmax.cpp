// ${top}: row-wise softmax, the cost model's "softmax" operator (attention scores).
//
// R rows of C values each, L values per cycle. Three passes over each row, each a loop of
// ceil(C/L) iterations pipelined at II=1: the row maximum, the sum of exp(x - max), and the
// normalization. The cost model's ideal cycles, R * ceil(C/L), count one pass; a calibration
// from this kernel's report absorbs the constant factor and the pipeline fill.
// Values are B-bit fixed point with B/2 integer bits; exp results lie in (0, 1].
#include <ap_fixed.h>
#include <hls_math.h>

static const int R = ${r};
static const int C = ${c};
static const int L = ${l};
static const int B = ${b};
static const int FOLDS = (C + L - 1) / L;
// Integer bits that hold a sum of C values of at most 1.
static const int SUM_INT_BITS = ${sum_int_bits};

typedef ap_fixed<B, B / 2> data_t;
// x - max needs one integer bit more than x so that min - max does not wrap, and hls::exp
// returns its argument's type, so B fractional bits keep the exponentials at full precision.
typedef ap_fixed<B / 2 + 1 + B, B / 2 + 1> diff_t;
typedef ap_ufixed<B, 1> prob_t;
typedef ap_ufixed<B + SUM_INT_BITS, SUM_INT_BITS> sum_t;
// 1/sum is at least 1/C: as many fractional bits as the sum has bits.
typedef ap_ufixed<B + SUM_INT_BITS, 1> recip_t;

static const data_t LOWEST = -(1 << (B / 2 - 1));

// Rows arrive folded, one memory per lane: scores[l][r][f] is value c = f*L + l of row r.
// Vitis HLS partitions arrays on the interface along their first dimension only.
void ${top}(const data_t scores[L][R][FOLDS], prob_t probabilities[L][R][FOLDS]) {
#pragma HLS ARRAY_PARTITION variable=scores complete dim=1
#pragma HLS ARRAY_PARTITION variable=probabilities complete dim=1
    prob_t exponentials[L][FOLDS];
#pragma HLS ARRAY_PARTITION variable=exponentials complete dim=1
    // One partial result per lane, so each pipelined iteration has no dependence between lanes.
    data_t lane_max[L];
    sum_t lane_sum[L];
#pragma HLS ARRAY_PARTITION variable=lane_max complete
#pragma HLS ARRAY_PARTITION variable=lane_sum complete
rows:
    for (int r = 0; r < R; r++) {
    max_pass:
        for (int f = 0; f < FOLDS; f++) {
#pragma HLS PIPELINE II=1
            for (int l = 0; l < L; l++) {
                // Lanes past the end of a row see the lowest value, which never wins.
                const data_t candidate = f * L + l < C ? scores[l][r][f] : LOWEST;
                if (f == 0 || candidate > lane_max[l]) {
                    lane_max[l] = candidate;
                }
            }
        }
        data_t row_max = lane_max[0];
        for (int l = 1; l < L; l++) {
#pragma HLS UNROLL
            if (lane_max[l] > row_max) {
                row_max = lane_max[l];
            }
        }
    exp_sum_pass:
        for (int f = 0; f < FOLDS; f++) {
#pragma HLS PIPELINE II=1
            for (int l = 0; l < L; l++) {
                if (f == 0) {
                    lane_sum[l] = 0;
                }
                if (f * L + l < C) {
                    const diff_t shifted = scores[l][r][f] - row_max;
                    const prob_t exponential = hls::exp(shifted);
                    exponentials[l][f] = exponential;
                    lane_sum[l] += exponential;
                }
            }
        }
        sum_t row_sum = 0;
        for (int l = 0; l < L; l++) {
#pragma HLS UNROLL
            row_sum += lane_sum[l];
        }
        // The row maximum contributes exp(0) = 1, so the sum is at least 1.
        const recip_t inverse_sum = recip_t(1) / row_sum;
    normalize_pass:
        for (int f = 0; f < FOLDS; f++) {
#pragma HLS PIPELINE II=1
            for (int l = 0; l < L; l++) {
                if (f * L + l < C) {
                    probabilities[l][r][f] = exponentials[l][f] * inverse_sum;
                }
            }
        }
    }
}
