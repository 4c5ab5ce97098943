/*
 * virtio32: a Multiboot v1 test guest for PCI and virtio-blk, in 32-bit protected mode
 * without paging. It enumerates PCI bus 0 through ports 0xCF8/0xCFC, finds the first
 * virtio-blk function (1af4:1001), drives it through the legacy I/O BAR with one split
 * queue, and then:
 *   - reads sector 1 and checks that it starts with "fugu-test-sector" (the test wrote it),
 *   - writes "fugu-guest-wrote" + the rest of that sector to sector 2 and flushes,
 *   - reads sector 2 back and compares,
 *   - submits a descriptor loop (a hostile chain), waits for DEVICE_NEEDS_RESET, resets
 *     the device, sets it up again and reads sector 1 once more.
 * Exit through port 0xf4: 0x10 success (fugu exits 33); 0x11 no device, 0x12 data
 * mismatch, 0x13 bad request status, 0x14 no NEEDS_RESET after the loop, 0x15 setup.
 *
 * With BOOT_PROGRAM defined, mbr.S includes this check in its protected-mode (or, with
 * BITS64, long-mode) code: the entry is `virtio_check`, on the boot program's stack, data in
 * .text (the loaded sectors are all there is); sector 1 must equal the stage the BIOS loaded
 * at 0x7E00 with INT 13h, the write goes to sector BP_WRITE_SECTOR, beyond the stage, a
 * read-only disk (VIRTIO_BLK_F_RO) skips the write steps and says so, and success exits
 * with VIRTIO_OK.
 */
#include "common.inc"
#ifndef VIRTIO_OK
#define VIRTIO_OK 0x10
#endif
#ifdef BOOT_PROGRAM
#define SECTOR1_EXPECT $0x7e00
#define SECTOR1_LEN 512
#define WRITE_SECTOR BP_WRITE_SECTOR
#else
#define SECTOR1_EXPECT $str_test
#define SECTOR1_LEN 16
#define WRITE_SECTOR 2
#endif
#ifdef BITS64
/* virtio64.S: the same program as an ELF64 guest entered in long mode (identity-mapped). */
#define PUSH(x) push %r##x
#define POP(x) pop %r##x
#else
#define PUSH(x) push %e##x
#define POP(x) pop %e##x
#endif
#if !defined(BITS64) && !defined(BOOT_PROGRAM)
        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0x00000003
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
#endif

        .set RING, 0x200000             /* 256 descriptors, avail at +0x1000, used at +0x2000 */
        .set AVAIL, RING + 0x1000
        .set USED, RING + 0x2000
        .set HDR, 0x210000
        .set DATA, 0x211000
        .set STATUS, 0x212000
        .set SAVE, 0x213000

        .text
#ifdef BITS64
        .code64
#else
        .code32
#endif
#ifdef BOOT_PROGRAM
virtio_check:
        movl    $0, blkdev
#else
        .globl _start
_start:
        mov     $stack_top, %esp
#endif
        mov     $msg_hello, %esi
        call    puts

        /* Enumerate bus 0: %ebx = device number. */
        xor     %ebx, %ebx
1:      mov     %ebx, %eax
        shl     $11, %eax
        or      $0x80000000, %eax
        mov     $0xcf8, %dx
        out     %eax, %dx
        mov     $0xcfc, %dx
        in      %dx, %eax
        cmp     $0xffffffff, %eax
        je      2f
        PUSH(ax)
        mov     $msg_found, %esi
        call    puts
        mov     %ebx, %eax
        call    puthex8
        mov     $msg_id, %esi
        call    puts
        POP(ax)
        PUSH(ax)
        call    puthex32
        mov     $msg_eol, %esi
        call    puts
        POP(ax)
        cmp     $0x10011af4, %eax
        jne     2f
        cmpl    $0, blkdev
        jne     2f
        mov     %ebx, %ecx
        shl     $11, %ecx
        or      $0x80000000, %ecx
        mov     %ecx, blkdev
2:      inc     %ebx
        cmp     $32, %ebx
        jb      1b
        mov     blkdev, %ecx
        test    %ecx, %ecx
        jnz     3f
        mov     $0x11, %al
        jmp     fail
3:
        /* BAR0: the legacy I/O registers. */
        lea     0x10(%ecx), %eax
        mov     $0xcf8, %dx
        out     %eax, %dx
        mov     $0xcfc, %dx
        in      %dx, %eax
        and     $0xfffc, %eax
        mov     %eax, iobase
        /* Command: I/O, memory, bus master. */
        lea     0x04(%ecx), %eax
        mov     $0xcf8, %dx
        out     %eax, %dx
        mov     $0xcfc, %dx
        mov     $7, %ax
        out     %ax, %dx

        call    setup

        /* Read sector 1. */
        mov     $0, %eax                /* VIRTIO_BLK_T_IN */
        mov     $1, %ecx
        mov     $2, %edi                /* data buffer device-writable */
        call    request
        test    %al, %al
        jnz     bad_status
        mov     $DATA, %esi
        mov     SECTOR1_EXPECT, %edi
        mov     $SECTOR1_LEN, %ecx
        repe cmpsb
        jne     bad_data
        mov     $msg_read, %esi
        call    puts

#ifdef BOOT_PROGRAM
        /* VIRTIO_BLK_F_RO (`fugu run --image` attaches the disk read-only): nothing may be
         * written. The test guest writes regardless, to see the device refuse it. */
        mov     iobase, %edx
        in      %dx, %eax               /* device features */
        test    $0x20, %eax
        jz      6f
        mov     $msg_ro, %esi
        call    puts
        jmp     7f
6:
#endif

        /* Keep a copy, stamp it, write it to sector 2 and flush. */
        mov     $DATA, %esi
        mov     $SAVE, %edi
        mov     $128, %ecx
        rep movsl
        mov     $str_wrote, %esi
        mov     $SAVE, %edi
        mov     $16, %ecx
        rep movsb
        mov     $SAVE, %esi
        mov     $DATA, %edi
        mov     $128, %ecx
        rep movsl
        mov     $1, %eax                /* VIRTIO_BLK_T_OUT */
        mov     $WRITE_SECTOR, %ecx
        xor     %edi, %edi              /* data buffer device-readable */
        call    request
        test    %al, %al
        jnz     bad_status
        mov     $4, %eax                /* VIRTIO_BLK_T_FLUSH */
        xor     %ecx, %ecx
        mov     $0xffff, %edi           /* no data */
        call    request
        test    %al, %al
        jnz     bad_status

        /* Read sector 2 back and compare with what was written. */
        mov     $DATA, %edi
        xor     %eax, %eax
        mov     $128, %ecx
        rep stosl
        mov     $0, %eax
        mov     $WRITE_SECTOR, %ecx
        mov     $2, %edi
        call    request
        test    %al, %al
        jnz     bad_status
        mov     $DATA, %esi
        mov     $SAVE, %edi
        mov     $512, %ecx
        repe cmpsb
        jne     bad_data
        mov     $msg_wrote, %esi
        call    puts
7:

        /* A hostile chain: descriptor 0 points at itself. */
        movl    $HDR, RING
        movl    $0, RING + 4
        movl    $16, RING + 8
        movw    $1, RING + 12           /* NEXT */
        movw    $0, RING + 14           /* ... to itself */
        call    publish
        mov     $20000000, %ecx
4:      mov     iobase, %edx
        add     $0x12, %edx
        in      %dx, %al
        test    $0x40, %al              /* DEVICE_NEEDS_RESET */
        jnz     5f
        pause
        loop    4b
        mov     $0x14, %al
        jmp     fail
5:      mov     $msg_reset, %esi
        call    puts
        call    setup
        mov     $DATA, %edi
        xor     %eax, %eax
        mov     $128, %ecx
        rep stosl
        mov     $0, %eax
        mov     $1, %ecx
        mov     $2, %edi
        call    request
        test    %al, %al
        jnz     bad_status
        mov     $DATA, %esi
        mov     SECTOR1_EXPECT, %edi
        mov     $SECTOR1_LEN, %ecx
        repe cmpsb
        jne     bad_data

        mov     $msg_ok, %esi
        call    puts
        mov     $VIRTIO_OK, %al
        out     %al, $DEBUG_EXIT
        hlt

bad_status:
        mov     $0x13, %al
        jmp     fail
bad_data:
        mov     $0x12, %al
fail:   PUSH(ax)
        mov     $msg_fail, %esi
        call    puts
        POP(ax)
        out     %al, $DEBUG_EXIT
        hlt

/* setup: reset the device and set up queue 0 at RING through the legacy registers. */
setup:
        mov     $RING, %edi
        xor     %eax, %eax
        mov     $0x3000 / 4, %ecx
        rep stosl
        movw    $0, avail_idx
        mov     iobase, %edx
        add     $0x12, %edx             /* device status */
        xor     %al, %al
        out     %al, %dx
        mov     $3, %al                 /* ACKNOWLEDGE | DRIVER */
        out     %al, %dx
        mov     iobase, %edx
        add     $0x04, %edx             /* guest features: none */
        xor     %eax, %eax
        out     %eax, %dx
        mov     iobase, %edx
        add     $0x0e, %edx             /* queue select 0 */
        xor     %ax, %ax
        out     %ax, %dx
        mov     iobase, %edx
        add     $0x0c, %edx             /* queue size must be 256 for this layout */
        in      %dx, %ax
        cmp     $256, %ax
        jne     1f
        mov     iobase, %edx
        add     $0x08, %edx             /* queue PFN */
        mov     $RING >> 12, %eax
        out     %eax, %dx
        mov     iobase, %edx
        add     $0x12, %edx
        mov     $7, %al                 /* | DRIVER_OK */
        out     %al, %dx
        in      %dx, %al
        test    $0x40, %al
        jnz     1f
        ret
1:      mov     $0x15, %al
        jmp     fail

/*
 * request: %eax = type, %ecx = sector, %edi = flags of the 512-byte data buffer
 * (2 = device-writable, 0 = device-readable, 0xffff = no data). Returns the status in %al.
 */
request:
        mov     %eax, HDR
        movl    $0, HDR + 4
        mov     %ecx, HDR + 8
        movl    $0, HDR + 12
        movb    $0xff, STATUS
        /* desc 0: header */
        movl    $HDR, RING
        movl    $0, RING + 4
        movl    $16, RING + 8
        movw    $1, RING + 12
        movw    $1, RING + 14
        cmp     $0xffff, %edi
        jne     1f
        movw    $2, RING + 14           /* header -> status */
        jmp     2f
1:      movl    $DATA, RING + 16        /* desc 1: data */
        movl    $0, RING + 20
        movl    $512, RING + 24
        mov     %di, %ax
        or      $1, %ax
        mov     %ax, RING + 28
        movw    $2, RING + 30
2:      movl    $STATUS, RING + 32      /* desc 2: status */
        movl    $0, RING + 36
        movl    $1, RING + 40
        movw    $2, RING + 44           /* WRITE */
        movw    $0, RING + 46
        call    publish
        /* Wait for the used index to catch up. */
3:      mov     USED + 2, %ax
        cmp     avail_idx, %ax
        je      4f
        pause
        jmp     3b
4:      movzbl  STATUS, %eax
        ret

/* publish: put descriptor 0 in the avail ring and notify queue 0. */
publish:
        movzwl  avail_idx, %eax
        mov     %eax, %ecx
        and     $255, %ecx
        movw    $0, AVAIL + 4(,%ecx,2)
        inc     %ax
        mov     %ax, avail_idx
        mov     %ax, AVAIL + 2
        mov     iobase, %edx
        add     $0x10, %edx             /* queue notify */
        xor     %ax, %ax
        out     %ax, %dx
        ret

#include "console.inc"
#ifdef BITS64
msg_hello:  .asciz "fugu-guest: virtio64 (long mode) scanning PCI bus 0\n"
#else
msg_hello:  .asciz "fugu-guest: virtio32 scanning PCI bus 0\n"
#endif
msg_found:  .asciz "fugu-guest: pci 00:"
msg_id:     .asciz ".0 id "
msg_eol:    .asciz "\n"
msg_read:   .asciz "fugu-guest: read sector 1 ok\n"
#ifdef BOOT_PROGRAM
msg_wrote:  .asciz "fugu-guest: wrote a sector beyond the stage, flushed, read it back\n"
#else
msg_wrote:  .asciz "fugu-guest: wrote sector 2, flushed, read it back\n"
#endif
#ifdef BOOT_PROGRAM
msg_ro:     .asciz "fugu-guest: read-only disk, write steps skipped\n"
#endif
msg_reset:  .asciz "fugu-guest: descriptor loop -> NEEDS_RESET, resetting\n"
msg_ok:     .asciz "fugu-guest: virtio-blk ok\n"
msg_fail:   .asciz "fugu-guest: FAIL\n"
str_test:   .ascii "fugu-test-sector"
str_wrote:  .ascii "fugu-guest-wrote"

#ifdef BOOT_PROGRAM
        /* Fixed addresses, not symbols: long-mode code in mbr.S's 32-bit object cannot
         * relocate absolute memory operands. */
        .set blkdev, SAVE + 0x1000
        .set iobase, SAVE + 0x1004
        .set avail_idx, SAVE + 0x1008
#else
        .data
        .align 4
blkdev:     .long 0
iobase:     .long 0
avail_idx:  .word 0
#endif

#ifndef BOOT_PROGRAM
        .bss
        .align 16
        .skip 4096
stack_top:
#endif
