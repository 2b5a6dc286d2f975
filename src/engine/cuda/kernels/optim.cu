// Parameter updates (engine/ops/optim.rs): AdamW (PyTorch's single-tensor formula), the
// momentum encoder's EMA, and LARS: its trust ratio from two f64 norms (block trees, the blocks'
// partials added in block order) computed on the device, so the update never waits for the host.

// One AdamW step on w [n] with gradient g and moments m, v (all in place): w ← w·decay,
// m ← m + w1·(g − m), v ← b2·v + w2·g², w ← w − step_size · m / (√v / bc2_sqrt + eps).
extern "C" __global__ void adamw_update(float* w, const float* g, float* m, float* v, u64 n, float step_size,
                                        float w1, float b2, float w2, float eps, float bc2_sqrt, float decay) {
    FOR_N(i, n) {
        float gi = g[i], wi = w[i] * decay;
        float mi = m[i] + w1 * (gi - m[i]);
        float vi = v[i] * b2 + w2 * gi * gi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        w[i] = wi + -step_size * (mi / denom);
    }
}

// The momentum encoder's EMA: k ← k·a + q·b, [n].
extern "C" __global__ void ema_update(float* k, const float* q, u64 n, float a, float b) {
    FOR_N(i, n) k[i] = k[i] * a + q[i] * b;
}

// LARS's norms, partials [2, gridDim.x] in f64: row 0 Σ w², row 1 Σ (g + wd·w)², block k over a
// grid-stride split fixed by the grid size. Grid: fixed by the launcher.
extern "C" __global__ void lars_norms_partial(double* partials, const float* w, const float* g, u64 n, float wd) {
    __shared__ double sh[32];
    double a = 0.0, b = 0.0;
    FOR_N(i, n) {
        double wi = (double)w[i], ui = (double)(g[i] + wd * w[i]);
        a += wi * wi;
        b += ui * ui;
    }
    a = block_sum_d(a, sh);
    b = block_sum_d(b, sh);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = a;
        partials[gridDim.x + blockIdx.x] = b;
    }
}

// LARS's trust ratio from lars_norms_partial's `blocks` partials: ratio[0] = eta·‖w‖ / ‖g + wd·w‖
// (1 when either norm is 0). One block.
extern "C" __global__ void lars_trust_ratio(float* ratio, const double* partials, int blocks, double eta) {
    __shared__ double sh[32];
    double a = 0.0, b = 0.0;
    for (int i = threadIdx.x; i < blocks; i += blockDim.x) {
        a += partials[i];
        b += partials[blocks + i];
    }
    a = block_sum_d(a, sh);
    b = block_sum_d(b, sh);
    if (threadIdx.x == 0) {
        double pn = sqrt(a), un = sqrt(b);
        ratio[0] = pn > 0.0 && un > 0.0 ? (float)(eta * pn / un) : 1.0f;
    }
}

// One LARS step on w [n] with gradient g and momentum mu (in place), the trust ratio read from
// the device (ratio[0], from lars_trust_ratio, or 1): mu ← momentum·mu + (g + wd·w)·ratio;
// w ← w − lr·mu.
extern "C" __global__ void lars_update(float* w, const float* g, float* mu, const float* ratio, u64 n, float lr,
                                       float momentum, float wd) {
    float r = ratio[0];
    FOR_N(i, n) {
        float u = momentum * mu[i] + (g[i] + wd * w[i]) * r;
        mu[i] = u;
        w[i] -= lr * u;
    }
}
