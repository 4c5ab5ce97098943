/*
 * traps32: a Multiboot test guest that executes, at CPL0 in 32-bit protected mode, the
 * instructions this project's emulated hosts cannot complete themselves (INT3, UD2, FWAIT,
 * FNCLEX, INT n), with IDT handlers for #BP, #UD and two software-interrupt vectors. A VMM
 * that completes them (or a host that runs them natively) delivers each exception or
 * interrupt to the guest's handler at the right return address with the right frame. Then
 * the CPUID checks of cpuid32.inc: every instruction whose feature it is shown runs.
 * Exits 0x10 (fugu status 33) when every check passed, 0x11 otherwise.
 */
#include "common.inc"
        MULTIBOOT_HEADER

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
        mov     $soft_handler, %ebx
        mov     $idt + 0x21 * 8, %edi
        call    set_gate
        /* Vector 8 is #DF's, but INT 8 pushes no error code: the frame is EIP, CS, EFLAGS. */
        mov     $soft_handler, %ebx
        mov     $idt + 8 * 8, %edi
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

        /* INT n (DOS's 0x21, and 8 with no error code): the handler sees EIP after the
         * instruction, this CS, and EFLAGS with IF as it was; an interrupt gate clears IF. */
        movl    $0, soft_count
        sti
        int     $0x21
after_int21:
        cli
        cmpl    $1, soft_count
        jne     fail
        cmpl    $after_int21, soft_eip
        jne     fail
        mov     %cs, %ax
        cmp     %ax, soft_cs
        jne     fail
        testl   $0x200, soft_eflags     /* IF was set when INT ran */
        jz      fail
        testl   $0x200, soft_if_inside  /* and clear in the handler */
        jnz     fail
        int     $8
after_int8:
        cmpl    $2, soft_count
        jne     fail
        cmpl    $after_int8, soft_eip
        jne     fail
        mov     $msg_int, %esi
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

        /* CPUID honesty: what the guest is shown runs (cpuid32.inc). */
        call    cpuid_checks
        jc      fail

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

soft_handler:
        incl    soft_count
        push    %eax
        pushf
        pop     %eax
        mov     %eax, soft_if_inside
        mov     4(%esp), %eax
        mov     %eax, soft_eip
        mov     8(%esp), %eax
        mov     %eax, soft_cs
        mov     12(%esp), %eax
        mov     %eax, soft_eflags
        pop     %eax
        iret

#define PUSH(x) push %e##x
#define POP(x) pop %e##x
#include "console.inc"
#include "cpuid32.inc"

        .section .rodata
msg_bp:    .asciz "fugu-guest: int3 delivered #BP after the instruction\n"
msg_ud:    .asciz "fugu-guest: ud2 delivered #UD at the instruction\n"
msg_int:   .asciz "fugu-guest: int 0x21 and int 8 delivered through the IDT\n"
msg_fpu:   .asciz "fugu-guest: fwait and fnclex completed\n"
msg_ok:    .asciz "fugu-guest: traps ok\n"
msg_fail:  .asciz "fugu-guest: FAIL traps\n"

        .data
        .align 8
idt_desc:
        .word   8 * 0x22 - 1
        .long   idt

        .bss
        .align 8
idt:    .skip   8 * 0x22
bp_count: .long 0
bp_eip:   .long 0
ud_count: .long 0
ud_eip:   .long 0
soft_count:  .long 0
soft_eip:    .long 0
soft_cs:     .long 0
soft_eflags: .long 0
soft_if_inside: .long 0
        .align 16
        .skip 4096
stack_top:
