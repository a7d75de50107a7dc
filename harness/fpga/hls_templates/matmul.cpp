// ${top}: a FINN-style matrix-vector unit, the cost model's "matmul" operator.
//
// For each of N rows (tokens), M outputs are dot products of the row's K inputs with one
// weight row each. PE output lanes and SIMD input lanes work in parallel, so one cycle
// performs PE x SIMD multiply-accumulates and the pipelined fold loop runs
// ceil(M/PE) * ceil(K/SIMD) * N iterations at II=1: the cost model's ideal cycles.
// Inputs and weights are B-bit integers; the accumulator has room for K full-range products.
#include <ap_int.h>

static const int N = ${n};
static const int K = ${k};
static const int M = ${m};
static const int PE = ${pe};
static const int SIMD = ${simd};
static const int B = ${b};
static const int NEURON_FOLDS = (M + PE - 1) / PE;
static const int SYNAPSE_FOLDS = (K + SIMD - 1) / SIMD;
// 2*B bits per product, plus ceil(log2(K)) bits for the sum of K of them.
static const int ACC_BITS = ${acc_bits};

typedef ap_int<B> data_t;
typedef ap_int<ACC_BITS> acc_t;

// Operands arrive folded, one memory per lane, as FINN packs them:
//   activations[s][n][sf]                        input k = sf*SIMD + s of row n,
//   weights[pe*SIMD + s][nf*SYNAPSE_FOLDS + sf]  the weight of output m = nf*PE + pe for k,
//   outputs[pe][n][nf]                           output m of row n.
// Weights past M or K are zero, so partial folds need no test. Vitis HLS partitions arrays on
// the interface along their first dimension only, which is the lane here.
void ${top}(const data_t activations[SIMD][N][SYNAPSE_FOLDS],
            const data_t weights[PE * SIMD][NEURON_FOLDS * SYNAPSE_FOLDS],
            acc_t outputs[PE][N][NEURON_FOLDS]) {
#pragma HLS ARRAY_PARTITION variable=activations complete dim=1
#pragma HLS ARRAY_PARTITION variable=weights complete dim=1
#pragma HLS ARRAY_PARTITION variable=outputs complete dim=1
    acc_t accumulators[PE];
#pragma HLS ARRAY_PARTITION variable=accumulators complete
rows:
    for (int n = 0; n < N; n++) {
    neuron_folds:
        for (int nf = 0; nf < NEURON_FOLDS; nf++) {
        synapse_folds:
            for (int sf = 0; sf < SYNAPSE_FOLDS; sf++) {
#pragma HLS PIPELINE II=1
            pe_lanes:
                for (int pe = 0; pe < PE; pe++) {
                    acc_t sum = (sf == 0) ? acc_t(0) : accumulators[pe];
                simd_lanes:
                    for (int s = 0; s < SIMD; s++) {
                        sum += activations[s][n][sf]
                               * weights[pe * SIMD + s][nf * SYNAPSE_FOLDS + sf];
                    }
                    accumulators[pe] = sum;
                    if (sf == SYNAPSE_FOLDS - 1) {
                        outputs[pe][n][nf] = sum;
                    }
                }
            }
        }
    }
}
