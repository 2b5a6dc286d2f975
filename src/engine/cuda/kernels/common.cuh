// Prelude of every kernel file (prepended by engine/cuda/nvrtc.rs, so NVRTC needs no include
// path): fixed-size integer types, the launch geometry the launchers use, and the block-wide
// reductions. Every reduction here runs in an order fixed by the block size and the data's
// shape: warp butterflies (__shfl_xor_sync) then the warps' results in warp order; no atomics
// on floats, so a kernel gives the same bits on every run.

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

// Threads per block of every launch (a multiple of 32: the shuffles use the full warp mask).
#define BLOCK 256
// Rows per partial sum of the column reductions (col_sum, LayerNorm's dweight, BatchNorm's
// sums): a fixed chunk, so the partials and their order depend on the shape alone.
#define CHUNK_ROWS 64
// -inf (NVRTC compiles without math.h).
#define NEG_INF __int_as_float(0xff800000)

// Grid-stride loop over n elements.
#define FOR_N(i, n) for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (u64)(n); i += (u64)gridDim.x * blockDim.x)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum of v over the block, returned to every thread. `sh` is 32 floats of shared memory; a
// __syncthreads() on entry lets consecutive calls reuse it.
__device__ float block_sum(float v, float* sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}

// Max of v over the block, returned to every thread (as block_sum).
__device__ float block_max(float v, float* sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : NEG_INF;
    return warp_max(v);
}

// Sum in f64 over the block (as block_sum; `sh` is 32 doubles).
__device__ double block_sum_d(double v, double* sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0;
    return warp_sum_d(v);
}
