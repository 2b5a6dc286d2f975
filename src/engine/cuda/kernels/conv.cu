// Convolution as im2col + GEMM on NHWC activations (engine/ops/conv.rs), the NCHW → NHWC
// layout change and the patch embedding's im2col. Column order (kh, kw, in); swap_inner_axes turns
// PyTorch's weight layout [out, in, kh, kw] into it. One thread per written element; col2im gathers
// each input pixel's gradient over the output positions in (oy, ox) order, the order the CPU adds
// them in.

// Images [n, c, hw] (NCHW) into out [n, hw, c] (NHWC).
extern "C" __global__ void nchw_to_nhwc(float* out, const float* inp, int n, int c, int hw) {
    FOR_N(i, (u64)n * hw * c) {
        u64 ch = i % c, pix = (i / c) % hw, img = i / ((u64)c * hw);
        out[i] = inp[(img * c + ch) * hw + pix];
    }
}

// The im2col columns of inp (NHWC [images, h, w, c], kernel k, stride s, zero padding p) into
// cols [images·oh·ow, k·k·c]: one row per output pixel, ordered (kh, kw, in).
extern "C" __global__ void im2col(float* cols, const float* inp, int images, int h, int w, int c, int k, int s,
                                  int p, int oh, int ow) {
    u64 kk = (u64)c * k * k;
    FOR_N(i, (u64)images * oh * ow * kk) {
        u64 r = i / kk;
        int e = (int)(i % kk), ci = e % c, ki = e / (c * k), kj = (e / c) % k;
        int n = (int)(r / ((u64)oh * ow)), rem = (int)(r % ((u64)oh * ow)), oy = rem / ow, ox = rem % ow;
        int iy = oy * s + ki - p, ix = ox * s + kj - p;
        cols[i] = iy >= 0 && ix >= 0 && iy < h && ix < w ? inp[(((u64)n * h + iy) * w + ix) * c + ci] : 0.0f;
    }
}

// Backward of im2col: dinp [images, h, w, c] written, each pixel the sum of its column entries.
extern "C" __global__ void col2im(float* dinp, const float* dcols, int images, int h, int w, int c, int k, int s,
                                  int p, int oh, int ow) {
    u64 kk = (u64)c * k * k;
    FOR_N(i, (u64)images * h * w * c) {
        int ci = (int)(i % c), ix = (int)((i / c) % w), iy = (int)((i / ((u64)c * w)) % h);
        u64 n = i / ((u64)c * w * h);
        float a = 0.0f;
        for (int oy = 0; oy < oh; oy++) {
            int ki = iy + p - oy * s;
            if (ki < 0 || ki >= k) continue;
            for (int ox = 0; ox < ow; ox++) {
                int kj = ix + p - ox * s;
                if (kj < 0 || kj >= k) continue;
                a += dcols[((n * oh + oy) * ow + ox) * kk + (u64)(ki * k + kj) * c + ci];
            }
        }
        dinp[i] = a;
    }
}

// out [batch, b, a] = inp [batch, a, b] with the inner axes swapped: a convolution weight
// [out, in, kh·kw] into the columns' order [out, kh·kw, in], and its gradient back.
extern "C" __global__ void swap_inner_axes(float* out, const float* inp, int batch, int a, int b) {
    FOR_N(i, (u64)batch * a * b) {
        u64 per = (u64)a * b, t = i / per;
        int e = (int)(i % per), y = e / a, x = e % a;
        out[i] = inp[t * per + (u64)x * b + y];
    }
}

// Patches of NCHW images inp [batch, c, img, img] into cols [batch·g², c·p·p] (g = img / p;
// rows (image, patch row, patch column), columns (c, kh, kw)).
extern "C" __global__ void patchify(float* cols, const float* inp, int batch, int c, int img, int p) {
    int g = img / p;
    u64 k = (u64)c * p * p;
    FOR_N(i, (u64)batch * g * g * k) {
        u64 r = i / k;
        int e = (int)(i % k), ch = e / (p * p), ki = (e / p) % p, kj = e % p;
        int b = (int)(r / ((u64)g * g)), pi = (int)(r % ((u64)g * g)), gi = pi / g, gj = pi % g;
        cols[i] = inp[(((u64)b * c + ch) * img + gi * p + ki) * img + gj * p + kj];
    }
}
