//! Every tail call of the object names its stage with a constant.
//!
//! The verifier turns a `bpf_tail_call` whose index is the same constant
//! on every path into a direct jump, patched when the program array slot
//! changes (`do_misc_fixups`, "poke" descriptors on x86-64 and arm64).
//! With an index in a register, the JIT emits an indirect jump through the
//! program array, which costs a retpoline where Spectre mitigations are on,
//! on every DNS query and ClientHello. The compiler merges calls that
//! differ only in a constant into one call with a variable index; this
//! reads the bytecode as built to see that it did not.

use std::collections::BTreeSet;

use object::{Object as _, ObjectSection as _, SectionKind};

/// `BPF_JMP | BPF_CALL`, `BPF_ALU64 | BPF_MOV | BPF_K`, `BPF_ALU | BPF_MOV | BPF_K`.
const CALL: u8 = 0x85;
const MOV64_K: u8 = 0xb7;
const MOV32_K: u8 = 0xb4;
/// The `bpf_tail_call` helper's id.
const TAIL_CALL: i32 = 12;

/// One instruction: opcode, destination and source registers, offset, immediate.
struct Insn {
    op: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

fn insns(code: &[u8]) -> Vec<Insn> {
    code.chunks_exact(8)
        .map(|c| Insn {
            op: c[0],
            dst: c[1] & 0x0f,
            src: c[1] >> 4,
            off: i16::from_le_bytes([c[2], c[3]]),
            imm: i32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}

/// Instruction indices some jump lands on.
fn jump_targets(code: &[Insn]) -> BTreeSet<usize> {
    let mut t = BTreeSet::new();
    for (i, insn) in code.iter().enumerate() {
        let class = insn.op & 0x07;
        // BPF_JMP and BPF_JMP32, except calls and exits.
        if (class == 0x05 || class == 0x06) && insn.op != CALL && insn.op != 0x95 {
            let off = if insn.op == 0x06 { i64::from(insn.imm) } else { i64::from(insn.off) };
            // A jump out of the program (malformed) lands nowhere here.
            if let Ok(to) = usize::try_from(i64::try_from(i).unwrap_or(i64::MAX) + 1 + off) {
                t.insert(to);
            }
        }
    }
    t
}

/// The index of each tail call in `code`: `Some(k)` when `r3` is set to the
/// constant `k` in the straight-line code just before it, `None` otherwise.
fn tail_call_indices(code: &[Insn]) -> Vec<(usize, Option<i32>)> {
    let targets = jump_targets(code);
    let mut out = Vec::new();
    for (i, insn) in code.iter().enumerate() {
        // Source register 0: a helper call (1 is a call within the program).
        if insn.op != CALL || insn.src != 0 || insn.imm != TAIL_CALL {
            continue;
        }
        let mut k = None;
        for j in (0..i).rev() {
            // A jump lands after `j`: another path may bring another index.
            if targets.contains(&(j + 1)) {
                break;
            }
            let prev = &code[j];
            // Jumps (classes 5, 6) and stores to memory (2, 3) name a
            // register as `dst` without writing it.
            let writes_r3 = prev.dst == 3 && !matches!(prev.op & 0x07, 0x02 | 0x03 | 0x05 | 0x06);
            if writes_r3 {
                if prev.op == MOV64_K || prev.op == MOV32_K {
                    k = Some(prev.imm);
                }
                break;
            }
        }
        out.push((i, k));
    }
    out
}

#[test]
fn every_tail_call_has_a_constant_index() {
    for (what, bytes) in [
        ("release", filter_user::dataplane::loader::NAMEWALL_OBJECT),
        ("debug", filter_user::dataplane::loader::NAMEWALL_DEBUG_OBJECT),
    ] {
        let file = object::File::parse(bytes).expect("the XDP object is ELF");
        let mut found = 0;
        for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
            let name = section.name().unwrap_or("?").to_owned();
            let code = insns(section.data().expect("section data"));
            for (at, k) in tail_call_indices(&code) {
                found += 1;
                assert!(k.is_some(), "{what} object, {name}: the tail call at instruction {at} has no constant index");
            }
        }
        // The entry stage calls three stages, the DNS and TLS stages one each.
        assert!(found >= 5, "{what} object: {found} tail calls found, expected at least 5");
    }
}

#[test]
fn the_reader_tells_constant_from_variable() {
    let code = |words: &[[u8; 8]]| insns(&words.concat());
    let mov_r3 = [MOV32_K, 0x03, 0, 0, 4, 0, 0, 0];
    let load_r3 = [0x61, 0xa3, 0x90, 0xff, 0, 0, 0, 0];
    let call = [CALL, 0, 0, 0, 12, 0, 0, 0];
    let ja_back = [0x05, 0, 0xfe, 0xff, 0, 0, 0, 0];
    assert_eq!(tail_call_indices(&code(&[mov_r3, call])), [(1, Some(4))]);
    assert_eq!(tail_call_indices(&code(&[load_r3, call])), [(1, None)]);
    // A jump lands on the call: not straight-line.
    assert_eq!(tail_call_indices(&code(&[mov_r3, call, ja_back])), [(1, None)]);
}
