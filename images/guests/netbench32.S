/*
 * netbench32: virtnet32 as a virtio-net benchmark for `cargo xtask bench` (virtio-net-rr):
 * full-size frames, and after the first answer "fugu-guest: netbench running" on COM1,
 * 20000 more rounds of frame out and answer back (the host side echoes every frame), then
 * "fugu-guest: netbench done" and the usual success exit (fugu status 33).
 */
#define NETBENCH
#define NETBENCH_ROUNDS 20000
#include "virtnet32.S"
