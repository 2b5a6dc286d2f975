// A CPU stand-in for the CUDA device runtime, so engine/cuda/emu.rs can run the kernels of
// src/engine/cuda/kernels/ on the host, compiled by the system C++ compiler: each block runs its
// threads as real threads (one std::thread per CUDA thread), __syncthreads is a barrier of the
// block's live threads (a thread that returns drops out, as on the GPU), __shared__ variables are
// statics (blocks run one after another), and a warp shuffle exchanges through a block-wide slot
// array between two barriers (every kernel here shuffles with the whole block). Launch takes the
// arguments as CUDA's does, an array of pointers to the values. 1-D blocks, 2-D grids.
#include <math.h>
#include <string.h>
#include <barrier>
#include <thread>
#include <utility>
#include <vector>

struct dim3 {
    unsigned x, y, z;
};
thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
static std::barrier<>* emu_barrier;
static double emu_slots[1024];
static char emu_dynamic_shared[1 << 16];

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

static inline void __syncthreads() { emu_barrier->arrive_and_wait(); }

template <typename T>
static T __shfl_xor_sync(unsigned, T v, int lane_mask) {
    unsigned t = threadIdx.x;
    emu_slots[t] = (double)v;
    __syncthreads();
    T r = (T)emu_slots[t ^ (unsigned)lane_mask];
    __syncthreads();
    return r;
}

static inline float __int_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline float __uint_as_float(unsigned u) { return __int_as_float(u); }
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline int min(int a, int b) { return a < b ? a : b; }

template <typename... A, size_t... I>
static void emu_call(void (*k)(A...), void** args, std::index_sequence<I...>) {
    k(*(A*)args[I]...);
}

template <typename... A>
static void emu_launch(void (*k)(A...), unsigned gx, unsigned gy, unsigned bx, void** args) {
    gridDim = {gx, gy, 1};
    blockDim = {bx, 1, 1};
    for (unsigned y = 0; y < gy; y++)
        for (unsigned x = 0; x < gx; x++) {
            std::barrier<> bar(bx);
            emu_barrier = &bar;
            std::vector<std::thread> threads;
            for (unsigned t = 0; t < bx; t++)
                threads.emplace_back([=] {
                    threadIdx = {t, 0, 0};
                    blockIdx = {x, y, 0};
                    emu_call(k, args, std::index_sequence_for<A...>{});
                    emu_barrier->arrive_and_drop();
                });
            for (auto& th : threads) th.join();
        }
}
