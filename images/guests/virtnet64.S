/*
 * virtnet64: the virtnet32 program (virtio-net through the legacy I/O BAR, a frame to the
 * host side of the tap and one back) as an ELF64 guest that fugu enters in 64-bit long
 * mode with identity paging. Same exit codes: 0x10 success (fugu exits 33).
 */
#define BITS64 1
#include "virtnet32.S"
