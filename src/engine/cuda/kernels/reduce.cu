// Element-wise sums, column reductions and norms, and the ViT's token assembly
// (engine/ops/reduce.rs). Column sums are two kernels: *_partial sums fixed chunks of
// CHUNK_ROWS rows (one thread per column), col_partials_finish adds the chunks in order. Sums of
// squares are f64 block trees, each block's partial added in block order by sum_f64_finish.

// partials [chunks, c]: chunk k holds Σ_{r in chunk k} x[r] for x [rows, c].
// Grid: (ceil(c / BLOCK), chunks).
extern "C" __global__ void col_sum_partial(float* partials, const float* x, int rows, int c) {
    int col = blockIdx.x * blockDim.x + threadIdx.x, ch = blockIdx.y;
    if (col >= c) return;
    int r1 = min(rows, (ch + 1) * CHUNK_ROWS);
    float a = 0.0f;
    for (int r = ch * CHUNK_ROWS; r < r1; r++) a += x[(u64)r * c + col];
    partials[(u64)ch * c + col] = a;
}

// out [width] = Σ_k partials[k, col0 .. col0 + width] over the chunks k in order, of partials
// [chunks, stride]; added into out when `accumulate` is nonzero. Grid: ceil(width / BLOCK).
extern "C" __global__ void col_partials_finish(float* out, const float* partials, int chunks, int stride, int col0,
                                               int width, int accumulate) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= width) return;
    float a = 0.0f;
    for (int k = 0; k < chunks; k++) a += partials[(u64)k * stride + col0 + j];
    out[j] = accumulate ? out[j] + a : a;
}

// out[n] = a[n] + b[n].
extern "C" __global__ void add(float* out, const float* a, const float* b, u64 n) {
    FOR_N(i, n) out[i] = a[i] + b[i];
}

// x[n] += y[n].
extern "C" __global__ void add_assign(float* x, const float* y, u64 n) {
    FOR_N(i, n) x[i] += y[i];
}

// x[b·stride + j] += y[b·d + j] for y [rows, d] (e.g. into the cls rows of a token sequence).
extern "C" __global__ void add_rows_strided(float* x, const float* y, int rows, int stride, int d) {
    FOR_N(i, (u64)rows * d) {
        u64 b = i / d, j = i % d;
        x[b * stride + j] += y[i];
    }
}

// Σ x² in f64: partials [gridDim.x], block k summing the elements k·BLOCK + j·gridDim·BLOCK
// (grid-stride, so the split depends on the grid size alone). Grid: fixed by the launcher.
extern "C" __global__ void sum_sq_f64_partial(double* partials, const float* x, u64 n) {
    __shared__ double sh[32];
    double a = 0.0;
    FOR_N(i, n) a += (double)x[i] * (double)x[i];
    a = block_sum_d(a, sh);
    if (threadIdx.x == 0) partials[blockIdx.x] = a;
}

// out[0] = Σ partials[0..n] in f64, one block: a block tree over a grid-stride split.
extern "C" __global__ void sum_f64_finish(double* out, const double* partials, int n) {
    __shared__ double sh[32];
    double a = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) a += partials[i];
    a = block_sum_d(a, sh);
    if (threadIdx.x == 0) out[0] = a;
}

// ViT tokens [batch, t, d]: row 0 of each image the cls token [d], rows 1.. the patch
// embeddings patches [batch·(t−1), d], plus the position embedding pos [t, d] unless null.
extern "C" __global__ void tokens_forward(float* tokens, const float* patches, const float* cls, const float* pos,
                                          int batch, int t, int d) {
    FOR_N(i, (u64)batch * t * d) {
        u64 row = i / d;
        int j = (int)(i % d), b = (int)(row / t), ti = (int)(row % t);
        float v = ti == 0 ? cls[j] : patches[((u64)b * (t - 1) + ti - 1) * d + j];
        if (pos) v += pos[(u64)ti * d + j];
        tokens[i] = v;
    }
}

// Backward of tokens_forward, the cls part: dcls [d] = Σ_b dtokens[b, 0] (images in order).
extern "C" __global__ void tokens_backward_cls(float* dcls, const float* dtokens, int batch, int t, int d) {
    FOR_N(j, d) {
        float a = 0.0f;
        for (int b = 0; b < batch; b++) a += dtokens[(u64)b * t * d + j];
        dcls[j] = a;
    }
}

// Backward of tokens_forward, the patch part: dpatches [batch·(t−1), d] = rows 1.. of each
// image of dtokens. (dpos is col_sum of dtokens as [batch, t·d].)
extern "C" __global__ void tokens_backward_patches(float* dpatches, const float* dtokens, int batch, int t, int d) {
    FOR_N(i, (u64)batch * (t - 1) * d) {
        u64 row = i / d, j = i % d, b = row / (t - 1), ti = row % (t - 1) + 1;
        dpatches[i] = dtokens[(b * t + ti) * d + j];
    }
}
