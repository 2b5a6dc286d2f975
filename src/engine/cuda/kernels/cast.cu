// f32 <-> bf16 casts for the cuBLASLt GEMMs (bf16 inputs, f32 accumulate). bf16 is kept as its
// 16 raw bits (u16), so the casts need no cuda_bf16.h: f32 -> bf16 rounds to nearest, ties to
// even, and keeps NaNs NaN (quiet); bf16 -> f32 is exact.

__device__ __forceinline__ u16 f32_to_bf16_bits(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x0040u);
    u32 lsb = (u >> 16) & 1u;
    return (u16)((u + 0x7fffu + lsb) >> 16);
}

// out[n] = bf16(inp[n]).
extern "C" __global__ void cast_f32_to_bf16(u16* out, const float* inp, u64 n) {
    FOR_N(i, n) out[i] = f32_to_bf16_bits(inp[i]);
}

// out[n] = f32(inp[n]).
extern "C" __global__ void cast_bf16_to_f32(float* out, const u16* inp, u64 n) {
    FOR_N(i, n) out[i] = __uint_as_float(((u32)inp[i]) << 16);
}
