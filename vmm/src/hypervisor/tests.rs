//! Real KVM on this host, through each backend this target has: create a VM and a vCPU, run a
//! few real-mode instructions to port-I/O exits. On x86_64 both backends run the same script
//! and must observe the same exits (differential test of the in-house layer).

use super::*;
use crate::backend::Backend;

/// mov al,0x42; out 0x10,al; in al,0x20; out 0x11,al; hlt
const CODE: &[u8] = &[0xb0, 0x42, 0xe6, 0x10, 0xe4, 0x20, 0xe6, 0x11, 0xf4];

fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Portable];
    if cfg!(target_arch = "x86_64") {
        v.push(Backend::RustVmm);
    }
    v
}

/// Run CODE and record every exit as text.
fn script(backend: Backend) -> Vec<String> {
    let kvm = backend.hypervisor().expect("open /dev/kvm");
    assert_eq!(kvm.api_version(), 12);
    assert!(kvm.check_extension(kvm_abi::KVM_CAP_USER_MEMORY) > 0);
    let cpuid = kvm.supported_cpuid().expect("supported cpuid");
    assert!(
        cpuid.iter().any(|e| e.function == 0),
        "CPUID leaf 0 is supported"
    );
    let vm = kvm.create_vm().expect("create vm");
    let mem = backend.memory(&[(0, 0x10000)]).expect("guest memory");
    for (slot, r) in mem.regions().iter().enumerate() {
        // SAFETY: mem outlives the VM within this function.
        unsafe {
            vm.set_user_memory_region(
                u32::try_from(slot).unwrap(),
                r.gpa,
                r.size,
                r.host_addr,
                false,
            )
            .expect("memory region")
        };
    }
    mem.write(0x1000, CODE).unwrap();
    let mut vcpu = vm.create_vcpu(0).expect("create vcpu");
    vcpu.set_cpuid2(&cpuid).expect("set cpuid");
    let mut sregs = vcpu.get_sregs().expect("get sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).expect("set sregs");
    let regs = Regs {
        rip: 0x1000,
        rflags: 2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).expect("set regs");

    let mut log = Vec::new();
    for _ in 0..10 {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(port, data) => log.push(format!("out {port:#x} {data:?}")),
            VcpuExit::IoIn(port, data) => {
                data[0] = 0x99;
                log.push(format!("in {port:#x} {}", data.len()));
            }
            VcpuExit::Hlt => {
                log.push("hlt".into());
                break;
            }
            other => {
                log.push(format!("{other:?}"));
                break;
            }
        }
    }
    let r = vcpu.get_regs().unwrap();
    log.push(format!("rax={:#x} rip={:#x}", r.rax & 0xff, r.rip));
    log
}

#[test]
fn runs_real_mode_code_to_port_io_exits() {
    for b in backends() {
        let log = script(b);
        assert_eq!(
            log,
            vec![
                "out 0x10 [66]",
                "in 0x20 1",
                "out 0x11 [153]",
                "hlt",
                "rax=0x99 rip=0x1009"
            ],
            "backend {}",
            b.name()
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn backends_agree() {
    assert_eq!(script(Backend::Portable), script(Backend::RustVmm));
}

#[test]
fn registers_round_trip() {
    for b in backends() {
        let kvm = b.hypervisor().unwrap();
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let regs = Regs {
            rax: 1,
            rbx: 2,
            r15: 0xdead_beef,
            rip: 0x1234,
            rflags: 2,
            ..Default::default()
        };
        vcpu.set_regs(&regs).unwrap();
        assert_eq!(vcpu.get_regs().unwrap(), regs);
        let mut s = vcpu.get_sregs().unwrap();
        s.cr0 |= 1;
        s.gdt = kvm_abi::kvm_dtable {
            base: 0x500,
            limit: 0x27,
            padding: [0; 3],
        };
        vcpu.set_sregs(&s).unwrap();
        let s2 = vcpu.get_sregs().unwrap();
        assert_eq!((s2.cr0 & 1, s2.gdt.base, s2.gdt.limit), (1, 0x500, 0x27));
        // The events round-trip through both backends (the rust-vmm one transmutes them).
        let mut ev = vcpu.get_vcpu_events().unwrap();
        ev.nmi_masked = 1;
        vcpu.set_vcpu_events(&ev).unwrap();
        assert_eq!(vcpu.get_vcpu_events().unwrap().nmi_masked, 1);
    }
}

/// mov dx,0x1010; mov ax,1; out dx,ax; xor ax,ax; out dx,ax; mov ax,2; out dx,ax; hlt
const NOTIFY_CODE: &[u8] = &[
    0xba, 0x10, 0x10, 0xb8, 0x01, 0x00, 0xef, 0x31, 0xc0, 0xef, 0xb8, 0x02, 0x00, 0xef, 0xf4,
];

/// Port writes of queue numbers to one notify port, as a legacy virtio driver makes them:
/// with datamatch registrations KVM signals the matching eventfd and only the unmatched
/// value leaves the kernel; after unregistering one, its writes exit to userspace again.
#[test]
fn ioeventfds_match_data_and_unregister() {
    use crate::devices::virtio::sys::EventFd;
    use std::os::fd::AsRawFd;
    for b in backends() {
        let kvm = b.hypervisor().expect("open /dev/kvm");
        let vm = kvm.create_vm().expect("create vm");
        let mem = b.memory(&[(0, 0x10000)]).expect("guest memory");
        let r = mem.regions()[0];
        // SAFETY: mem outlives the VM within this loop iteration.
        unsafe { vm.set_user_memory_region(0, r.gpa, r.size, r.host_addr, false) }
            .expect("memory region");
        mem.write(0x1000, NOTIFY_CODE).unwrap();
        let (q0, q1) = (EventFd::new().unwrap(), EventFd::new().unwrap());
        let ev = |q: u64| IoEvent {
            addr: 0x1010,
            len: 2,
            pio: true,
            datamatch: Some(q),
        };
        vm.register_ioeventfd(q0.as_raw_fd(), &ev(0)).unwrap();
        vm.register_ioeventfd(q1.as_raw_fd(), &ev(1)).unwrap();
        let mut vcpu = vm.create_vcpu(0).expect("create vcpu");
        let run = |vcpu: &mut Box<dyn Vcpu>| {
            let mut sregs = vcpu.get_sregs().unwrap();
            sregs.cs.base = 0;
            sregs.cs.selector = 0;
            vcpu.set_sregs(&sregs).unwrap();
            vcpu.set_regs(&Regs {
                rip: 0x1000,
                rflags: 2,
                ..Default::default()
            })
            .unwrap();
            let mut outs = Vec::new();
            for _ in 0..10 {
                match vcpu.run().expect("KVM_RUN") {
                    VcpuExit::IoOut(port, data) => outs.push((port, data.to_vec())),
                    VcpuExit::Hlt => break,
                    other => panic!("unexpected exit {other:?}"),
                }
            }
            outs
        };
        assert_eq!(
            run(&mut vcpu),
            [(0x1010, vec![2, 0])],
            "backend {}",
            b.name()
        );
        assert_eq!((q0.drain(), q1.drain()), (1, 1), "backend {}", b.name());
        vm.unregister_ioeventfd(q1.as_raw_fd(), &ev(1)).unwrap();
        assert_eq!(
            run(&mut vcpu),
            [(0x1010, vec![1, 0]), (0x1010, vec![2, 0])],
            "backend {}",
            b.name()
        );
        assert_eq!((q0.drain(), q1.drain()), (1, 0), "backend {}", b.name());
        assert!(vm.unregister_ioeventfd(q1.as_raw_fd(), &ev(1)).is_err());
    }
}
