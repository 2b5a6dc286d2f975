// Element-wise activations (engine/ops/act.rs): GELU in its exact erf form (PyTorch's default
// `nn.GELU()`) and ReLU. One thread per element, grid-stride.

#define INV_SQRT_2PI 0.3989422804014327f
#define FRAC_1_SQRT_2 0.7071067811865476f

// out[n] = gelu(inp[n]) = inp·Φ(inp).
extern "C" __global__ void gelu_forward(float* out, const float* inp, u64 n) {
    FOR_N(i, n) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * FRAC_1_SQRT_2));
    }
}

// d[n] holds dout on entry and dinp on return: dinp = dout · (Φ(inp) + inp·φ(inp)).
extern "C" __global__ void gelu_backward_inplace(float* d, const float* inp, u64 n) {
    FOR_N(i, n) {
        float x = inp[i];
        float g = 0.5f * (1.0f + erff(x * FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
        d[i] *= g;
    }
}

// out[n] = max(inp[n], 0).
extern "C" __global__ void relu_forward(float* out, const float* inp, u64 n) {
    FOR_N(i, n) out[i] = fmaxf(inp[i], 0.0f);
}

// x[n] = max(x[n], 0), in place.
extern "C" __global__ void relu_inplace(float* x, u64 n) {
    FOR_N(i, n) x[i] = fmaxf(x[i], 0.0f);
}

// d[n] holds dout on entry and dinp on return: zero where the ReLU's output out[n] is not
// positive.
extern "C" __global__ void relu_backward_inplace(float* d, const float* out, u64 n) {
    FOR_N(i, n) if (out[i] <= 0.0f) d[i] = 0.0f;
}
