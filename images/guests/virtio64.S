/*
 * virtio64: the virtio32 program (PCI enumeration, virtio-blk read/write/flush, a hostile
 * descriptor loop and a device reset) as an ELF64 guest that fugu enters in 64-bit long
 * mode with identity paging. Same exit codes: 0x10 success (fugu exits 33).
 */
#define BITS64 1
#include "virtio32.S"
