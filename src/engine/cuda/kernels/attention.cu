// Multi-head self-attention's core, softmax(Q Kᵀ · scale) V (engine/ops/attention.rs), on the
// packed qkv [B·T, 3, H, C/H] (timm's layout), and the row softmax. One block per
// (query row, image·head): its score row lives in dynamic shared memory, every dot product and
// every sum over keys runs in key order, the row's max and sum are block trees. The launchers
// pass scale = attention_scale(d, h) = (d/h)^-1/2 and dynamic shared memory as commented.

// One query row: p [t] (shared) = softmax(q·Kᵀ·scale), written to prob_row [t]; out_row [hd]
// = p·V. `qs` is the query in shared memory [hd]; kv points at this image's qkv rows, offset to
// the head (k at +d, v at +2d of each row of stride 3d).
__device__ void attention_row(float* out_row, float* prob_row, float* p, const float* qs, const float* kv, int t,
                              int d, int hd, float scale, float* sh) {
    float mx = NEG_INF;
    for (int j = threadIdx.x; j < t; j += blockDim.x) {
        const float* k = kv + (u64)j * 3 * d + d;
        float s = 0.0f;
        for (int c = 0; c < hd; c++) s += qs[c] * k[c];
        s *= scale;
        p[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, sh);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < t; j += blockDim.x) {
        float e = expf(p[j] - mx);
        p[j] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum(sum, sh);
    for (int j = threadIdx.x; j < t; j += blockDim.x) {
        p[j] *= inv;
        prob_row[j] = p[j];
    }
    __syncthreads();
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float o = 0.0f;
        for (int j = 0; j < t; j++) o += p[j] * kv[(u64)j * 3 * d + 2 * d + c];
        out_row[c] = o;
    }
}

// out [B·T, C] (heads side by side) and probs [B, H, T, T] written from qkv [B·T, 3C].
// Grid: (t, batch·h); dynamic shared memory (t + hd) floats.
extern "C" __global__ void attention_forward(float* out, float* probs, const float* qkv, int batch, int t, int d,
                                             int h, float scale) {
    extern __shared__ float smem[];
    __shared__ float sh[32];
    int i = blockIdx.x, bh = blockIdx.y, b = bh / h, hi = bh % h, hd = d / h;
    if (i >= t || b >= batch) return;
    const float* kv = qkv + (u64)b * t * 3 * d + hi * hd;
    float *p = smem, *qs = smem + t;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) qs[c] = kv[(u64)i * 3 * d + c];
    __syncthreads();
    attention_row(out + ((u64)b * t + i) * d + hi * hd, probs + ((u64)bh * t + i) * t, p, qs, kv, t, d, hd, scale, sh);
}

// Attention for the cls query (token 0) of each image only: out [B, C] and probs [B, H, T].
// Grid: batch·h; dynamic shared memory (t + hd) floats.
extern "C" __global__ void attention_forward_cls(float* out, float* probs, const float* qkv, int batch, int t, int d,
                                                 int h, float scale) {
    extern __shared__ float smem[];
    __shared__ float sh[32];
    int bh = blockIdx.x, b = bh / h, hi = bh % h, hd = d / h;
    if (b >= batch) return;
    const float* kv = qkv + (u64)b * t * 3 * d + hi * hd;
    float *p = smem, *qs = smem + t;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) qs[c] = kv[c];
    __syncthreads();
    attention_row(out + (u64)b * d + hi * hd, probs + (u64)bh * t, p, qs, kv, t, d, hd, scale, sh);
}

// Backward of attention_forward, first kernel: per query row i, dS_i = P_i ⊙ (dP_i − Σ_j dP_ij
// P_ij) with dP_ij = dO_i·v_j, to scratch [B, H, T, T], and dQ_i = scale·dS_i K written into
// dqkv [B·T, 3C]. Grid: (t, batch·h); dynamic shared memory (t + hd) floats.
extern "C" __global__ void attention_backward_dq(float* dqkv, float* scratch, const float* dout, const float* qkv,
                                                 const float* probs, int batch, int t, int d, int h, float scale) {
    extern __shared__ float smem[];
    __shared__ float sh[32];
    int i = blockIdx.x, bh = blockIdx.y, b = bh / h, hi = bh % h, hd = d / h;
    if (i >= t || b >= batch) return;
    const float* kv = qkv + (u64)b * t * 3 * d + hi * hd;
    const float* p = probs + ((u64)bh * t + i) * t;
    float *ds = smem, *dos = smem + t;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) dos[c] = dout[((u64)b * t + i) * d + hi * hd + c];
    __syncthreads();
    float s = 0.0f;
    for (int j = threadIdx.x; j < t; j += blockDim.x) {
        const float* v = kv + (u64)j * 3 * d + 2 * d;
        float dp = 0.0f;
        for (int c = 0; c < hd; c++) dp += dos[c] * v[c];
        ds[j] = dp;
        s += dp * p[j];
    }
    s = block_sum(s, sh);
    float* srow = scratch + ((u64)bh * t + i) * t;
    for (int j = threadIdx.x; j < t; j += blockDim.x) {
        ds[j] = p[j] * (ds[j] - s);
        srow[j] = ds[j];
    }
    __syncthreads();
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float a = 0.0f;
        for (int j = 0; j < t; j++) a += ds[j] * kv[(u64)j * 3 * d + d + c];
        dqkv[((u64)b * t + i) * 3 * d + hi * hd + c] = scale * a;
    }
}

// Backward of attention_forward, second kernel: per key row j, dK_j = scale·Σ_i dS_ij q_i and
// dV_j = Σ_i P_ij dO_i (queries in order), written into dqkv. Grid: (t, batch·h).
extern "C" __global__ void attention_backward_dkv(float* dqkv, const float* scratch, const float* dout,
                                                  const float* qkv, const float* probs, int batch, int t, int d,
                                                  int h, float scale) {
    int j = blockIdx.x, bh = blockIdx.y, b = bh / h, hi = bh % h, hd = d / h;
    if (j >= t || b >= batch) return;
    const float* q = qkv + (u64)b * t * 3 * d + hi * hd;
    const float* dob = dout + (u64)b * t * d + hi * hd;
    const float* ds = scratch + (u64)bh * t * t + j;
    const float* p = probs + (u64)bh * t * t + j;
    float* row = dqkv + ((u64)b * t + j) * 3 * d + hi * hd;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float dk = 0.0f, dv = 0.0f;
        for (int i = 0; i < t; i++) {
            dk += ds[(u64)i * t] * q[(u64)i * 3 * d + c];
            dv += p[(u64)i * t] * dob[(u64)i * d + c];
        }
        row[d + c] = scale * dk;
        row[2 * d + c] = dv;
    }
}

// Backward of attention_forward_cls from dout [B, C]: the whole dqkv [B·T, 3C] written (zero
// for the other tokens' queries). Grid: batch·h; dynamic shared memory (2t + 2hd) floats.
extern "C" __global__ void attention_backward_cls(float* dqkv, const float* dout, const float* qkv,
                                                  const float* probs, int batch, int t, int d, int h, float scale) {
    extern __shared__ float smem[];
    __shared__ float sh[32];
    int bh = blockIdx.x, b = bh / h, hi = bh % h, hd = d / h;
    if (b >= batch) return;
    const float* kv = qkv + (u64)b * t * 3 * d + hi * hd;
    const float* p = probs + (u64)bh * t;
    float *dpv = smem, *g = smem + t, *dos = smem + 2 * t, *q0 = smem + 2 * t + hd;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        dos[c] = dout[(u64)b * d + hi * hd + c];
        q0[c] = kv[c];
    }
    __syncthreads();
    float s = 0.0f;
    for (int j = threadIdx.x; j < t; j += blockDim.x) {
        const float* v = kv + (u64)j * 3 * d + 2 * d;
        float a = 0.0f;
        for (int c = 0; c < hd; c++) a += dos[c] * v[c];
        dpv[j] = a;
        s += a * p[j];
    }
    s = block_sum(s, sh);
    for (int j = threadIdx.x; j < t; j += blockDim.x) g[j] = p[j] * (dpv[j] - s) * scale;
    __syncthreads();
    float* out = dqkv + (u64)b * t * 3 * d + hi * hd;
    for (int c = threadIdx.x; c < hd; c += blockDim.x) {
        float a = 0.0f;
        for (int j = 0; j < t; j++) a += g[j] * kv[(u64)j * 3 * d + d + c];
        out[c] = a;
    }
    for (int e = threadIdx.x; e < t * hd; e += blockDim.x) {
        int j = e / hd, c = e % hd;
        float* row = out + (u64)j * 3 * d;
        row[d + c] = g[j] * q0[c];
        row[2 * d + c] = p[j] * dos[c];
        if (j > 0) row[c] = 0.0f;
    }
}

// Numerically stable softmax of each row of x [rows, n], in place. Grid: rows blocks.
extern "C" __global__ void softmax_forward_inplace(float* x, int rows, int n) {
    __shared__ float sh[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    float* row = x + (u64)r * n;
    float m = NEG_INF;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, row[i]);
    m = block_max(m, sh);
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float e = expf(row[i] - m);
        row[i] = e;
        s += e;
    }
    float inv = 1.0f / block_sum(s, sh);
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] *= inv;
}
