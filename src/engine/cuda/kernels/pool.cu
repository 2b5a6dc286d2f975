// Pooling on NHWC activations (engine/ops/pool.rs): max pooling (PyTorch's MaxPool2d: padding
// never wins, the first maximum in (kh, kw) order is kept) and the global average pool.

// Max pool of inp [images, h, w, c] (kernel k, stride s, padding p): out [images, oh, ow, c]
// and argmax (the input index of each maximum) written.
extern "C" __global__ void maxpool_forward(float* out, u32* argmax, const float* inp, int images, int h, int w,
                                           int c, int k, int s, int p, int oh, int ow) {
    FOR_N(i, (u64)images * oh * ow * c) {
        int ch = (int)(i % c), ox = (int)((i / c) % ow), oy = (int)((i / ((u64)c * ow)) % oh);
        u64 n = i / ((u64)c * ow * oh);
        float best = NEG_INF;
        u32 at = 0;
        for (int ki = 0; ki < k; ki++) {
            int iy = oy * s + ki - p;
            if (iy < 0 || iy >= h) continue;
            for (int kj = 0; kj < k; kj++) {
                int ix = ox * s + kj - p;
                if (ix < 0 || ix >= w) continue;
                u64 j = ((n * h + iy) * w + ix) * c + ch;
                if (inp[j] > best) {
                    best = inp[j];
                    at = (u32)j;
                }
            }
        }
        out[i] = best;
        argmax[i] = at;
    }
}

// Backward of maxpool_forward: dinp [images, h, w, c] written, each input the sum of the output
// gradients whose maximum it was (outputs in (oy, ox) order).
extern "C" __global__ void maxpool_backward(float* dinp, const float* dout, const u32* argmax, int images, int h,
                                            int w, int c, int k, int s, int p, int oh, int ow) {
    FOR_N(i, (u64)images * h * w * c) {
        int ch = (int)(i % c), ix = (int)((i / c) % w), iy = (int)((i / ((u64)c * w)) % h);
        u64 n = i / ((u64)c * w * h);
        float a = 0.0f;
        for (int oy = 0; oy < oh; oy++) {
            int ki = iy + p - oy * s;
            if (ki < 0 || ki >= k) continue;
            for (int ox = 0; ox < ow; ox++) {
                int kj = ix + p - ox * s;
                if (kj < 0 || kj >= k) continue;
                u64 j = ((n * oh + oy) * ow + ox) * c + ch;
                if (argmax[j] == (u32)i) a += dout[j];
            }
        }
        dinp[i] = a;
    }
}

// Mean over the spatial positions: inp [images, hw, c] → out [images, c] (positions in order).
extern "C" __global__ void global_avg_forward(float* out, const float* inp, int images, int hw, int c) {
    FOR_N(i, (u64)images * c) {
        u64 n = i / c, ch = i % c;
        float a = 0.0f;
        for (int q = 0; q < hw; q++) a += inp[(n * hw + q) * c + ch];
        out[i] = a / (float)hw;
    }
}

// Backward of global_avg_forward: dinp [images, hw, c] = dout[image, c] / hw.
extern "C" __global__ void global_avg_backward(float* dinp, const float* dout, int images, int hw, int c) {
    FOR_N(i, (u64)images * hw * c) {
        u64 ch = i % c, n = i / ((u64)hw * c);
        dinp[i] = dout[n * c + ch] / (float)hw;
    }
}
