/*
 * traps32: a Multiboot test guest that executes, at CPL0 in 32-bit protected mode, the
 * instructions this project's emulated hosts cannot complete themselves (INT3, UD2, FWAIT,
 * FNCLEX), with IDT handlers for #BP and #UD. A VMM that completes them (or a host that runs
 * them natively) delivers each exception to the guest's handler at the right return address.
 * Exits 0x10 (fugu status 33) when every check passed, 0x11 otherwise.
 */
#include "common.inc"
        .set MB_MAGIC, 0x1BADB002
        .set MB_FLAGS, 0x00000003
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .text
        .code32
        .globl _start
_start:
        mov     $stack_top, %esp
        /* IDT gates for vector 3 (#BP) and 6 (#UD): 32-bit interrupt gates, selector CS. */
        mov     %cs, %ax
        mov     $bp_handler, %ebx
        mov     $idt + 3 * 8, %edi
        call    set_gate
        mov     $ud_handler, %ebx
        mov     $idt + 6 * 8, %edi
        call    set_gate
        lidt    idt_desc

        /* INT3 is a trap: the handler sees EIP after the instruction. */
        movl    $0, bp_count
        int3
after_int3:
        cmpl    $1, bp_count
        jne     fail
        mov     bp_eip, %eax
        cmp     $after_int3, %eax
        jne     fail
        mov     $msg_bp, %esi
        call    puts

        /* UD2 is a fault: the handler sees EIP at the instruction and skips its 2 bytes. */
        movl    $0, ud_count
ud_at:  ud2
        cmpl    $1, ud_count
        jne     fail
        mov     ud_eip, %eax
        cmp     $ud_at, %eax
        jne     fail
        mov     $msg_ud, %esi
        call    puts

        /* x87: initialise, then FWAIT and FNCLEX with no exception pending are no-ops. */
        mov     %cr0, %eax
        and     $~0xc, %eax             /* clear EM and TS so x87 instructions run */
        or      $0x22, %eax             /* MP, NE */
        mov     %eax, %cr0
        fninit
        fwait
        fnclex
        fnstsw  %ax
        test    $0x80ff, %ax
        jnz     fail
        mov     $msg_fpu, %esi
        call    puts

        mov     $msg_ok, %esi
        call    puts
        mov     $0x10, %al
        out     %al, $DEBUG_EXIT
        hlt
fail:   mov     $msg_fail, %esi
        call    puts
        mov     $0x11, %al
        out     %al, $DEBUG_EXIT
        hlt

/* set_gate: %edi = gate address, %ebx = handler, %ax = code selector. */
set_gate:
        mov     %bx, (%edi)
        mov     %ax, 2(%edi)
        movw    $0x8e00, 4(%edi)
        shr     $16, %ebx
        mov     %bx, 6(%edi)
        ret

bp_handler:
        incl    bp_count
        mov     (%esp), %eax
        mov     %eax, bp_eip
        iret

ud_handler:
        incl    ud_count
        mov     (%esp), %eax
        mov     %eax, ud_eip
        addl    $2, (%esp)
        iret

        COM1_PUTS puts, %eax, %edx

        .section .rodata
msg_bp:    .asciz "fugu-guest: int3 delivered #BP after the instruction\n"
msg_ud:    .asciz "fugu-guest: ud2 delivered #UD at the instruction\n"
msg_fpu:   .asciz "fugu-guest: fwait and fnclex completed\n"
msg_ok:    .asciz "fugu-guest: traps ok\n"
msg_fail:  .asciz "fugu-guest: FAIL traps\n"

        .data
        .align 8
idt_desc:
        .word   8 * 32 - 1
        .long   idt

        .bss
        .align 8
idt:    .skip   8 * 32
bp_count: .long 0
bp_eip:   .long 0
ud_count: .long 0
ud_eip:   .long 0
        .align 16
        .skip 4096
stack_top:
