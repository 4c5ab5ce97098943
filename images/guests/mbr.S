/*
 * mbr.S: the boot programs for fugu's firmware checks (--bios), assembled as a flat binary
 * that runs at 0:7C00 in real mode. Built by xtask/src/guests.rs in four variants:
 *
 *   mbr-i386 / mbr-amd64   (default)  a master boot record: the BIOS loads sector 0 from the
 *                                     boot disk; it reads its stage (the next 8 sectors)
 *                                     with INT 13h AH=42h from the drive in DL and jumps to it.
 *   nbp-i386 / nbp-amd64   (-DNBP)    a PXE network boot program: iPXE loads the whole file
 *                                     at 0:7C00 and jumps to it.
 *
 * The stage prints a marker over COM1, switches to 32-bit protected mode (flat segments, no
 * paging: the only 32-bit mode every host can run) and, with -DLONG (the amd64 variants), on
 * to 64-bit long mode with identity paging of the first 1 GiB, checks that EFER.LMA is set,
 * and runs the repo's virtio check from there: the MBRs the virtio-blk check of virtio32.S
 * on their boot disk (sector 1 read through virtio must equal the stage INT 13h loaded; a
 * sector beyond the stage is written, flushed and read back unless the disk is read-only;
 * a hostile descriptor loop must set NEEDS_RESET), the NBPs the virtio-net check of
 * virtnet32.S on the NIC they were loaded through (a frame of type 0x88b5 out, the host's
 * answer back). Then it exits through port 0xf4: 0x10
 * from protected mode (fugu exits 33), 0x20 from long mode (fugu exits 65). Failures: 0x12
 * the disk read failed or data differed (fugu exits 37), 0x13 long mode did not activate or
 * a request failed (39), 0x11/0x14/0x15 the virtio check's own (see virtio32.S).
 */
#include "common.inc"
        .set STAGE_SECTORS, 16
#define BOOT_PROGRAM
#define BP_WRITE_SECTOR 32
#ifdef LONG
#define VIRTIO_OK 0x20
#else
#define VIRTIO_OK 0x10
#endif
        .set PML4, 0x10000              /* page tables for long mode: PML4, PDPT, PD */
        .set PDPT, 0x11000
        .set PD, 0x12000

        .text
        .code16
        .globl _start
_start:
        cli
        cld
        xor     %ax, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     $0x7c00, %sp
        ljmp    $0, $1f                 /* CS:IP = 0:7Cxx whatever the loader used */
1:
#ifndef NBP
        mov     %dl, boot_drive
        mov     $msg_mbr, %si
        call    puts16
        mov     boot_drive, %al
        call    puthex16
        mov     $msg_nl, %si
        call    puts16
        /* INT 13h AH=42h: extended read of the stage (LBA 1..8) to 0:7E00. */
        mov     $dap, %si
        mov     $0x42, %ah
        mov     boot_drive, %dl
        int     $0x13
        jc      disk_error
        cmpw    $0x5346, stage_magic    /* "FS": the stage really arrived */
        jne     disk_error
        jmp     stage
disk_error:
        mov     $msg_disk, %si
        call    puts16
        mov     $0x12, %al
        out     %al, $DEBUG_EXIT
        hlt

        .align  4
dap:    .byte   0x10, 0                 /* size, reserved */
        .word   STAGE_SECTORS
        .word   0x7e00, 0               /* offset, segment */
        .quad   1                       /* first LBA */
boot_drive: .byte 0
msg_mbr:    .asciz "fugu-mbr: loaded by the BIOS, boot drive 0x"
msg_disk:   .asciz "fugu-mbr: FAIL reading the stage with INT 13h\r\n"

/* puts16: print the NUL-terminated string at DS:SI over COM1 (real mode). */
puts16: push    %ax
1:      lodsb
        test    %al, %al
        jz      2f
        call    putc16
        jmp     1b
2:      pop     %ax
        ret

/* putc16: print AL over COM1, waiting for the transmitter to be empty. */
putc16: push    %dx
        push    %ax
        mov     $COM1 + 5, %dx
1:      in      %dx, %al
        test    $0x20, %al
        jz      1b
        pop     %ax
        mov     $COM1, %dx
        out     %al, %dx
        pop     %dx
        ret

/* puthex16: print AL as two hex digits. */
puthex16:
        push    %ax
        push    %bx
        mov     %al, %bl
        shr     $4, %al
        call    1f
        mov     %bl, %al
        and     $15, %al
        call    1f
        pop     %bx
        pop     %ax
        ret
1:      add     $'0', %al
        cmp     $'9', %al
        jbe     2f
        add     $'a' - '9' - 1, %al
2:      jmp     putc16

msg_nl:     .asciz "\r\n"
        .org    510
        .word   0xaa55

/* ---- the stage: sector 1 onwards on the disk, right after the NBP's entry code ---- */
stage_magic:
        .word   0x5346
stage:
        mov     $msg_stage, %si
        call    puts16
#else
        mov     $msg_nbp, %si
        call    puts16
#endif
        lgdt    gdt_desc
        mov     %cr0, %eax
        or      $1, %eax                /* PE */
        mov     %eax, %cr0
        ljmp    $0x08, $pm32

        .code32
pm32:   mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %fs
        mov     %ax, %gs
        mov     %ax, %ss
        mov     $0x7c00, %esp
        mov     $msg_pm, %esi
        call    puts32
#ifndef LONG
        mov     $msg_ok32, %esi
        call    puts32
#ifdef NBP
        jmp     virtnet_check
#include "virtnet32.S"
#else
        jmp     virtio_check
#include "virtio32.S"
#endif
        .code32
#else
        /* Identity-map the first 1 GiB with 2 MiB pages. */
        mov     $PML4, %edi
        xor     %eax, %eax
        mov     $0x3000 / 4, %ecx
        rep stosl
        movl    $PDPT | 3, PML4
        movl    $PD | 3, PDPT
        mov     $PD, %edi
        mov     $0x83, %eax             /* present, writable, 2 MiB */
        mov     $512, %ecx
1:      mov     %eax, (%edi)
        add     $0x200000, %eax
        add     $8, %edi
        loop    1b
        mov     $PML4, %eax
        mov     %eax, %cr3
        mov     %cr4, %eax
        or      $0x20, %eax             /* PAE */
        mov     %eax, %cr4
        mov     $0xc0000080, %ecx       /* EFER.LME */
        rdmsr
        or      $0x100, %eax
        wrmsr
        mov     %cr0, %eax
        or      $0x80000000, %eax       /* PG */
        mov     %eax, %cr0
        ljmp    $0x18, $lm64

        .code64
lm64:   mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     $0x7c00, %esp
        mov     $0xc0000080, %ecx
        rdmsr
        bt      $10, %eax               /* EFER.LMA */
        jnc     1f
        mov     $msg_ok64, %esi
        call    puts64
#ifdef NBP
        jmp     virtnet_check
#else
        jmp     virtio_check
#endif
1:      mov     $msg_nolm, %esi
        call    puts64
        mov     $0x13, %al
        out     %al, $DEBUG_EXIT
        hlt

        COM1_PUTS puts64, %rax, %rdx
#define BITS64
#ifdef NBP
#include "virtnet32.S"
#else
#include "virtio32.S"
#endif
        .code32
#endif

/* puts32: print the NUL-terminated string at ESI over COM1 (protected mode). */
        COM1_PUTS puts32, %eax, %edx

        .align  8
gdt:    .quad   0
        .quad   0x00cf9a000000ffff      /* 0x08: 32-bit code, flat */
        .quad   0x00cf92000000ffff      /* 0x10: data, flat */
        .quad   0x00af9a000000ffff      /* 0x18: 64-bit code */
gdt_desc:
        .word   gdt_desc - gdt - 1
        .long   gdt

#ifdef NBP
msg_nbp:    .asciz "fugu-nbp: started by PXE at 0:7c00\r\n"
/* The NBP is one file: its real-mode puts16 lives here. */
        .code16
puts16: push    %ax
1:      lodsb
        test    %al, %al
        jz      2f
        push    %dx
        push    %ax
        mov     $COM1 + 5, %dx
3:      in      %dx, %al
        test    $0x20, %al
        jz      3b
        pop     %ax
        mov     $COM1, %dx
        out     %al, %dx
        pop     %dx
        jmp     1b
2:      pop     %ax
        ret
#else
msg_stage:  .asciz "fugu-mbr: stage read with INT 13h, entering protected mode\r\n"
#endif
msg_pm:     .asciz "fugu-boot: in 32-bit protected mode\r\n"
#ifdef LONG
msg_ok64:   .asciz "fugu-boot: amd64 long mode ok\r\n"
msg_nolm:   .asciz "fugu-boot: FAIL long mode is not active\r\n"
#else
msg_ok32:   .asciz "fugu-boot: i386 protected mode ok\r\n"
#endif
#ifndef NBP
        .org    512 + STAGE_SECTORS * 512 - 1
        .byte   0
#endif
