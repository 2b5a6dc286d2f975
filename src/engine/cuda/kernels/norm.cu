// Normalisation kernels (engine/ops/norm.rs): LayerNorm over the last dimension (PyTorch
// semantics, biased variance, two passes as the CPU) and the per-channel pieces of BatchNorm.
// Per-row work is one block per row; per-channel sums are column partials over fixed chunks of
// CHUNK_ROWS rows, added in chunk order by *_finish, so the result depends on the shape alone.

// LayerNorm of inp [rows, c] into out [rows, out_stride] (out_stride c, or c + 1 with a last
// column of ones), per-row mean and 1/std to stats [rows, 2]. Grid: rows blocks.
extern "C" __global__ void layernorm_forward(float* out, float* stats, const float* inp, const float* weight,
                                             const float* bias, int rows, int c, int out_stride, float eps) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = inp + (u64)r * c;
    float s = 0.0f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) s += x[i];
    float mean = block_sum(s, sh) / (float)c;
    float q = 0.0f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) {
        float d = x[i] - mean;
        q += d * d;
    }
    float var = block_sum(q, sh) / (float)c;
    float rstd = 1.0f / sqrtf(var + eps);
    float* y = out + (u64)r * out_stride;
    for (int i = threadIdx.x; i < c; i += blockDim.x) y[i] = (x[i] - mean) * rstd * weight[i] + bias[i];
    if (threadIdx.x == 0) {
        if (out_stride > c) y[c] = 1.0f;
        stats[2 * r] = mean;
        stats[2 * r + 1] = rstd;
    }
}

// Backward of layernorm_forward (out_stride c), the input gradient: dinp [rows, c] written.
// Grid: rows blocks.
extern "C" __global__ void layernorm_backward(float* dinp, const float* dout, const float* inp, const float* weight,
                                              const float* stats, int rows, int c) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = inp + (u64)r * c;
    const float* dy = dout + (u64)r * c;
    float mean = stats[2 * r], rstd = stats[2 * r + 1];
    float a1 = 0.0f, a2 = 0.0f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) {
        float dxh = dy[i] * weight[i];
        a1 += dxh;
        a2 += dxh * (x[i] - mean) * rstd;
    }
    float m1 = block_sum(a1, sh) / (float)c;
    float m2 = block_sum(a2, sh) / (float)c;
    float* o = dinp + (u64)r * c;
    for (int i = threadIdx.x; i < c; i += blockDim.x) {
        float xh = (x[i] - mean) * rstd;
        o[i] = rstd * (dy[i] * weight[i] - m1 - xh * m2);
    }
}

// LayerNorm's weight gradient, partial sums: partials [chunks, c], chunk k holding
// Σ_{r in chunk k} dout[r]·(inp[r] − mean_r)·rstd_r. Grid: (ceil(c / BLOCK), chunks).
extern "C" __global__ void layernorm_dweight_partial(float* partials, const float* dout, const float* inp,
                                                     const float* stats, int rows, int c) {
    int col = blockIdx.x * blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (col >= c) return;
    int r1 = min(rows, (ch + 1) * CHUNK_ROWS);
    float a = 0.0f;
    for (int r = ch * CHUNK_ROWS; r < r1; r++) {
        u64 i = (u64)r * c + col;
        a += dout[i] * (inp[i] - stats[2 * r]) * stats[2 * r + 1];
    }
    partials[(u64)ch * c + col] = a;
}

// out[r] = inp[r]·alpha + shift per channel, [rows, c] (BatchNorm's transform); max(0, ·) of it
// when relu (a ReLU in place after the BatchNorm).
extern "C" __global__ void batchnorm_affine(float* out, const float* inp, const float* alpha, const float* shift,
                                            int rows, int c, int relu) {
    FOR_N(i, (u64)rows * c) {
        int k = (int)(i % c);
        float v = inp[i] * alpha[k] + shift[k];
        out[i] = relu ? fmaxf(v, 0.0f) : v;
    }
}

// Σ inp per channel over rows [row0, row1) of inp [rows, c], partials [chunks, c] (chunks of
// CHUNK_ROWS rows from row0). Grid: (ceil(c / BLOCK), chunks).
extern "C" __global__ void batchnorm_sum_partial(float* partials, const float* inp, int row0, int row1, int c) {
    int col = blockIdx.x * blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (col >= c) return;
    int r0 = row0 + ch * CHUNK_ROWS, r1 = min(row1, r0 + CHUNK_ROWS);
    float a = 0.0f;
    for (int r = r0; r < r1; r++) a += inp[(u64)r * c + col];
    partials[(u64)ch * c + col] = a;
}

// Σ (inp − mean)² per channel over rows [row0, row1), partials [chunks, c]. Grid as above.
extern "C" __global__ void batchnorm_sq_dev_partial(float* partials, const float* inp, const float* mean, int row0,
                                                    int row1, int c) {
    int col = blockIdx.x * blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (col >= c) return;
    int r0 = row0 + ch * CHUNK_ROWS, r1 = min(row1, r0 + CHUNK_ROWS);
    float m = mean[col], a = 0.0f;
    for (int r = r0; r < r1; r++) {
        float d = inp[(u64)r * c + col] - m;
        a += d * d;
    }
    partials[(u64)ch * c + col] = a;
}

// BatchNorm's two backward sums over rows [row0, row1), partials [chunks, 2c]: columns 0..c
// Σ dout·(inp − mean)·rstd (sdyx), columns c..2c Σ dout (sdy); with has_mask, dout is 0 where
// mask (a following ReLU's output) is not positive. Grid as above.
extern "C" __global__ void batchnorm_grad_sums_partial(float* partials, const float* dout, const float* inp,
                                                       const float* mean, const float* rstd, int row0, int row1,
                                                       int c, const float* mask, int has_mask) {
    int col = blockIdx.x * blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (col >= c) return;
    int r0 = row0 + ch * CHUNK_ROWS, r1 = min(row1, r0 + CHUNK_ROWS);
    float m = mean[col], s = rstd[col], a = 0.0f, b = 0.0f;
    for (int r = r0; r < r1; r++) {
        u64 i = (u64)r * c + col;
        float d = has_mask && mask[i] <= 0.0f ? 0.0f : dout[i];
        a += d * (inp[i] - m) * s;
        b += d;
    }
    partials[(u64)ch * 2 * c + col] = a;
    partials[(u64)ch * 2 * c + c + col] = b;
}

// BatchNorm's training-mode input gradient, per channel dinp = dout·A + inp·B + C, [rows, c];
// dout masked as in batchnorm_grad_sums_partial.
extern "C" __global__ void batchnorm_backward_dx(float* dinp, const float* dout, const float* inp, const float* ca,
                                                 const float* cb, const float* cc, int rows, int c,
                                                 const float* mask, int has_mask) {
    FOR_N(i, (u64)rows * c) {
        int k = (int)(i % c);
        float d = has_mask && mask[i] <= 0.0f ? 0.0f : dout[i];
        dinp[i] = d * ca[k] + inp[i] * cb[k] + cc[k];
    }
}
