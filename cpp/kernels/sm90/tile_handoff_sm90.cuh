// A persistent sm90 forward block learns its next tile from its producer warp: the producer takes the tile
// from the scheduler's atomic counter as soon as it has issued the last copy of the current one, so the
// counter's latency hides behind the consumers' work, and hands it over through one shared-memory slot
// guarded by two mbarriers (full: the slot holds the next tile; empty: every consumer has read it).
//
// Publications alternate with reads: the producer publishes the block's second tile without waiting and
// each later one once the consumers have read the one before; the consumers acknowledge every tile they
// will compute, not the final "none left". mbarriers rather than named barriers: their arrive and wait
// order the slot's accesses, which compute-sanitizer's racecheck follows (it reported the named-barrier
// version's slot as racy).
#pragma once

#include <cstdint>

#include <cutlass/arch/barrier.h>

namespace sdpa {
namespace sm90 {

template <int kNConsumerThreads>
struct TileHandoff {
  struct SharedStorage {
    alignas(8) uint64_t full;
    alignas(8) uint64_t empty;
    int next_tile;
  };

  // One thread, before the block's first __syncthreads.
  static __device__ __forceinline__ void init(SharedStorage& s) {
    cutlass::arch::ClusterBarrier::init(&s.full, 1);
    cutlass::arch::ClusterBarrier::init(&s.empty, kNConsumerThreads);
  }

  // Producer warp 0, every lane: `tile` into the slot as the block's publication number `index` (0, 1, ...).
  static __device__ __forceinline__ void publish(SharedStorage& s, int tile, int index) {
    if (index > 0) cutlass::arch::ClusterBarrier::wait(&s.empty, (index - 1) & 1);
    if (threadIdx.x == 0) {
      *reinterpret_cast<volatile int*>(&s.next_tile) = tile;
      cutlass::arch::ClusterBarrier::arrive(&s.full);
    }
  }

  // Consumers: publication number `index`, the tile after their current one (`num_tiles` or more: none left).
  static __device__ __forceinline__ int receive(SharedStorage& s, int index, int num_tiles) {
    cutlass::arch::ClusterBarrier::wait(&s.full, index & 1);
    const int tile = *reinterpret_cast<volatile int*>(&s.next_tile);
    if (tile < num_tiles) cutlass::arch::ClusterBarrier::arrive(&s.empty);
    return tile;
  }
};

}  // namespace sm90
}  // namespace sdpa
