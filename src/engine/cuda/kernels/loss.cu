// Row L2 normalisation (F.normalize) and softmax cross-entropy (engine/ops/loss.rs). One block
// per row; the loss's per-row terms are f64 and summed in order by sum_f64_finish.

// out [rows, d] = each row of inp divided by max(‖row‖, 1e-12); the divisors to norms [rows].
// Grid: rows blocks.
extern "C" __global__ void l2norm_forward(float* out, float* norms, const float* inp, int rows, int d) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = inp + (u64)r * d;
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += x[i] * x[i];
    float n = fmaxf(sqrtf(block_sum(s, sh)), 1e-12f);
    for (int i = threadIdx.x; i < d; i += blockDim.x) out[(u64)r * d + i] = x[i] / n;
    if (threadIdx.x == 0) norms[r] = n;
}

// l2norm_forward in place without keeping the norms: x [rows, d]. Grid: rows blocks.
extern "C" __global__ void l2norm_inplace(float* x, int rows, int d) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    float* xr = x + (u64)r * d;
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += xr[i] * xr[i];
    float n = fmaxf(sqrtf(block_sum(s, sh)), 1e-12f);
    for (int i = threadIdx.x; i < d; i += blockDim.x) xr[i] /= n;
}

// Backward of l2norm_forward: dinp = (dout − out·(out·dout)) / norm per row, [rows, d] written.
// Grid: rows blocks.
extern "C" __global__ void l2norm_backward(float* dinp, const float* dout, const float* out, const float* norms,
                                           int rows, int d) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* q = out + (u64)r * d;
    const float* g = dout + (u64)r * d;
    float s = 0.0f;
    for (int i = threadIdx.x; i < d; i += blockDim.x) s += q[i] * g[i];
    s = block_sum(s, sh);
    float inv = 1.0f / norms[r];
    for (int i = threadIdx.x; i < d; i += blockDim.x) dinp[(u64)r * d + i] = (g[i] - q[i] * s) * inv;
}

// Softmax cross-entropy of logits [rows, c] against labels [rows], forward and backward in one
// pass: row_loss [rows] = logsumexp(row) − logit[label] (f64; sum_f64_finish adds them), and the
// logits replaced by grad_scale·(softmax − onehot(label)). Precise expf/logf, as the CPU's.
// Grid: rows blocks.
extern "C" __global__ void crossentropy_softmax_inplace(float* logits, double* row_loss, const u32* labels, int rows,
                                                        int c, float grad_scale) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    float* x = logits + (u64)r * c;
    float m = NEG_INF;
    for (int i = threadIdx.x; i < c; i += blockDim.x) m = fmaxf(m, x[i]);
    m = block_max(m, sh);
    float s = 0.0f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) s += expf(x[i] - m);
    float lse = m + logf(block_sum(s, sh));
    u32 l = labels[r];
    // Every thread reads the label's logit before any thread overwrites it.
    float xl = x[l];
    __syncthreads();
    for (int i = threadIdx.x; i < c; i += blockDim.x) {
        float g = expf(x[i] - lse) * grad_scale;
        x[i] = i == (int)l ? g - grad_scale : g;
    }
    if (threadIdx.x == 0) row_loss[r] = (double)(lse - xl);
}
