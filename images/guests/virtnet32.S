/*
 * virtnet32: a Multiboot v1 test guest for virtio-net, in 32-bit protected mode without
 * paging. It finds the first virtio-net function (1af4:1000) on PCI bus 0, drives it through
 * the legacy I/O BAR (no features: a 10-byte virtio-net header), prints its MAC, posts 16
 * receive buffers and broadcasts an Ethernet frame of type 0x88b5 with the payload
 * "fugu-guest-frame" (again, while no answer came), until it receives a frame of that type
 * whose payload starts with "fugu-host-frame!". Frames of other types are recycled.
 * Exit through port 0xf4: 0x10 success (fugu exits 33); 0x11 no device, 0x15 setup,
 * 0x16 no answer.
 *
 * With NETBENCH defined (netbench32.S, `cargo xtask bench`): full-size frames (1514 bytes),
 * and after the first answer it prints a start marker and plays NETBENCH_ROUNDS more rounds
 * of frame out, answer back, then prints a done marker and exits as above.
 *
 * With BOOT_PROGRAM defined, mbr.S's network boot programs include this check in their
 * protected-mode (or, with BITS64, long-mode) code: the entry is `virtnet_check`, on the
 * boot program's stack, with its variables at fixed addresses; it resets the NIC iPXE used
 * and drives it itself; success exits with VIRTIO_OK.
 */
#include "common.inc"
#ifndef VIRTIO_OK
#define VIRTIO_OK 0x10
#endif
#ifdef BITS64
/* virtnet64.S: the same program as an ELF64 guest entered in long mode (identity-mapped). */
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

        .set RXRING, 0x200000           /* queue 0: desc, avail +0x1000, used +0x2000 */
        .set TXRING, 0x210000           /* queue 1 */
        .set RXBUF, 0x220000            /* 16 buffers of 2 KiB */
        .set TXBUF, 0x230000
        .set NRX, 16
        .set HDRLEN, 10
        .set ETHERTYPE_BE, 0xb588
#ifdef NETBENCH
        .set FRAMELEN, 1514             /* a full Ethernet frame without its FCS */
#else
        .set FRAMELEN, 60               /* the shortest one */
#endif

        .text
#ifdef BITS64
        .code64
#else
        .code32
#endif
#ifdef BOOT_PROGRAM
virtnet_check:
        movl    $0, tries
        movw    $0, rx_avail
        movw    $0, rx_seen
        movw    $0, tx_avail
#else
        .globl _start
_start:
        mov     $stack_top, %esp
#endif
        mov     $msg_hello, %esi
        call    puts

        /* Find 1af4:1000 on bus 0. */
        xor     %ebx, %ebx
1:      mov     %ebx, %eax
        shl     $11, %eax
        or      $0x80000000, %eax
        mov     $0xcf8, %dx
        out     %eax, %dx
        mov     $0xcfc, %dx
        in      %dx, %eax
        cmp     $0x10001af4, %eax
        je      2f
        inc     %ebx
        cmp     $32, %ebx
        jb      1b
        mov     $0x11, %al
        jmp     fail
2:      shl     $11, %ebx
        or      $0x80000000, %ebx
        lea     0x10(%ebx), %eax        /* BAR0 */
        mov     $0xcf8, %dx
        out     %eax, %dx
        mov     $0xcfc, %dx
        in      %dx, %eax
        and     $0xfffc, %eax
        mov     %eax, iobase
        lea     0x04(%ebx), %eax        /* command: I/O, memory, bus master */
        mov     $0xcf8, %dx
        out     %eax, %dx
        mov     $0xcfc, %dx
        mov     $7, %ax
        out     %ax, %dx

        /* Zero the rings and buffers. */
        mov     $RXRING, %edi
        xor     %eax, %eax
        mov     $(TXBUF + 0x1000 - RXRING) / 4, %ecx
        rep stosl

        mov     iobase, %edx
        add     $0x12, %edx
        xor     %al, %al
        out     %al, %dx                /* reset */
        mov     $3, %al
        out     %al, %dx                /* ACKNOWLEDGE | DRIVER */
        mov     iobase, %edx
        add     $0x04, %edx
        xor     %eax, %eax
        out     %eax, %dx               /* no features */
        mov     $0, %eax
        mov     $RXRING >> 12, %ecx
        call    setup_queue
        mov     $1, %eax
        mov     $TXRING >> 12, %ecx
        call    setup_queue

        /* The MAC: device configuration at 0x14 (MSI-X is off). */
        mov     $msg_mac, %esi
        call    puts
        xor     %ebx, %ebx
3:      mov     iobase, %edx
        add     $0x14, %edx
        add     %ebx, %edx
        in      %dx, %al
        mov     %al, mac(%ebx)
        call    puthex8
        inc     %ebx
        cmp     $6, %ebx
        je      4f
        mov     $':', %al
        call    putc
        jmp     3b
4:      mov     $msg_eol, %esi
        call    puts

        /* Receive buffers: descriptor i -> RXBUF + i * 2048, device-writable. */
        xor     %ebx, %ebx
5:      mov     %ebx, %eax
        shl     $11, %eax
        add     $RXBUF, %eax
        mov     %ebx, %ecx
        shl     $4, %ecx
        mov     %eax, RXRING(%ecx)
        movl    $0, RXRING + 4(%ecx)
        movl    $2048, RXRING + 8(%ecx)
        movw    $2, RXRING + 12(%ecx)           /* WRITE */
        movw    %bx, RXRING + 0x1000 + 4(,%ebx,2)
        inc     %ebx
        cmp     $NRX, %ebx
        jb      5b
        movw    $NRX, rx_avail
        movw    $NRX, RXRING + 0x1000 + 2

        mov     iobase, %edx
        add     $0x12, %edx
        mov     $7, %al                 /* DRIVER_OK */
        out     %al, %dx
        in      %dx, %al
        test    $0x40, %al
        jnz     setup_failed
        mov     $0, %ax
        call    notify

        /* The frame: 10-byte header, broadcast, our MAC, type 0x88b5, payload. */
        mov     $TXBUF + HDRLEN, %edi
        mov     $0xff, %al
        mov     $6, %ecx
        rep stosb
        mov     $mac, %esi
        mov     $6, %ecx
        rep movsb
        movw    $ETHERTYPE_BE, (%edi)
        add     $2, %edi
        mov     $str_guest, %esi
        mov     $16, %ecx
        rep movsb
        movl    $TXBUF, TXRING
        movl    $0, TXRING + 4
        movl    $HDRLEN + FRAMELEN, TXRING + 8
        movw    $0, TXRING + 12

        movl    $200, tries
send:   mov     tx_avail, %ax
        cmp     TXRING + 0x2000 + 2, %ax        /* previous send done? */
        jne     wait
        movzwl  tx_avail, %ecx
        and     $255, %ecx
        movw    $0, TXRING + 0x1000 + 4(,%ecx,2)
        incw    tx_avail
        mov     tx_avail, %ax
        mov     %ax, TXRING + 0x1000 + 2
        mov     $1, %ax
        call    notify
        decl    tries
        jz      no_answer

wait:   mov     $0x20000, %ebp          /* polls before sending again */
6:      mov     RXRING + 0x2000 + 2, %ax
        cmp     rx_seen, %ax
        jne     got
        pause
        dec     %ebp
        jnz     6b
        jmp     send

got:    movzwl  rx_seen, %ecx
        and     $255, %ecx
        mov     RXRING + 0x2000 + 4(,%ecx,8), %ebx      /* used id */
        incw    rx_seen
        and     $NRX - 1, %ebx
        mov     %ebx, %esi
        shl     $11, %esi
        add     $RXBUF + HDRLEN, %esi
        cmpw    $ETHERTYPE_BE, 12(%esi)
        jne     recycle
        add     $14, %esi
        mov     $str_host, %edi
        mov     $16, %ecx
        repe cmpsb
        je      success
recycle:
        call    give_back
        jmp     6b

success:
#ifdef NETBENCH
        cmpl    $0, rounds
        jne     1f
        mov     $msg_bench, %esi
        call    puts
1:      incl    rounds
        cmpl    $NETBENCH_ROUNDS + 1, rounds
        je      2f
        /* The buffer back to the device, then the next frame out. */
        call    give_back
        movl    $200, tries
        jmp     send
2:      mov     $msg_bench_done, %esi
        call    puts
#endif
        mov     $msg_ok, %esi
        call    puts
        mov     $VIRTIO_OK, %al
        out     %al, $DEBUG_EXIT
        hlt
no_answer:
        mov     $0x16, %al
        jmp     fail
setup_failed:
        mov     $0x15, %al
fail:   PUSH(ax)
        mov     $msg_fail, %esi
        call    puts
        POP(ax)
        out     %al, $DEBUG_EXIT
        hlt

/* setup_queue: queue %eax at page frame %ecx (the legacy layout needs size 256). */
setup_queue:
        mov     iobase, %edx
        add     $0x0e, %edx
        out     %ax, %dx
        mov     iobase, %edx
        add     $0x0c, %edx
        in      %dx, %ax
        cmp     $256, %ax
        jne     setup_failed
        mov     iobase, %edx
        add     $0x08, %edx
        mov     %ecx, %eax
        out     %eax, %dx
        ret

/* give_back: receive buffer %ebx back into the avail ring, and tell the device. */
give_back:
        movzwl  rx_avail, %ecx
        and     $255, %ecx
        movw    %bx, RXRING + 0x1000 + 4(,%ecx,2)
        incw    rx_avail
        mov     rx_avail, %ax
        mov     %ax, RXRING + 0x1000 + 2
        xor     %ax, %ax
        jmp     notify

/* notify: queue %ax. */
notify: mov     iobase, %edx
        add     $0x10, %edx
        out     %ax, %dx
        ret

#include "console.inc"
#ifdef BITS64
msg_hello:  .asciz "fugu-guest: virtnet64 (long mode) looking for virtio-net\n"
#else
msg_hello:  .asciz "fugu-guest: virtnet32 looking for virtio-net\n"
#endif
msg_mac:    .asciz "fugu-guest: virtio-net mac "
msg_eol:    .asciz "\n"
msg_ok:     .asciz "fugu-guest: frame from the host received, virtio-net ok\n"
msg_fail:   .asciz "fugu-guest: FAIL\n"
str_guest:  .ascii "fugu-guest-frame"
#ifdef NETBENCH
msg_bench:  .asciz "fugu-guest: netbench running\n"
msg_bench_done: .asciz "fugu-guest: netbench done\n"
#endif
str_host:   .ascii "fugu-host-frame!"

#ifdef BOOT_PROGRAM
        /* Fixed addresses, not symbols: long-mode code in mbr.S's 32-bit object cannot
         * relocate absolute memory operands. */
        .set iobase, TXBUF + 0x10000
        .set tries, TXBUF + 0x10004
        .set mac, TXBUF + 0x10008
        .set rx_avail, TXBUF + 0x10010
        .set rx_seen, TXBUF + 0x10012
        .set tx_avail, TXBUF + 0x10014
#else
        .data
        .align 4
iobase:     .long 0
tries:      .long 0
mac:        .byte 0, 0, 0, 0, 0, 0
rx_avail:   .word 0
rx_seen:    .word 0
tx_avail:   .word 0
#ifdef NETBENCH
        .align 4
rounds:     .long 0
#endif

        .bss
        .align 16
        .skip 4096
stack_top:
#endif
