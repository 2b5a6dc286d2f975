// The Linear layers' helpers around the cuBLASLt GEMMs (engine/ops/matmul.rs): the product
// itself is cuBLASLt's (bf16 inputs, f32 accumulate); these write what it reads or adds to.

// y [rows, oc] = the bias [oc] in every row (matmul_forward's bias, before the GEMM adds into y).
extern "C" __global__ void fill_rows(float* y, const float* bias, int rows, int oc) {
    FOR_N(i, (u64)rows * oc) y[i] = bias[i % oc];
}

// wb [oc, c + 1] = [weight bias]: weight [oc, c] with the bias as a last column
// (matmul_forward_aug's weight, multiplied by the ones-augmented input).
extern "C" __global__ void matmul_aug_weight(float* wb, const float* weight, const float* bias, int oc, int c) {
    FOR_N(i, (u64)oc * (c + 1)) {
        u64 r = i / (c + 1), j = i % (c + 1);
        wb[i] = j < (u64)c ? weight[r * c + j] : bias[r];
    }
}
