//! The demo images' one program: a static Linux executable per architecture that writes a
//! line and exits, assembled here as bytes (an ELF header, one loadable segment, a few
//! instructions and the message), so `podman run` of a demo image shows which
//! architecture it pulled without a toolchain, a libc or a shell in the image.

/// Where the one segment is loaded; the program starts right after the two headers.
const BASE: u64 = 0x40_0000;
const HEADERS: usize = 64 + 56;

/// The program for `arch` (`amd64` or `arm64`) printing `message`; `None` for others.
pub fn hello(arch: &str, message: &str) -> Option<Vec<u8>> {
    let len = u32::try_from(message.len()).ok().filter(|l| *l < 4096)?;
    let (machine, mut code) = match arch {
        "amd64" => (0x3e, amd64(len)),
        "arm64" => (0xb7, arm64(len)),
        _ => return None,
    };
    code.extend_from_slice(message.as_bytes());
    let total = (HEADERS + code.len()) as u64;
    let mut elf = Vec::with_capacity(total as usize);
    // ELF header: 64-bit, little-endian, version 1, System V ABI, an executable.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    elf.extend_from_slice(&(machine as u16).to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + HEADERS as u64).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // One PT_LOAD segment, readable and executable, mapping the whole file.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    for word in [0, BASE, BASE, total, total, 0x1000] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    Some(elf)
}

/// x86-64: write(1, message, len); exit(0). The message follows the code.
fn amd64(len: u32) -> Vec<u8> {
    let mut c = vec![0xb8, 1, 0, 0, 0]; // mov eax, 1 (write)
    c.extend([0xbf, 1, 0, 0, 0]); // mov edi, 1 (stdout)
    c.extend([0x48, 0x8d, 0x35]); // lea rsi, [rip + 16]: the message, 16 bytes on
    c.extend(16i32.to_le_bytes());
    c.push(0xba); // mov edx, len
    c.extend(len.to_le_bytes());
    c.extend([0x0f, 0x05]); // syscall
    c.extend([0xb8, 60, 0, 0, 0]); // mov eax, 60 (exit)
    c.extend([0x31, 0xff]); // xor edi, edi
    c.extend([0x0f, 0x05]); // syscall
    debug_assert_eq!(c.len(), 33);
    c
}

/// AArch64: the same two system calls (write is 64, exit is 93 there).
fn arm64(len: u32) -> Vec<u8> {
    let movz = |reg: u32, imm: u32| 0xd280_0000 | (imm << 5) | reg;
    const SVC: u32 = 0xd400_0001;
    // adr x1, message: the message starts 28 bytes after this instruction (immlo, the
    // offset's low two bits, is 0 here; immhi is the rest).
    const OFFSET: u32 = 28;
    let adr_x1 = 0x1000_0000 | ((OFFSET >> 2) << 5) | 1;
    let words = [movz(0, 1), adr_x1, movz(2, len), movz(8, 64), SVC, movz(0, 0), movz(8, 93), SVC];
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_runs_its_own_program() {
        // The architecture this test runs on executes its program; the other is checked
        // by `podman run` of the demo image (amd64) and by its bytes here.
        let Some(arch) = (match std::env::consts::ARCH {
            "x86_64" => Some("amd64"),
            "aarch64" => Some("arm64"),
            _ => None,
        }) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hello");
        std::fs::write(&path, hello(arch, "hi from the demo\n").unwrap()).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = std::process::Command::new(&path).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"hi from the demo\n");
    }

    #[test]
    fn each_program_is_an_elf_for_its_machine() {
        let a = hello("arm64", "x\n").unwrap();
        assert_eq!(&a[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([a[18], a[19]]), 0xb7);
        assert_eq!(a.len(), HEADERS + 32 + 2);
        // adr x1, #28 and the message right after the eight instructions.
        assert_eq!(&a[HEADERS + 4..HEADERS + 8], &0x1000_00e1u32.to_le_bytes());
        assert_eq!(&a[HEADERS + 32..], b"x\n");
        assert!(hello("s390x", "x").is_none());
    }
}
