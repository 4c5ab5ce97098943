//! The exit dispatch with made-up exits: no KVM needed.

use super::*;
use crate::devices::bus::{Bus, BusDevice};
use crate::hypervisor::kvm_abi::{
    KVM_INTERNAL_ERROR_EMULATION, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use crate::outcome::Stop;
use std::sync::{Arc, Mutex};

/// Remembers the last write; reads answer `offset + 1` in every byte.
#[derive(Default)]
struct Probe {
    last: Vec<(u64, Vec<u8>)>,
}

impl BusDevice for Probe {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(u8::try_from(offset).unwrap() + 1);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.last.push((offset, data.to_vec()));
    }
}

fn ctx(complete: bool) -> (Context, Arc<Mutex<Probe>>, Arc<Mutex<Probe>>) {
    let pio_dev = Arc::new(Mutex::new(Probe::default()));
    let mmio_dev = Arc::new(Mutex::new(Probe::default()));
    let mut pio = Bus::default();
    pio.insert(0x3f8, 8, pio_dev.clone()).unwrap();
    let mut mmio = Bus::default();
    mmio.insert(0xd000_0000, 0x1000, mmio_dev.clone()).unwrap();
    let ctx = Context {
        id: 3,
        trace: false,
        complete_instructions: complete,
        stats: Default::default(),
        mem: crate::backend::Backend::Portable
            .memory(&[(0, 1 << 16)])
            .unwrap(),
        buses: Arc::new(Buses { pio, mmio }),
        stop: Stop::default(),
    };
    (ctx, pio_dev, mmio_dev)
}

fn stop(next: Next) -> Outcome {
    match next {
        Next::Stop(o) => o,
        other => panic!("expected a stop, got {other:?}"),
    }
}

#[test]
fn port_and_mmio_exits_reach_the_buses_and_run_on() {
    let (c, pio, mmio) = ctx(false);
    assert_eq!(
        dispatch(&c, Ok(VcpuExit::IoOut(0x3f9, &[7])), None),
        Next::Run
    );
    let mut b = [0u8; 2];
    assert_eq!(
        dispatch(&c, Ok(VcpuExit::IoIn(0x3fa, &mut b)), None),
        Next::Run
    );
    assert_eq!(b, [3, 3]);
    // Unclaimed ports read as all ones, like an open bus.
    let mut b = [0u8; 1];
    assert_eq!(
        dispatch(&c, Ok(VcpuExit::IoIn(0x80, &mut b)), None),
        Next::Run
    );
    assert_eq!(b, [0xff]);
    let w = 0xd000_0010;
    assert_eq!(
        dispatch(&c, Ok(VcpuExit::MmioWrite(w, &[1, 2, 3, 4])), None),
        Next::Run
    );
    let mut b = [0u8; 4];
    assert_eq!(
        dispatch(&c, Ok(VcpuExit::MmioRead(w, &mut b)), None),
        Next::Run
    );
    assert_eq!(b, [0x11; 4]);
    assert_eq!(pio.lock().unwrap().last, [(1, vec![7])]);
    assert_eq!(mmio.lock().unwrap().last, [(0x10, vec![1, 2, 3, 4])]);
    assert_eq!(dispatch(&c, Ok(VcpuExit::Interrupted), None), Next::Run);
}

#[test]
fn exits_that_end_the_vm() {
    let (c, _, _) = ctx(false);
    assert_eq!(
        stop(dispatch(&c, Ok(VcpuExit::Hlt), None)),
        Outcome::Halted { cpu: 3 }
    );
    assert_eq!(
        stop(dispatch(&c, Ok(VcpuExit::Shutdown), None)),
        Outcome::TripleFault { cpu: 3 }
    );
    let event = |kind| stop(dispatch(&c, Ok(VcpuExit::SystemEvent { kind }), None));
    assert_eq!(event(KVM_SYSTEM_EVENT_RESET), Outcome::Reset);
    assert_eq!(event(KVM_SYSTEM_EVENT_SHUTDOWN), Outcome::Poweroff);
    assert_eq!(event(99), Outcome::Crash("vCPU 3: system event 99".into()));
    let fail = VcpuExit::FailEntry {
        reason: 0x21,
        cpu: 1,
    };
    assert_eq!(
        stop(dispatch(&c, Ok(fail), None)),
        Outcome::Crash("vCPU 3: VM entry failed (hardware reason 0x21, cpu 1)".into())
    );
    assert_eq!(
        stop(dispatch(&c, Ok(VcpuExit::Other(77)), None)),
        Outcome::Crash("vCPU 3: unhandled KVM exit 77".into())
    );
    let err = crate::hypervisor::Error::from_errno("KVM_RUN", libc::EFAULT);
    assert!(matches!(
        stop(dispatch(&c, Err(err), None)),
        Outcome::Crash(m) if m.starts_with("vCPU 3: KVM_RUN: ")
    ));
}

#[test]
fn a_sigbus_wins_over_the_exit() {
    let (c, pio, _) = ctx(false);
    let o = stop(dispatch(&c, Ok(VcpuExit::IoOut(0x3f8, &[1])), Some(2)));
    assert!(matches!(&o, Outcome::Crash(m) if m.contains("SIGBUS") && m.contains("si_code 2")));
    assert!(
        pio.lock().unwrap().last.is_empty(),
        "the access was not done"
    );
}

#[test]
fn internal_errors_complete_only_under_host_adaptation() {
    let exit = |suberror| VcpuExit::InternalError {
        suberror,
        data: vec![1, 2],
    };
    let (on, _, _) = ctx(true);
    let (off, _, _) = ctx(false);
    let emulation = KVM_INTERNAL_ERROR_EMULATION;
    assert_eq!(
        dispatch(&on, Ok(exit(emulation)), None),
        Next::Complete(vec![1, 2])
    );
    let report = Next::InternalError {
        suberror: emulation,
        data: vec![1, 2],
    };
    assert_eq!(dispatch(&off, Ok(exit(emulation)), None), report);
    assert!(matches!(
        dispatch(&on, Ok(exit(emulation + 1)), None),
        Next::InternalError { .. }
    ));
    assert_eq!(
        internal_error(3, 1, 0xfff0, &[0x10, 0x20]),
        Outcome::Crash(
            "vCPU 3: KVM internal error (suberror 1) at RIP 0xfff0, data [0x10, 0x20]".into()
        )
    );
}
