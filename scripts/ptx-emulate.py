#!/usr/bin/env python3
"""A small PTX interpreter for the subset of PTX that kernels/*.ptx use, and a self-test
that runs every kernel on small seeded inputs and compares it with a plain-Python model of
the kernel's contract (the CPU reference semantics).

It exists because the kernels are hand-written and CI has no GPU: ptxas proves that they
assemble, this proves (slowly, on small shapes) that their indexing, barriers, shuffles and
early exits compute the right numbers. It models threads; warps (shfl.sync, vote.sync and
mma.sync wait for all 32 lanes; mma.sync m16n8k8 .tf32 follows the PTX ISA's fragment
layout and rejects operands that are not tf32 values); warpgroups (wgmma.mma_async
m64nNk8 .tf32 with B, and A too or A from registers in the ISA's fragment layout, in
shared memory through no-swizzle K-major descriptors, run when a wgmma.wait_group retires
its group; a shared store into a word that an issued operation not yet retired reads is
an error, and so is an instruction (warp-collective ones included) that touches an
accumulator or A register of such an operation, a missing wgmma.fence or a missing
fence.proxy.async); CTAs (bar.sync waits for every live thread, bar.sync id, count for
`count` threads); the global, shared and generic address spaces (a global-space address in
a generic access is an error); f32 rounding; and it detects shared-memory races (two threads
touching a word between barriers, one of them writing), so a missing barrier fails even
though the interpreter runs threads one at a time. Approximate instructions
(ex2/lg2/rsqrt.approx) are computed exactly and rounded to f32, so results match the GPU
to about 1e-6, not bit for bit. Tests can also require that a labelled path ran (or not),
and that a kernel's memory instructions are served at their ideal (AccessStats: shared-memory
wavefronts under the bank model, global sectors), so a bank conflict or a half-used sector
fails a test like a wrong number.

    python3 scripts/ptx-emulate.py            # all kernels, a few shapes each (one process per CPU)
    python3 scripts/ptx-emulate.py sinkhorn   # only the tests whose name contains "sinkhorn"
    python3 scripts/ptx-emulate.py -j 1       # in this process, one test after another
    python3 scripts/ptx-emulate.py wgmma --access  # and each memory instruction's wavefronts or sectors

Pure Python 3 (no numpy), so it runs wherever ptxas-check runs.
"""

import math
import operator
import os
import random
import re
import struct
import sys
from pathlib import Path

KERNELS = Path(os.environ.get("OPTICAL_KERNELS", Path(__file__).resolve().parent.parent / "kernels"))


_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_F32_PACK, _F32_UNPACK = _F32.pack, _F32.unpack
_U32_PACK, _U32_UNPACK = _U32.pack, _U32.unpack


def f32(x):
    return _F32_UNPACK(_F32_PACK(x))[0]


def bits(v):
    """The 32-bit pattern of a register value (float or int)."""
    if type(v) is float:
        return _U32_UNPACK(_F32_PACK(v))[0]
    return v & 0xFFFFFFFF


def from_bits(b):
    return _F32_UNPACK(_U32_PACK(b & 0xFFFFFFFF))[0]


# struct.Struct of n little-endian f32 ("f") or u32 ("I") values, by (kind, n)
_PACKERS = {(k, n): struct.Struct("<" + k * n) for k in "fI" for n in (1, 2, 4)}


# ---- memory ------------------------------------------------------------------------------
GLOBAL_BASE = 0x1_0000_0000
SHARED_GENERIC = 0x7F00_0000_0000  # where the shared window appears in generic space
# Global-space addresses (from cvta.to.global) carry this tag so that the emulator notices a
# global address used by a generic load/store, or a generic pointer used by ld.global.
GLOBAL_TAG = 1 << 62


class Memory:
    def __init__(self):
        self.buffers = []  # (base, bytearray)
        self.next = GLOBAL_BASE

    def alloc(self, data: bytes):
        base = self.next
        self.buffers.append((base, bytearray(data)))
        self.next += (len(data) + 0xFFFF) // 0x10000 * 0x10000 + 0x10000
        return base

    def find(self, addr, size):
        for base, buf in self.buffers:
            if base <= addr and addr + size <= base + len(buf):
                return buf, addr - base
        raise IndexError(f"global access out of bounds: {addr:#x} (+{size})")

    def read(self, base):
        return self.find(base, 1)[0]


class Shared:
    """Shared memory with a race detector: between two barriers a word may be written by
    one thread only, and a word written by one thread may not be read by another. A named
    barrier over part of the CTA (bar.sync id, count) orders its participants' earlier
    accesses before their later ones only: each access keeps how many partial barriers had
    completed when it was made, so that it is ordered before a thread that met its thread at
    a later one; a full barrier clears them all."""

    def __init__(self, size):
        # word -> thread, for shared-memory writes that thread has not yet made visible to
        # the async proxy (fence.proxy.async); wgmma may not read such a word
        self.unfenced = {}
        # word -> count of the issued wgmma operations, not yet retired by a wait, that read
        # it: writing such a word is an error (the operation may read it at any time until
        # it retires)
        self.in_flight = {}
        # Uninitialised shared memory reads as NaN, so a read of a word no one wrote shows.
        self.buf = bytearray(struct.pack("<I", 0x7FC00000) * ((size + 3) // 4))[:size]
        # word -> (thread, partial barriers completed then) of its last write, and word ->
        # {thread: partial barriers completed then} of its reads, since the last full barrier
        self.writer = {}
        self.readers = {}
        # the thread sets of the partial barriers (bar.sync id, count) since the last full one
        self.events = []

    def barrier(self, tids=None):
        """A barrier over every thread (tids None) or over the threads `tids`."""
        if tids is None:
            self.writer.clear()
            self.readers.clear()
            self.events.clear()
            return
        self.events.append(tids)

    def ordered(self, earlier, since, tid):
        """Whether thread `earlier`'s access, made when `since` partial barriers had
        completed, is ordered before thread `tid`'s access now: a partial barrier since then
        had both threads."""
        for tids in self.events[since:]:
            if earlier in tids and tid in tids:
                return True
        return False

    def touch(self, addr, size, tid, write, where):
        writer, readers, events = self.writer, self.readers, len(self.events)
        for w in range(addr >> 2, (addr + size) >> 2):
            e = writer.get(w)
            wr = None
            if e is not None and e[0] != tid and (e[1] == events or not self.ordered(e[0], e[1], tid)):
                wr = e[0]
            if write:
                rs = readers.get(w)
                others = [r for r, since in rs.items() if r != tid and (since == events or not self.ordered(r, since, tid))] if rs else []
                if wr is not None or others:
                    raise RuntimeError(f"{where()}: shared-memory race on byte {4 * w}: thread {tid} "
                                       f"writes, thread {wr if wr is not None else min(others)} also accessed it "
                                       "since the last barrier")
                writer[w] = (tid, events)
            else:
                if wr is not None:
                    raise RuntimeError(f"{where()}: shared-memory race on byte {4 * w}: thread {tid} reads "
                                       f"what thread {wr} wrote since the last barrier")
                rs = readers.get(w)
                if rs is None:
                    readers[w] = {tid: events}
                else:
                    rs[tid] = events

    def check(self, addr, size):
        if addr < 0 or addr + size > len(self.buf):
            raise IndexError(f"shared access out of bounds: {addr} (+{size}) of {len(self.buf)}")
        if addr % min(size, 16):
            raise ValueError(f"misaligned shared access at {addr} (size {size})")


class AccessStats:
    """How a kernel's warps touch memory, counted per instruction the way the hardware serves
    a warp's request (enabled by setting the module's STATS; off by default, since it slows
    the interpreter). Threads run one at a time here, so the k-th execution of an
    instruction by the lanes of a warp is taken as one warp-level request (true where the
    warp is converged, as in the kernels' loads and stores).

    Shared memory: 32 banks of 4 bytes. A request of 4-byte accesses is served for the whole
    warp at once, 8- and 16-byte ones per half warp; a phase takes as many wavefronts as its
    most-used bank holds distinct words (lanes reading the same word share it). The ideal is
    one wavefront per 128 distinct bytes of each phase. Calibrated on H200 profiles: the
    fused kernel's shared wavefronts per Sinkhorn iteration (1,664 per pair, 16-byte
    potential loads that four groups of lanes share) match this exactly, where quarter-warp
    phases would give 2,176; its cost phase's stores match within 2 %.

    Global memory: the 32-byte sectors a request touches, against the bytes it moves.

    Counted per PTX instruction: ptxas may pair adjacent 4-byte accesses into 8-byte ones (it
    does for the cost kernels' staged accumulators), so where a count matters compare it
    with the SASS."""

    def __init__(self):
        # (entry, pc) -> [space, write, requests, cost, ideal, opcode, operands]
        self.rows = {}

    def add(self, entry, pc, space, write, accesses):
        """One warp-level request: `accesses` is a list of (lane, address, bytes)."""
        if space == "shared":
            width = max(nb for _, _, nb in accesses)
            per_phase = 32 if width <= 4 else 16
            phases = {}
            for lane, addr, nb in accesses:
                phases.setdefault(lane // per_phase, set()).update(range(addr // 4, (addr + nb) // 4))
            cost = ideal = 0
            for words in phases.values():
                banks = {}
                for w in words:
                    banks[w % 32] = banks.get(w % 32, 0) + 1
                cost += max(banks.values())
                ideal += (len(words) + 31) // 32
        else:
            sectors, touched = set(), set()
            for _, addr, nb in accesses:
                sectors.update(range(addr // 32, (addr + nb - 1) // 32 + 1))
                touched.update(range(addr, addr + nb))
            cost, ideal = len(sectors), (len(touched) + 31) // 32
        _, opc, ops = entry.code[pc]
        row = self.rows.setdefault((entry.name, pc), [space, write, 0, 0, 0, opc, ops])
        row[2] += 1
        row[3] += cost
        row[4] += ideal

    def table(self):
        """One line per memory instruction: requests, and wavefronts (shared) or sectors
        (global) per request against the ideal."""
        lines = []
        for (name, pc), (space, write, req, cost, ideal, opc, ops) in sorted(self.rows.items()):
            unit = "wavefronts" if space == "shared" else "sectors"
            lines.append(f"  {name} pc {pc:4d} {opc} {', '.join(ops)[:40]:40s} {req:7d} requests, "
                         f"{cost / req:5.2f} {unit} per request (ideal {ideal / req:5.2f})")
        return "\n".join(lines)


# Set to an AccessStats to count every memory request of the kernels run (see AccessStats).
STATS = None


# ---- parsing -----------------------------------------------------------------------------
class Entry:
    def __init__(self, name, params, body, static_shared):
        self.name, self.params, self.static_shared = name, params, static_shared
        self.code, self.labels = [], {}
        for line in body:
            if re.fullmatch(r"[A-Za-z_][\w$]*:", line):
                self.labels[line[:-1]] = len(self.code)
            else:
                self.code.append(parse_instr(line))
        # Kernels with wgmma get its fence rules checked (register and proxy tracking).
        self.uses_wgmma = any(op.startswith("wgmma.") for _, op, _ in self.code)
        # per instruction: its opcode's parts, the operation and the type (the last part);
        # and the names its operands mention (registers, for the wgmma rules)
        self.decoded = [(p, p[0], p[-1]) for p in (opc.split(".") for _, opc, _ in self.code)]
        self.names = [frozenset(n for o in ops for n in re.findall(r"[A-Za-z_][\w$]*", o)) for _, _, ops in self.code]


def split_operands(s):
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def parse_instr(line):
    pred = None
    m = re.match(r"@(!?)(\w+)\s+(.*)", line)
    if m:
        pred = (m.group(1) == "!", m.group(2))
        line = m.group(3)
    line = line.rstrip(";").strip()
    parts = line.split(None, 1)
    return (pred, parts[0], split_operands(parts[1]) if len(parts) > 1 else [])


def parse_module(text):
    lines = []
    for raw in text.splitlines():
        line = raw.split("//")[0].strip()
        if line:
            lines.append(line)
    entries, i = {}, 0
    while i < len(lines):
        m = re.match(r"\.visible \.entry (\w+)\(", lines[i])
        if not m:
            i += 1
            continue
        name, params = m.group(1), []
        i += 1
        while not lines[i].startswith(")"):
            pm = re.match(r"\.param \.(\w+) (\w+)", lines[i])
            params.append((pm.group(2), pm.group(1)))
            i += 1
        i += 1  # ")"
        maxntid = None
        while lines[i] != "{":  # performance directives (.maxntid, ...)
            mm = re.match(r"\.maxntid (\d+)", lines[i])
            if mm:
                maxntid = int(mm.group(1))
            i += 1
        i += 1
        body, static_shared = [], {}
        offset = 0
        while lines[i] != "}":
            line = lines[i]
            sm = re.match(r"\.shared \.align (\d+) \.b8 (\w+)\[(\d+)\];", line)
            if sm:
                align, var, size = int(sm.group(1)), sm.group(2), int(sm.group(3))
                offset = (offset + align - 1) // align * align
                static_shared[var] = (offset, size)
                offset += size
            elif not line.startswith(".reg"):
                body.append(line)
            i += 1
        entries[name] = Entry(name, params, body, static_shared)
        entries[name].maxntid = maxntid
        i += 1
    return entries


# ---- execution ---------------------------------------------------------------------------
def tf32_round(v):
    """cvt.rna.tf32.f32: round to 10 mantissa bits, to nearest, ties away from zero; the
    result is an f32 bit pattern whose low 13 bits are 0 (NaN and infinities kept)."""
    b = bits(v)
    if (b >> 23) & 0xFF == 0xFF:
        return from_bits(b)
    return from_bits(((b + 0x1000) & 0xFFFFE000) & 0xFFFFFFFF)


_TF32_CHECK_PACK, _TF32_CHECK_UNPACK = struct.Struct("<6f").pack, struct.Struct("<6I").unpack
_F32X128_PACK, _F32X128_UNPACK = struct.Struct("<128f").pack, struct.Struct("<128f").unpack


def mma_m16n8k8_tf32(lanes):
    """mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 over one warp. `lanes[l]` is lane
    l's (a0..a3, b0, b1, c0..c3) as f32 values; returns each lane's (d0..d3). Fragment
    layout (PTX ISA), g = lane / 4, q = lane % 4: a0 = A[g][q], a1 = A[g+8][q],
    a2 = A[g][q+4], a3 = A[g+8][q+4]; b0 = B[q][g], b1 = B[q+4][g]; c0 = C[g][2q],
    c1 = C[g][2q+1], c2 = C[g+8][2q], c3 = C[g+8][2q+1]. The tf32 products are exact in
    double; the sum is rounded to f32 once (the hardware's internal rounding may differ in
    the last ulp)."""
    A = [[0.0] * 8 for _ in range(16)]
    B = [[0.0] * 8 for _ in range(8)]
    C = [[0.0] * 8 for _ in range(16)]
    for lane, (a0, a1, a2, a3, b0, b1, c0, c1, c2, c3) in enumerate(lanes):
        g, q = lane >> 2, lane & 3
        for v, b in zip((a0, a1, a2, a3, b0, b1), _TF32_CHECK_UNPACK(_TF32_CHECK_PACK(a0, a1, a2, a3, b0, b1))):
            if b & 0x1FFF:
                raise ValueError(f"mma tf32 operand {v!r} (lane {lane}) is not a tf32 value: cvt.rna.tf32.f32 it first")
        A[g][q], A[g + 8][q], A[g][q + 4], A[g + 8][q + 4] = a0, a1, a2, a3
        B[q][g], B[q + 4][g] = b0, b1
        C[g][2 * q], C[g][2 * q + 1], C[g + 8][2 * q], C[g + 8][2 * q + 1] = c0, c1, c2, c3
    Bt = list(zip(*B))  # columns of B
    mul = operator.mul
    # every sum rounded to f32 at once (struct's f32 rounding is f32()'s)
    D = _F32X128_UNPACK(_F32X128_PACK(*[C[r][c] + sum(map(mul, A[r], Bt[c])) for r in range(16) for c in range(8)]))
    D = [D[8 * r : 8 * r + 8] for r in range(16)]
    return [(D[lane >> 2][2 * (lane & 3)], D[lane >> 2][2 * (lane & 3) + 1],
             D[(lane >> 2) + 8][2 * (lane & 3)], D[(lane >> 2) + 8][2 * (lane & 3) + 1]) for lane in range(32)]


def wgmma_operand(shared, desc, rows, where):
    """The rows x 8 tf32 operand that a wgmma shared-memory descriptor names: K-major, no
    swizzle (layout type 0), the canonical layout ((8, rows/8), (4, 2)) : ((16 B, SBO), (4 B,
    LBO)) of the PTX ISA: core matrices of 8 rows x 16 bytes, SBO bytes apart along the rows
    and LBO bytes apart along k. Values that are not tf32 are an error (cvt.rna.tf32.f32)."""
    start = (desc & 0x3FFF) << 4
    lbo = ((desc >> 16) & 0x3FFF) << 4
    sbo = ((desc >> 32) & 0x3FFF) << 4
    if desc >> 62 or (desc >> 49) & 7:
        raise NotImplementedError(f"{where}: wgmma descriptor {desc:#x}: only no-swizzle, base offset 0")
    out = []
    for r in range(rows):
        row = []
        for k in range(8):
            addr = start + (r // 8) * sbo + (r % 8) * 16 + (k // 4) * lbo + (k % 4) * 4
            shared.check(addr, 4)
            v = struct.unpack("<f", shared.buf[addr : addr + 4])[0]
            if bits(v) & 0x1FFF:
                raise ValueError(f"{where}: wgmma tf32 operand {v!r} at shared byte {addr} is not a tf32 value")
            row.append(v)
        out.append(row)
    return out


def wgmma_tf32(shared, op, threads, where):
    """Run one recorded wgmma.mma_async m64nNk8.f32.tf32.tf32 of a warpgroup (`threads`, its
    128 threads in order). Accumulator layout (PTX ISA, m64nNk8 f32): thread t of the
    warpgroup, w = t / 32, g = (t % 32) / 4, q = t % 4, holds for each 8-column block j the
    four registers 4j .. 4j + 3 = D[16w + g][8j + 2q], D[16w + g][8j + 2q + 1],
    D[16w + g + 8][8j + 2q], D[16w + g + 8][8j + 2q + 1]. The tf32 products are exact in
    double and each output is rounded to f32 once."""
    n, da, db, scale_d, acc = op[:5]
    A = wgmma_operand(shared, da, 64, where) if isinstance(da, int) else da
    B = wgmma_operand(shared, db, n, where)
    mul = operator.mul
    rounded = struct.Struct(f"<{n // 2}f")
    for t, th in enumerate(threads):
        w, g, q = t // 32, (t % 32) // 4, t % 4
        regs = th.regs
        sums = []
        for j in range(n // 8):
            for v in range(4):
                r = 16 * w + g + 8 * (v // 2)
                c = 8 * j + 2 * q + v % 2
                old = regs[acc[4 * j + v]] if scale_d else 0.0
                sums.append(old + sum(map(mul, A[r], B[c])))
        # every accumulator rounded to f32 at once (struct's f32 rounding is f32()'s)
        for name, v in zip(acc, rounded.unpack(rounded.pack(*sums))):
            regs[name] = v


class Thread:
    __slots__ = ("tid", "regs", "pc", "state", "bar", "red", "locked", "unfenced_regs")

    def __init__(self, tid):
        self.tid, self.regs, self.pc, self.state, self.bar, self.red = tid, {}, 0, "run", None, None
        # accumulator and A-fragment registers of wgmma.mma_async operations not yet retired
        # by a wait
        self.locked = set()
        # registers read or written by other instructions since this thread's last
        # wgmma.fence (tracked in kernels that use wgmma); None before its first fence
        self.unfenced_regs = None


MASK64 = (1 << 64) - 1

# The instructions that `run_cta` compiles to a fast path, by operation.
SETP_CMP = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
            "eq": operator.eq, "ne": operator.ne}
F32_BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "max": max, "min": min}
F32_UNARY = {
    "neg": operator.neg,
    "abs": abs,
    "ex2": lambda a: 0.0 if a == -math.inf else (f32(2.0 ** a) if a < 128 else math.inf),
    "lg2": lambda a: -math.inf if a == 0 else f32(math.log2(a)),
    "rsqrt": lambda a: math.inf if a == 0 else f32(1.0 / math.sqrt(a)),
}
INT_BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "shl": operator.lshift,
              "shr": operator.rshift, "and": operator.and_, "or": operator.or_, "xor": operator.xor}

# (entry name, pc) of every instruction executed: lets a test check which paths ran.
VISITED = set()


def run_kernel(entry, mem, args, grid, block, dyn_shared):
    """Launch `entry` with `args` (python ints for pointers/u32, floats for f32)."""
    assert len(args) == len(entry.params), f"{entry.name}: {len(args)} args for {len(entry.params)} params"
    if entry.maxntid is not None and block > entry.maxntid:
        raise ValueError(f"{entry.name}: block of {block} threads, .maxntid {entry.maxntid}")
    params = dict(zip([p for p, _ in entry.params], args))
    static_size = max((o + s for o, s in entry.static_shared.values()), default=0)
    dyn_base = (static_size + 15) // 16 * 16
    for cz in range(grid[2]):
        for cy in range(grid[1]):
            for cx in range(grid[0]):
                run_cta(entry, mem, params, (cx, cy, cz), block, dyn_base, dyn_shared)


def run_cta(entry, mem, params, ctaid, block, dyn_base, dyn_shared):
    shared = Shared(dyn_base + dyn_shared)
    nthreads = block
    threads = [Thread(t) for t in range(nthreads)]
    for t in threads:
        t.regs["%tid.x"] = t.tid
    specials = {"%ntid.x": nthreads, "%ctaid.x": ctaid[0], "%ctaid.y": ctaid[1], "%ctaid.z": ctaid[2],
                "%dynamic_smem_size": dyn_shared}
    symbols = {name: off for name, (off, _) in entry.static_shared.items()}
    symbols["smem"] = dyn_base
    code, labels = entry.code, entry.labels
    # memory requests for STATS: (warp, pc, k) -> [(lane, address, bytes)] of the k-th
    # execution of instruction pc by the warp's lanes, and (thread, pc) -> executions so far
    requests, executions = {}, {}

    def record(t, space, addr, nbytes, write):
        k = executions.get((t.tid, t.pc), 0)
        executions[(t.tid, t.pc)] = k + 1
        requests.setdefault((t.tid // 32, t.pc, k), (space, write, []))[2].append((t.tid % 32, addr, nbytes))

    def flush_stats():
        if STATS is not None:
            for (_, pc, _), (space, write, acc) in requests.items():
                STATS.add(entry, pc, space, write, acc)

    # Operands that name no register (immediates, special registers, shared symbols) never
    # change within a CTA: each is worked out once. "%tid.x" is kept in each thread's regs.
    consts = {}

    def constant(op):
        """The value of an operand that names no register, or None."""
        if op.startswith("0f"):
            return from_bits(int(op[2:], 16))
        if op in specials:
            return specials[op]
        if op in symbols:
            return symbols[op]
        if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", op):
            return int(op, 0)
        return None

    def val(t, op):
        r = t.regs
        if op in r:
            return r[op]
        v = consts.get(op)
        if v is None:
            v = constant(op)
            if v is None:
                raise KeyError(f"{entry.name}: thread {t.tid} reads unset register {op} at pc {t.pc}: {code[t.pc]}")
            consts[op] = v
        return v

    # "[base+offset]" -> (base, offset)
    addresses = {}

    def address_parts(op):
        a = addresses.get(op)
        if a is None:
            inner = op.strip("[]")
            m = re.fullmatch(r"(\w+)\+(-?\d+)", inner)
            a = addresses[op] = (m.group(1), int(m.group(2))) if m else (inner, 0)
        return a

    def address(t, op):
        base, off = address_parts(op)
        return val(t, base) + off

    def check_space(space, addr):
        if space == "global":
            if not addr & GLOBAL_TAG:
                raise ValueError(f"{entry.name}: ld/st.global with a generic address {addr:#x}")
            return addr & ~GLOBAL_TAG
        if space == "generic" and addr & GLOBAL_TAG:
            raise ValueError(f"{entry.name}: generic ld/st with a global-space address {addr:#x}")
        return addr

    def load(t, space, addr, ty, n=1):
        nbytes = 4 * n
        addr = check_space(space, addr)
        if space == "generic":
            if addr >= SHARED_GENERIC:
                space, addr = "shared", addr - SHARED_GENERIC
            else:
                space = "global"
        if STATS is not None:
            record(t, space, addr, nbytes, False)
        if space == "shared":
            shared.check(addr, nbytes)
            shared.touch(addr, nbytes, t.tid, False, lambda: f"{entry.name} pc {t.pc}")
            raw = shared.buf[addr : addr + nbytes]
        else:
            buf, off = mem.find(addr, nbytes)
            if off % min(nbytes, 16):
                raise ValueError(f"misaligned global access {addr:#x}")
            raw = buf[off : off + nbytes]
        return list(_PACKERS["f" if ty == "f32" else "I", n].unpack(raw))

    def store(t, space, addr, ty, values):
        n = len(values)
        vals = [float(v) if ty == "f32" else bits(v) for v in values]
        raw = _PACKERS["f" if ty == "f32" else "I", n].pack(*vals)
        addr = check_space(space, addr)
        if space == "generic":
            if addr >= SHARED_GENERIC:
                space, addr = "shared", addr - SHARED_GENERIC
            else:
                space = "global"
        if STATS is not None:
            record(t, space, addr, 4 * n, True)
        if space == "shared":
            shared.check(addr, 4 * n)
            shared.touch(addr, 4 * n, t.tid, True, lambda: f"{entry.name} pc {t.pc}")
            if entry.uses_wgmma:
                for w in range(addr // 4, addr // 4 + n):
                    if w in shared.in_flight:
                        raise RuntimeError(f"{entry.name}: thread {t.tid} writes shared byte {4 * w} at pc {t.pc}, "
                                           "which a wgmma in flight (issued, not yet retired by a wait) reads")
                    shared.unfenced[w] = t.tid
            shared.buf[addr : addr + 4 * n] = raw
        else:
            buf, off = mem.find(addr, 4 * n)
            if off % min(4 * n, 16):
                raise ValueError(f"{entry.name}: misaligned global store at {addr:#x} ({4 * n} bytes), pc {t.pc}")
            buf[off : off + 4 * n] = raw

    def getter(op):
        """A function of a thread's registers that reads operand `op` the way `val` does (a
        register not set raises KeyError; the generic path then says which)."""
        v = constant(op)
        if v is None:
            return operator.itemgetter(op)
        return lambda r: v

    def compile_fast(pc):
        """A function (t, r) that runs instruction pc exactly as the generic path of `step`
        does, for the common arithmetic, comparison, move, load and store instructions; False
        for the others (branches, barriers, collectives, fences, conversions), which the
        generic path runs."""
        _, opc, ops = code[pc]
        parts, op, ty = decoded[pc]
        if op in ("ld", "st") and parts[1] == "param":
            if op == "st":
                return False
            d, name = ops[0], ops[1].strip("[]")

            def f(t, r):
                r[d] = params[name]
            return f
        if op in ("ld", "st"):
            space = parts[1] if parts[1] in ("global", "shared") else "generic"
            width = 4 if "v4" in parts else 2 if "v2" in parts else 1
            base, off = address_parts(ops[0] if op == "st" else ops[1])
            ga = getter(base)
            if op == "ld":
                if width > 1:
                    dests = split_operands(ops[0].strip("{}"))

                    def f(t, r):
                        for name, v in zip(dests, load(t, space, ga(r) + off, ty, width)):
                            r[name] = v
                else:
                    d = ops[0]

                    def f(t, r):
                        r[d] = load(t, space, ga(r) + off, ty, 1)[0]
                return f
            srcs = [getter(x) for x in split_operands(ops[1].strip("{}"))] if width > 1 else [getter(ops[1])]
            if len(srcs) != width:
                return False

            def f(t, r):
                addr = ga(r) + off
                store(t, space, addr, ty, [g(r) for g in srcs])
            return f
        if op == "mov":
            d, g = ops[0], getter(ops[1])

            def f(t, r):
                r[d] = g(r)
            return f
        if op == "setp":
            cmp = SETP_CMP.get(parts[1])
            combine = parts[2] if parts[2] in ("and", "or", "xor") else None
            if cmp is None or (combine is None and len(ops) != 3):
                return False
            d, ga, gb = ops[0], getter(ops[1]), getter(ops[2])
            signed = 32 if ty == "s32" else 64 if ty == "s64" else 0
            neg_c = combine is not None and ops[3].startswith("!")
            c_name = ops[3].lstrip("!") if combine is not None else None

            def f(t, r):
                a, b = ga(r), gb(r)
                if signed:
                    w = signed
                    a, b = (((v & ((1 << w) - 1)) ^ (1 << (w - 1))) - (1 << (w - 1)) for v in (a, b))
                res = cmp(a, b)
                if combine is not None:
                    c = r[c_name] != neg_c
                    res = (res and c) if combine == "and" else (res or c) if combine == "or" else (res != c)
                r[d] = res
            return f
        if op == "selp":
            d, ga, gb, p = ops[0], getter(ops[1]), getter(ops[2]), ops[3]

            def f(t, r):
                r[d] = ga(r) if r[p] else gb(r)
            return f
        if op in ("bra", "ret", "bar", "shfl", "vote", "mma", "wgmma", "fence", "prefetch", "cvta", "cvt"):
            return False
        if ty == "pred":
            d, a_, b_ = ops[0], ops[1], ops[2]
            if op == "and":
                def f(t, r):
                    r[d] = r[a_] and r[b_]
            else:
                def f(t, r):
                    r[d] = r[a_] or r[b_]
            return f
        if ty == "f32":
            d = ops[0]
            ga = getter(ops[1])
            if op == "fma":
                gb, gc = getter(ops[2]), getter(ops[3])

                def f(t, r):
                    r[d] = f32(ga(r) * gb(r) + gc(r))
            elif op in F32_BINARY:
                fn, gb = F32_BINARY[op], getter(ops[2])

                def f(t, r):
                    r[d] = f32(fn(ga(r), gb(r)))
            elif op in F32_UNARY:
                fn = F32_UNARY[op]

                def f(t, r):
                    r[d] = fn(ga(r))
            else:
                return False
            return f
        width = 64 if ty in ("u64", "b64") else 32
        mask = (1 << width) - 1
        d, ga = ops[0], getter(ops[1])
        if op == "mad":
            mask = MASK64 if parts[1] == "wide" else mask
            gb, gc = getter(ops[2]), getter(ops[3])

            def f(t, r):
                r[d] = (ga(r) * gb(r) + gc(r)) & mask
            return f
        if op == "mul" and parts[1] == "hi":
            if not ty.startswith("u"):
                return False
            gb = getter(ops[2])

            def f(t, r):
                r[d] = (((ga(r) & mask) * (gb(r) & mask)) >> width) & mask
            return f
        if op == "mul":
            mask = MASK64 if parts[1] == "wide" else mask
        if op in INT_BINARY:
            fn, gb = INT_BINARY[op], getter(ops[2])

            def f(t, r):
                r[d] = fn(ga(r), gb(r)) & mask
            return f
        return False

    def track_wgmma_registers(t, pc):
        # Any instruction other than wgmma and fences, warp-collective ones included, that
        # names a register of a wgmma not yet retired (its accumulators, or its A fragment)
        # is an error; and every register named since the last wgmma.fence is noted for
        # its rule.
        names = entry.names[pc]
        if names & t.locked:
            raise RuntimeError(f"{entry.name}: thread {t.tid} touches {sorted(names & t.locked)}, "
                               f"registers (accumulators or A fragment) of a wgmma not yet waited for, at pc {pc}: {code[pc]}")
        if t.unfenced_regs is not None:
            t.unfenced_regs |= names

    decoded = entry.decoded
    fast = [None] * len(code)
    visited = set()
    visited_add = visited.add
    uses_wgmma = entry.uses_wgmma

    def step(t):
        """Run thread t until it blocks (a warp-collective instruction or bar) or exits."""
        r = t.regs
        while True:
            pc = t.pc
            visited_add(pc)
            pred, opc, ops = code[pc]
            if pred is not None:
                neg, p = pred
                if bool(r[p]) == neg:
                    t.pc = pc + 1
                    continue
            f = fast[pc]
            if f is None:
                f = fast[pc] = compile_fast(pc)
            if f:
                if uses_wgmma:
                    track_wgmma_registers(t, pc)
                try:
                    f(t, r)
                except KeyError:
                    pass  # a register not set: the generic path below says which
                else:
                    t.pc = pc + 1
                    continue
            parts, op, ty = decoded[pc]
            if op == "bra":
                t.pc = labels[ops[0]]
                continue
            if op == "ret":
                t.state = "done"
                return
            if op == "bar":
                # bar.sync id: every thread of the CTA; bar.sync id, count: `count` threads;
                # bar.red.or.pred d, id, p: every thread, d = the OR of the threads' p
                t.state = "bar"
                if opc == "bar.red.or.pred":
                    assert len(ops) == 3 and not ops[2].startswith("!"), ops
                    t.bar = (int(ops[1]), None)
                    t.red = (ops[0], bool(r[ops[2]]))
                elif opc == "bar.sync":
                    t.bar = (int(ops[0]), int(ops[1]) if len(ops) > 1 else None)
                    t.red = None
                else:
                    raise NotImplementedError(opc)
                return
            if uses_wgmma and op not in ("wgmma", "fence"):
                track_wgmma_registers(t, pc)
            if op in ("shfl", "vote", "mma"):
                t.state = "warp"  # resolved for the whole warp by `collective`
                return
            if op == "wgmma":
                t.state = "wg"  # resolved for the whole warpgroup by `wg_collective`
                return
            if op == "fence":  # fence.proxy.async: this thread's shared writes become visible to wgmma
                if opc != "fence.proxy.async.shared::cta":
                    raise NotImplementedError(opc)
                for w in [w for w, tid in shared.unfenced.items() if tid == t.tid]:
                    del shared.unfenced[w]
                t.pc += 1
                continue
            if op == "ld":
                space = parts[1] if parts[1] in ("param", "global", "shared") else "generic"
                if space == "param":
                    r[ops[0]] = params[ops[1].strip("[]")]
                else:
                    width = 4 if "v4" in parts else 2 if "v2" in parts else 1
                    vec = width > 1
                    addr = address(t, ops[1])
                    vals = load(t, space, addr, ty, width)
                    if vec:
                        for name, v in zip(split_operands(ops[0].strip("{}")), vals):
                            r[name] = v
                    else:
                        r[ops[0]] = vals[0]
            elif op == "prefetch":
                # prefetch.global.L2: no effect on values; the address must still be one the
                # kernel may read
                if parts[1] != "global":
                    raise NotImplementedError(opc)
                load(t, "global", address(t, ops[0]), "b32", 1)
            elif op == "st":
                space = parts[1] if parts[1] in ("global", "shared") else "generic"
                addr = address(t, ops[0])
                if "v4" in parts or "v2" in parts:
                    vals = [val(t, x) for x in split_operands(ops[1].strip("{}"))]
                    if len(vals) != (4 if "v4" in parts else 2):
                        raise ValueError(f"{entry.name}: {opc} with {len(vals)} values at pc {t.pc}")
                else:
                    vals = [val(t, ops[1])]
                store(t, space, addr, ty, vals)
            elif op == "mov":
                r[ops[0]] = val(t, ops[1])
            elif op == "cvta":
                v = val(t, ops[1])
                if parts[1] == "shared":
                    r[ops[0]] = v + SHARED_GENERIC
                elif parts[1] == "global":
                    # global -> generic (a generic load of global memory)
                    if not v & GLOBAL_TAG:
                        raise ValueError(f"{entry.name}: cvta.global of a non-global address {v:#x}")
                    r[ops[0]] = v & ~GLOBAL_TAG
                elif parts[1:3] == ["to", "global"]:
                    if v & GLOBAL_TAG or v >= SHARED_GENERIC:
                        raise ValueError(f"{entry.name}: cvta.to.global of a non-generic-global address {v:#x}")
                    r[ops[0]] = v | GLOBAL_TAG
                else:
                    raise NotImplementedError(opc)
            elif op == "cvt":
                v = val(t, ops[1])
                if opc == "cvt.rna.tf32.f32":
                    r[ops[0]] = tf32_round(v)
                else:
                    r[ops[0]] = f32(float(v)) if opc.startswith("cvt.rn.f32") else int(v)
            elif op == "setp":
                cmp = parts[1]
                a, b = val(t, ops[1]), val(t, ops[2])
                if ty in ("s32", "s64"):
                    w = 32 if ty == "s32" else 64
                    a, b = (((v & ((1 << w) - 1)) ^ (1 << (w - 1))) - (1 << (w - 1)) for v in (a, b))
                res = {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b, "eq": a == b, "ne": a != b}[cmp]
                # setp.CmpOp.BoolOp: the comparison combined with a third (predicate) operand
                if parts[2] in ("and", "or", "xor"):
                    c = r[ops[3].lstrip("!")] != ops[3].startswith("!")
                    res = {"and": res and c, "or": res or c, "xor": res != c}[parts[2]]
                elif len(ops) != 3:
                    raise NotImplementedError(opc)
                r[ops[0]] = res
            elif op == "selp":
                r[ops[0]] = val(t, ops[1]) if r[ops[3]] else val(t, ops[2])
            elif ty == "pred":
                a, b = r[ops[1]], r[ops[2]]
                r[ops[0]] = (a and b) if op == "and" else (a or b)
            elif ty == "f32":
                a = val(t, ops[1])
                if op == "fma":
                    r[ops[0]] = f32(a * val(t, ops[2]) + val(t, ops[3]))
                elif op in ("add", "sub", "mul", "max", "min"):
                    b = val(t, ops[2])
                    r[ops[0]] = f32({"add": a + b, "sub": a - b, "mul": a * b, "max": max(a, b), "min": min(a, b)}[op])
                elif op == "neg":
                    r[ops[0]] = -a
                elif op == "abs":
                    r[ops[0]] = abs(a)
                elif op == "ex2":
                    r[ops[0]] = 0.0 if a == -math.inf else (f32(2.0 ** a) if a < 128 else math.inf)
                elif op == "lg2":
                    r[ops[0]] = -math.inf if a == 0 else f32(math.log2(a))
                elif op == "rsqrt":
                    r[ops[0]] = math.inf if a == 0 else f32(1.0 / math.sqrt(a))
                else:
                    raise NotImplementedError(opc)
            else:
                width = 64 if ty in ("u64", "b64") else 32
                mask = (1 << width) - 1
                a = val(t, ops[1])
                if op == "mad":
                    res = a * val(t, ops[2]) + val(t, ops[3])
                    if parts[1] == "wide":
                        mask = MASK64
                elif op == "mul":
                    res = a * val(t, ops[2])
                    if parts[1] == "wide":
                        mask = MASK64
                    elif parts[1] == "hi" and ty.startswith("u"):
                        res = ((a & mask) * (val(t, ops[2]) & mask)) >> width
                    elif parts[1] == "hi":
                        raise NotImplementedError(opc)
                elif op == "add":
                    res = a + val(t, ops[2])
                elif op == "sub":
                    res = a - val(t, ops[2])
                elif op == "shl":
                    res = a << val(t, ops[2])
                elif op == "shr":
                    res = a >> val(t, ops[2])
                elif op == "and":
                    res = a & val(t, ops[2])
                elif op == "or":
                    res = a | val(t, ops[2])
                elif op == "xor":
                    res = a ^ val(t, ops[2])
                elif op == "div" and ty.startswith("u"):
                    d = val(t, ops[2])
                    if d == 0:
                        raise ZeroDivisionError(f"{opc} by zero")
                    res = (a & mask) // (d & mask)
                else:
                    raise NotImplementedError(opc)
                r[ops[0]] = res & mask
            t.pc += 1

    mma_operands = {}  # id(ops) of an mma.sync -> its operands' register lists

    def collective(lanes, opc, ops):
        """One warp-collective instruction for the 32 `lanes`: every operand is read before
        any destination is written."""
        if opc in ("shfl.sync.bfly.b32", "shfl.sync.idx.b32"):
            # c = 31: the whole warp is one segment (no clamp below lane 31)
            assert ops[3] == "31" and ops[4] == "0xffffffff", ops
            srcs = [(val(t, ops[1]), val(t, ops[2]) & 31) for t in lanes]
            bfly = opc == "shfl.sync.bfly.b32"
            for lane, t in enumerate(lanes):
                t.regs[ops[0]] = srcs[lane ^ srcs[lane][1] if bfly else srcs[lane][1]][0]
        elif opc in ("vote.sync.all.pred", "vote.sync.any.pred"):
            assert ops[2] == "0xffffffff", ops
            votes = [bool(t.regs[ops[1]]) for t in lanes]
            res = all(votes) if opc == "vote.sync.all.pred" else any(votes)
            for t in lanes:
                t.regs[ops[0]] = res
        elif opc == "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32":
            regs = mma_operands.get(id(ops))
            if regs is None:
                regs = mma_operands[id(ops)] = [split_operands(o.strip("{}")) for o in ops]
            assert [len(x) for x in regs] == [4, 4, 2, 4], ops
            srcs = regs[1] + regs[2] + regs[3]
            # a float register holds an f32 value already (from_bits(bits(v)) == v)
            fetch = operator.itemgetter(*srcs)
            try:
                inputs = [[v if type(v) is float else from_bits(v) for v in fetch(t.regs)] for t in lanes]
            except KeyError:  # an operand that is not a register set: `val` resolves it or says which
                inputs = [[v if type(v) is float else from_bits(v) for v in [val(t, name) for name in srcs]]
                          for t in lanes]
            for t, d in zip(lanes, mma_m16n8k8_tf32(inputs)):
                for name, v in zip(regs[0], d):
                    t.regs[name] = v
        else:
            raise NotImplementedError(opc)

    # per warpgroup: wgmma.mma_async operations not yet committed, and committed groups not
    # yet retired by a wait
    wg_pending, wg_groups = {}, {}

    def wg_collective(wg, group, opc, ops):
        where = f"{entry.name} warpgroup {wg}"
        if nthreads % 128:
            raise RuntimeError(f"{where}: wgmma in a CTA of {nthreads} threads (not whole warpgroups)")
        if opc == "wgmma.fence.sync.aligned":
            for t in group:
                t.unfenced_regs = set()
            return
        if opc == "wgmma.commit_group.sync.aligned":
            wg_groups.setdefault(wg, []).append(wg_pending.pop(wg, []))
            return
        if opc == "wgmma.wait_group.sync.aligned":
            keep = int(ops[0])
            groups = wg_groups.setdefault(wg, [])
            while len(groups) > keep:
                for op in groups.pop(0):
                    wgmma_tf32(shared, op, group, where)
                    for w in op[5]:
                        shared.in_flight[w] -= 1
                        if not shared.in_flight[w]:
                            del shared.in_flight[w]
            # Registers stay locked while any operation not yet retired (a later group, or
            # one not yet committed) still uses them.
            busy = {name for g in groups + [wg_pending.get(wg, [])] for op in g for name in op[4]}
            for t in group:
                t.locked.intersection_update(busy)
            return
        m = re.fullmatch(r"wgmma\.mma_async\.sync\.aligned\.m64n(\d+)k8\.f32\.tf32\.tf32", opc)
        if not m:
            raise NotImplementedError(opc)
        n = int(m.group(1))
        acc = split_operands(ops[0].strip("{}"))
        if len(acc) != n // 2:
            raise RuntimeError(f"{where}: m64n{n}k8 needs {n // 2} accumulator registers, got {len(acc)}")
        if ops[4:] != ["1", "1"]:
            raise NotImplementedError(f"{where}: imm-scale-a/b {ops[4:]}")
        # A in registers ("RS" form: {a0, a1, a2, a3}) or through a descriptor
        a_regs = split_operands(ops[1].strip("{}")) if ops[1].startswith("{") else []
        if ops[1].startswith("{") and len(a_regs) != 4:
            raise RuntimeError(f"{where}: a tf32 A fragment is 4 registers, got {len(a_regs)}")
        uniform = {(0 if a_regs else val(t, ops[1]), val(t, ops[2]), bool(val(t, ops[3]))) for t in group}
        if len(uniform) != 1:
            raise RuntimeError(f"{where}: descriptors or scale-d differ between the warpgroup's threads")
        da, db, scale_d = uniform.pop()
        if a_regs:
            # The fragment (PTX ISA, m64nNk8 .tf32 A in registers; CUTLASS ALayout_64x8):
            # thread t, w = t / 32, g = (t % 32) / 4, q = t % 4: a0 = A[16w + g][q],
            # a1 = A[16w + g + 8][q], a2 = A[16w + g][q + 4], a3 = A[16w + g + 8][q + 4].
            # Read when issued; the registers are locked until the wait retires the group,
            # so the values cannot differ when it runs.
            da = [[0.0] * 8 for _ in range(64)]
            for ti_, t in enumerate(group):
                w, g, q = ti_ // 32, (ti_ % 32) // 4, ti_ % 4
                for v, name in enumerate(a_regs):
                    x = from_bits(bits(val(t, name)))
                    if bits(x) & 0x1FFF:
                        raise ValueError(f"{where}: wgmma tf32 A operand {x!r} in {name} of thread {t.tid} "
                                         "is not a tf32 value")
                    da[16 * w + g + 8 * (v % 2)][q + 4 * (v // 2)] = x
        for t in group:
            # PTX ISA: a wgmma.fence before the first wgmma.mma_async, and between any other
            # access to its registers and the wgmma (chained wgmma on the same accumulators
            # need none)
            if t.unfenced_regs is None:
                raise RuntimeError(f"{where}: wgmma.mma_async without a wgmma.fence before it (thread {t.tid})")
            touched = t.unfenced_regs & (set(acc) | set(a_regs))
            if touched:
                raise RuntimeError(f"{where}: thread {t.tid} accessed {sorted(touched)} since its last "
                                   "wgmma.fence, and wgmma.mma_async uses them")
            t.locked.update(acc)
            t.locked.update(a_regs)
        # The operands may be read as soon as the wgmma is issued: every word must have
        # been made visible to the async proxy by the thread that wrote it.
        words = []
        for desc, rows in ((da, 64), (db, n)) if not a_regs else ((db, n),):
            start, lbo, sbo = (desc & 0x3FFF) << 4, ((desc >> 16) & 0x3FFF) << 4, ((desc >> 32) & 0x3FFF) << 4
            for r in range(rows):
                for kc in range(2):
                    w0 = (start + (r // 8) * sbo + (r % 8) * 16 + kc * lbo) // 4
                    for w in range(w0, w0 + 4):
                        if w in shared.unfenced:
                            raise RuntimeError(f"{where}: wgmma reads shared byte {4 * w}, which thread "
                                               f"{shared.unfenced[w]} wrote without fence.proxy.async since")
                        words.append(w)
        for w in words:
            shared.in_flight[w] = shared.in_flight.get(w, 0) + 1
        wg_pending.setdefault(wg, []).append((n, da, db, scale_d, acc + a_regs, words))

    def resolve(size, state, run, what):
        """Run the collective instruction of every group of `size` threads all waiting at
        it (state `state`); a group partly waiting while none of its other threads can
        still move is an error. Returns whether any group ran."""
        progressed = False
        for w in range(0, nthreads, size):
            group = threads[w : w + size]
            waiting = [t for t in group if t.state == state]
            if not waiting:
                continue
            if len(waiting) != len(group):
                states = {t.state for t in group}
                if states & {"run", "warp", "wg"} - {state} or "run" in states:
                    continue
                raise RuntimeError(f"{entry.name}: {code[waiting[0].pc][1]} without all {size} threads of "
                                   f"{what} {w // size} (states {states})")
            pcs = {t.pc for t in waiting}
            if len(pcs) != 1:
                raise RuntimeError(f"{entry.name}: {what} {w // size} at different collective instructions {pcs}")
            run(w // size, group, *code[group[0].pc][1:])
            for t in group:
                t.pc += 1
                t.state = "run"
            progressed = True
        return progressed

    try:
        live = threads
        while True:
            for t in threads:
                if t.state == "run":
                    step(t)
            live = [t for t in threads if t.state != "done"]
            if not live:
                if any(wg_pending.values()) or any(wg_groups.values()):
                    raise RuntimeError(f"{entry.name}: exits with wgmma operations not waited for")
                flush_stats()
                return
            # warp-collective instructions (shfl.sync, vote.sync, mma.sync) resolved warp by warp,
            # then warpgroup ones (wgmma) warpgroup by warpgroup, once every thread of the group
            # waits at the same one
            progressed = resolve(32, "warp", lambda _, group, opc, ops: collective(group, opc, ops), "warp")
            progressed |= resolve(128, "wg", wg_collective, "warpgroup")
            if progressed:
                continue
            at_bar = [t for t in live if t.state == "bar"]
            released = False
            for bid in sorted({t.bar[0] for t in at_bar}):
                waiting = [t for t in at_bar if t.bar[0] == bid]
                counts = {t.bar[1] for t in waiting}
                if len(counts) != 1:
                    raise RuntimeError(f"{entry.name}: barrier {bid} with different thread counts {counts}")
                count = counts.pop()
                if count is None or count == nthreads:
                    if len(waiting) != len(live):
                        continue
                    if len(live) != nthreads:
                        raise RuntimeError(f"{entry.name}: bar.sync with {nthreads - len(live)} exited threads")
                    shared.barrier()
                else:
                    if count % 32 or count > nthreads:
                        raise RuntimeError(f"{entry.name}: bar.sync {bid}, {count} in a CTA of {nthreads}")
                    if len(waiting) > count:
                        raise RuntimeError(f"{entry.name}: {len(waiting)} threads at bar.sync {bid}, {count}")
                    if len(waiting) < count:
                        continue
                    shared.barrier(frozenset(t.tid for t in waiting))
                reds = {t.red is not None for t in waiting}
                if len(reds) != 1:
                    raise RuntimeError(f"{entry.name}: bar.sync and bar.red meet at barrier {bid}")
                if reds.pop():
                    dests = {t.red[0] for t in waiting}
                    if len(dests) != 1:
                        raise RuntimeError(f"{entry.name}: bar.red at barrier {bid} into different predicates {dests}")
                    res = any(t.red[1] for t in waiting)
                    for t in waiting:
                        t.regs[t.red[0]] = res
                for t in waiting:
                    t.pc += 1
                    t.state = "run"
                released = True
            if released:
                continue
            raise RuntimeError(f"{entry.name}: deadlock: states {[t.state for t in threads][:64]}")
    finally:
        # the paths a test may check (check_paths)
        VISITED.update((entry.name, pc) for pc in visited)


# ---- host helpers ------------------------------------------------------------------------
def pack_f32(vals):
    return struct.pack(f"<{len(vals)}f", *vals)


def pack_u32(vals):
    return struct.pack(f"<{len(vals)}I", *vals)


def unpack_f32(mem, base, n):
    buf, off = mem.find(base, 4 * n)
    return list(struct.unpack(f"<{n}f", buf[off : off + 4 * n]))


def normals(rng, n):
    return [f32(rng.gauss(0.0, 1.0)) for _ in range(n)]


def padded(data, d, dp):
    out = []
    for r in range(len(data) // d):
        out += data[r * d : (r + 1) * d] + [0.0] * (dp - d)
    return out


def cos_ref(u, v):
    xy = sum(a * b for a, b in zip(u, v))
    xx = sum(a * a for a in u)
    yy = sum(b * b for b in v)
    return 0.0 if xx == 0 or yy == 0 else xy / math.sqrt(xx * yy)


def ad(got, want):
    """|got - want|, infinite when got is NaN (so a NaN can never pass a tolerance)."""
    d = abs(got - want)
    return math.inf if d != d else d


def report(name, err, tol):
    ok = err <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs error {err:.3e} (tolerance {tol:.1e})")
    return ok


def embeddings(rng, b, n, d, full):
    data = normals(rng, b * n * d)
    lengths = [n if full else rng.randint(1, n) for _ in range(b)]
    for p, ln in enumerate(lengths):
        if ln > 2:
            for k in range((p * n + 1) * d, (p * n + 2) * d):
                data[k] = 0.0
    return data, lengths


# ---- tests -------------------------------------------------------------------------------
def test_cosine_cost(mods, b, n, m, d, seed, entry="cosine_cost_f32", tile=64, module="cosine_cost", dyn=0,
                     full=False):
    """The cost kernel `entry` against the f64 reference; every length drawn in 1..n (1..m),
    or n (m) when `full`: real rows in every tile, so that the tiles past the first one
    load, compute and store real entries."""
    rng = random.Random(seed)
    dp = (d + 3) // 4 * 4
    x, lx = embeddings(rng, b, n, d, full)
    y, ly = embeddings(rng, b, m, d, full)
    mem = Memory()
    xg, yg = mem.alloc(pack_f32(padded(x, d, dp))), mem.alloc(pack_f32(padded(y, d, dp)))
    xl, yl = mem.alloc(pack_u32(lx)), mem.alloc(pack_u32(ly))
    out = mem.alloc(pack_f32([7.0] * (b * n * m)))  # garbage: every entry must be written
    e = mods[module]
    # One CTA per tile, pair-major; the kernel computes the row norms itself.
    grid = (b * ((n + tile - 1) // tile) * ((m + tile - 1) // tile), 1, 1)
    run_kernel(e[entry], mem, [xg, yg, xl, yl, out, n, m, dp], grid, 256, dyn)
    got = unpack_f32(mem, out, b * n * m)
    err = 0.0
    for p in range(b):
        for i in range(n):
            for j in range(m):
                if i < lx[p] and j < ly[p]:
                    u = x[(p * n + i) * d : (p * n + i + 1) * d]
                    v = y[(p * m + j) * d : (p * m + j + 1) * d]
                    want = 1.0 - max(-1.0, min(1.0, cos_ref(u, v)))
                else:
                    want = 0.0
                err = max(err, ad(got[(p * n + i) * m + j], want))
    return report(f"{entry} b={b} n={n} m={m} d={d}", err, 2e-5)


def test_wgmma_cost(mods, b, n, m, d, seed, stages=2, full=False):
    """test_cosine_cost of cosine_cost_wgmma_f32 (kernels/cosine_cost_sm90a.ptx): 128x128
    tiles, `stages` stages of 32,768 bytes and 1,024 of inverse norms of dynamic shared
    memory (66,560 bytes for two stages, 99,328 for three)."""
    return test_cosine_cost(mods, b, n, m, d, seed, "cosine_cost_wgmma_f32", 128, "cosine_cost_sm90a",
                            stages * 32768 + 1024, full)


def test_wgmma_rs_cost(mods, b, n, m, d, seed, full=False):
    """test_cosine_cost of cosine_cost_wgmma_rs_f32 (kernels/cosine_cost_sm90a.ptx): wgmma
    with A from registers, 128x128 tiles, 33,792 bytes of dynamic shared memory."""
    return test_cosine_cost(mods, b, n, m, d, seed, "cosine_cost_wgmma_rs_f32", 128, "cosine_cost_sm90a", 33792,
                            full)


def maxsim_inputs(rng, nq, qn, nd, d):
    """Queries (nq, qn, d) with lengths, and nd documents of 1..40 tokens packed back to back
    (their first token a zero vector): (q, q_len, lens, offs, docs)."""
    q, ql = embeddings(rng, nq, qn, d, False)
    lens = [rng.randint(1, 40) for _ in range(nd)]
    offs = [sum(lens[:k]) for k in range(nd)]
    docs = normals(rng, sum(lens) * d)
    for k in range(d):
        docs[k] = 0.0
    return q, ql, lens, offs, docs


def maxsim_error(got, q, ql, lens, offs, docs, qn, d):
    """Largest |got - MaxSim| over the (query, document) scores, got laid out (nq, nd)."""
    nd = len(lens)
    err = 0.0
    for a in range(len(ql)):
        for k in range(nd):
            total = 0.0
            for i in range(ql[a]):
                u = q[(a * qn + i) * d : (a * qn + i + 1) * d]
                total += max(cos_ref(u, docs[(offs[k] + j) * d : (offs[k] + j + 1) * d]) for j in range(lens[k]))
            err = max(err, ad(got[a * nd + k], total))
    return err


def test_maxsim(mods, nq, qn, nd, d, seed, in_smem):
    dp = (d + 3) // 4 * 4
    q, ql, lens, offs, docs = maxsim_inputs(random.Random(seed), nq, qn, nd, d)
    tokens = sum(lens)
    mem = Memory()
    qg, dg = mem.alloc(pack_f32(padded(q, d, dp))), mem.alloc(pack_f32(padded(docs, d, dp)))
    qi, di = mem.alloc(bytes(4 * nq * qn)), mem.alloc(bytes(4 * tokens))
    e = mods["cosine_cost"]
    for rows, src, dst in ((nq * qn, qg, qi), (tokens, dg, di)):
        run_kernel(e["row_inv_norm_f32"], mem, [src, dst, rows, dp // 4], ((rows + 7) // 8, 1, 1), 256, 0)
    out = mem.alloc(pack_f32([7.0] * (nq * nd)))
    s4 = (dp // 4) | 1
    smem = 128 + 16 * s4 * max(lens) if in_smem else 128
    args = [qg, qi, mem.alloc(pack_u32(ql)), dg, di, mem.alloc(pack_u32(offs)), mem.alloc(pack_u32(lens)),
            out, nq, qn, nd, dp, s4, int(in_smem)]
    run_kernel(mods["maxsim"]["maxsim_f32"], mem, args, (nd, 1, 1), 256, smem)
    got = unpack_f32(mem, out, nq * nd)
    err = maxsim_error(got, q, ql, lens, offs, docs, qn, d)
    return report(f"maxsim nq={nq} qn={qn} nd={nd} d={d} smem={in_smem}", err, 2e-5 * qn)


def test_maxsim_tiled(mods, nq, qn, nd, d, seed, blocks, cost_entry="cosine_cost_tf32x3_f32"):
    """The tiled route: a cost kernel on (1, nq*qn, block tokens) per block of documents, then
    maxsim_reduce_f32 on it. `blocks` splits the documents (doc0, docs) as the host does when
    the costs of all of them would not fit its budget."""
    dp = (d + 3) // 4 * 4
    q, ql, lens, offs, docs = maxsim_inputs(random.Random(seed), nq, qn, nd, d)
    mem = Memory()
    rows = nq * qn
    qg = mem.alloc(pack_f32(padded(q, d, dp)))
    qlg, og, lg = mem.alloc(pack_u32(ql)), mem.alloc(pack_u32(offs)), mem.alloc(pack_u32(lens))
    xl = mem.alloc(pack_u32([rows]))
    out = mem.alloc(pack_f32([7.0] * (nq * nd)))  # garbage: every score must be written
    for doc0, count in blocks:
        tok0 = offs[doc0]
        m = offs[doc0 + count - 1] + lens[doc0 + count - 1] - tok0
        yg = mem.alloc(pack_f32(padded(docs[tok0 * d : (tok0 + m) * d], d, dp)))
        cost = mem.alloc(pack_f32([7.0] * (rows * m)))
        grid = (((rows + 63) // 64) * ((m + 63) // 64), 1, 1)
        run_kernel(mods["cosine_cost"][cost_entry], mem, [qg, yg, xl, mem.alloc(pack_u32([m])), cost, rows, m, dp], grid, 256, 0)
        args = [cost, qlg, og, lg, out, nq, qn, nd, doc0, count, tok0, m]
        run_kernel(mods["maxsim"]["maxsim_reduce_f32"], mem, args, ((nq * count + 7) // 8, 1, 1), 256, 0)
    got = unpack_f32(mem, out, nq * nd)
    err = maxsim_error(got, q, ql, lens, offs, docs, qn, d)
    return report(f"maxsim tiled nq={nq} qn={qn} nd={nd} d={d} blocks={blocks}", err, 2e-5 * qn)


def lse2(vals):
    mx = max(vals)
    return mx + math.log2(sum(2.0 ** (v - mx) for v in vals))


def sinkhorn_model(K, la, lb, nr, nc, m, iters):
    """The kernel's contract in f64: F, G in log2 units after `iters` iterations, and error."""
    F, G = [0.0] * nr, [0.0] * nc
    for _ in range(iters):
        F = [-lse2([K[i * m + j] + G[j] + lb[j] for j in range(nc)]) for i in range(nr)]
        G = [-lse2([K[i * m + j] + F[i] + la[i] for i in range(nr)]) for j in range(nc)]
    Fn = [-lse2([K[i * m + j] + G[j] + lb[j] for j in range(nc)]) for i in range(nr)]
    err = sum(2.0 ** la[i] * abs(2.0 ** (F[i] - Fn[i]) - 1.0) for i in range(nr))
    return F, G, err


def check_paths(entry, paths, what):
    """Whether every label in `paths` ran (or, prefixed with '!', did not) in the last run."""
    ok = True
    for label in paths or []:
        want = not label.startswith("!")
        ran = (entry.name, entry.labels[label.lstrip("!")]) in VISITED
        if ran != want:
            print(f"FAIL {what}: path {label.lstrip('!')} {'never ran' if want else 'ran'}")
            ok = False
    return ok


def sinkhorn_inputs(rng, b, n, m, full, eps):
    """A batch in the Sinkhorn kernels' scaled form: support sizes drawn in 1..n, 1..m (all
    when `full`), pair 1 inactive, K = -C log2(e) / eps with C uniform in [0, 2] on the
    support (and K^T), log2 of random normalised weights."""
    rows = [n if full else rng.randint(1, n) for _ in range(b)]
    cols = [m if full else rng.randint(1, m) for _ in range(b)]
    active = [1] * b
    if b > 1:
        active[1] = 0
    K, KT = [0.0] * (b * n * m), [0.0] * (b * m * n)
    la, lb = [0.0] * (b * n), [0.0] * (b * m)
    for p in range(b):
        for i in range(rows[p]):
            for j in range(cols[p]):
                v = f32(-rng.uniform(0.0, 2.0) * 1.4426950408889634 / eps)
                K[(p * n + i) * m + j] = v
                KT[(p * m + j) * n + i] = v
        wa = [rng.uniform(0.5, 1.5) for _ in range(rows[p])]
        wb = [rng.uniform(0.5, 1.5) for _ in range(cols[p])]
        for i in range(rows[p]):
            la[p * n + i] = f32(math.log2(wa[i] / sum(wa)))
        for j in range(cols[p]):
            lb[p * m + j] = f32(math.log2(wb[j] / sum(wb)))
    return rows, cols, active, K, KT, la, lb


def test_sinkhorn(mods, b, n, m, iters, k_in_smem, block, seed, full=False, eps=0.05, paths=None, lse_mode=0):
    rows, cols, active, K, KT, la, lb = sinkhorn_inputs(random.Random(seed), b, n, m, full, eps)
    mem = Memory()
    fg, gg = mem.alloc(bytes(4 * b * n)), mem.alloc(bytes(4 * b * m))
    errg = mem.alloc(pack_f32([-1.0] * b))
    args = [mem.alloc(pack_f32(K)), mem.alloc(pack_f32(KT)), mem.alloc(pack_f32(la)), mem.alloc(pack_f32(lb)),
            fg, gg, mem.alloc(pack_u32(rows)), mem.alloc(pack_u32(cols)), mem.alloc(pack_u32(active)), errg,
            n, m, iters, int(k_in_smem), lse_mode]
    n4, m4 = (n + 3) // 4 * 4, (m + 3) // 4 * 4
    smem = 128 + 12 * n4 + 12 * m4 + (4 * n * (m | 1) if k_in_smem else 0)
    if lse_mode and k_in_smem:
        # the absorbed shifts c[n], d[m] and the warps' fallback flags after K
        smem += 4 * n + 4 * m + 128
    # two launches: the second continues from the potentials the first wrote
    half = iters // 2
    args[12] = half
    entry = mods["sinkhorn"]["sinkhorn_iterate_f32"]
    VISITED.clear()
    run_kernel(entry, mem, args, (b, 1, 1), block, smem)
    args[12] = iters - half
    run_kernel(entry, mem, args, (b, 1, 1), block, smem)
    path_ok = check_paths(entry, paths, f"sinkhorn eps={eps}")
    F, G, E = unpack_f32(mem, fg, b * n), unpack_f32(mem, gg, b * m), unpack_f32(mem, errg, b)
    err, ok = 0.0, True
    for p in range(b):
        if not active[p]:
            ok &= all(v == 0.0 for v in F[p * n : (p + 1) * n]) and E[p] == -1.0
            continue
        Kp = K[p * n * m : (p + 1) * n * m]
        Fw, Gw, Ew = sinkhorn_model(Kp, la[p * n : p * n + rows[p]], lb[p * m : p * m + cols[p]], rows[p], cols[p], m, iters)
        err = max(err, max(ad(a, c) for a, c in zip(F[p * n : p * n + rows[p]], Fw)))
        err = max(err, max(ad(a, c) for a, c in zip(G[p * m : p * m + cols[p]], Gw)))
        err = max(err, ad(E[p], Ew))
        # The error itself, relatively: near convergence it is small and must stay accurate.
        if not ad(E[p], Ew) <= 1e-2 * Ew + 1e-6:
            print(f"FAIL marginal error of pair {p}: {E[p]:.6e} vs {Ew:.6e}")
            ok = False
        ok &= all(v == 0.0 for v in F[p * n + rows[p] : (p + 1) * n])
    if not ok:
        print("FAIL inactive pair or padding was written")
    return report(f"sinkhorn b={b} n={n} m={m} iters={iters} k_in_smem={k_in_smem} block={block} eps={eps} lse={lse_mode}",
                  err, 2e-3) and ok and path_ok


def check_pairs(inputs, iters, F, G, errors, n, m):
    """Every active pair's potentials and marginal errors (`errors`: name -> the error array
    of a launch) against the f64 model, and the inactive pairs and the padding untouched
    (F and G 0, errors -1). `inputs` as sinkhorn_inputs returns them. (max abs error, ok)"""
    rows, cols, active, K, _, la, lb = inputs
    err, ok = 0.0, True
    for p in range(len(rows)):
        if not active[p]:
            if not (all(v == 0.0 for v in F[p * n : (p + 1) * n] + G[p * m : (p + 1) * m])
                    and all(E[p] == -1.0 for E in errors.values())):
                print(f"FAIL inactive pair {p} was written")
                ok = False
            continue
        Kp = K[p * n * m : (p + 1) * n * m]
        Fw, Gw, Ew = sinkhorn_model(Kp, la[p * n : p * n + rows[p]], lb[p * m : p * m + cols[p]], rows[p], cols[p], m, iters)
        err = max(err, max(ad(a, c) for a, c in zip(F[p * n : p * n + rows[p]], Fw)))
        err = max(err, max(ad(a, c) for a, c in zip(G[p * m : p * m + cols[p]], Gw)))
        for name, E in errors.items():
            err = max(err, ad(E[p], Ew))
            # The error itself, relatively: near convergence it is small and must stay accurate.
            if not ad(E[p], Ew) <= 1e-2 * Ew + 1e-6:
                print(f"FAIL marginal error ({name}) of pair {p}: {E[p]:.6e} vs {Ew:.6e}")
                ok = False
        if not all(v == 0.0 for v in F[p * n + rows[p] : (p + 1) * n] + G[p * m + cols[p] : (p + 1) * m]):
            print(f"FAIL padding of pair {p} was written")
            ok = False
    return err, ok


def test_split(mods, b, n, m, iters, seed, full=False, eps=0.05):
    """`iters` iterations as split half-iterations (one launch of sinkhorn_half_split_f32 per
    half, a pair over ceil(lines / 8) CTAs), then the error: the per-row terms (mode 1) and
    sinkhorn_split_error_f32, as the host runs them for pairs whose K stays in global
    memory; and the same error from sinkhorn_iterate_f32 at 0 iterations."""
    inputs = sinkhorn_inputs(random.Random(seed), b, n, m, full, eps)
    rows, cols, active, K, KT, la, lb = inputs
    mem = Memory()
    kg, ktg = mem.alloc(pack_f32(K)), mem.alloc(pack_f32(KT))
    lag, lbg = mem.alloc(pack_f32(la)), mem.alloc(pack_f32(lb))
    fg, gg = mem.alloc(bytes(4 * b * n)), mem.alloc(bytes(4 * b * m))
    rowsg, colsg, actg = mem.alloc(pack_u32(rows)), mem.alloc(pack_u32(cols)), mem.alloc(pack_u32(active))
    errg = mem.alloc(pack_f32([-1.0] * b))
    err1g = mem.alloc(pack_f32([-1.0] * b))
    # terms past a pair's rows hold NaN: the sum must not read them
    termsg = mem.alloc(pack_f32([float("nan")] * (b * n)))
    half = mods["sinkhorn"]["sinkhorn_half_split_f32"]
    for _ in range(iters):
        run_kernel(half, mem, [kg, gg, lbg, fg, lag, termsg, rowsg, colsg, actg, n, m, 0], (b, (n + 7) // 8, 1), 256, 0)
        run_kernel(half, mem, [ktg, fg, lag, gg, lbg, termsg, colsg, rowsg, actg, m, n, 0], (b, (m + 7) // 8, 1), 256, 0)
    run_kernel(half, mem, [kg, gg, lbg, fg, lag, termsg, rowsg, colsg, actg, n, m, 1], (b, (n + 7) // 8, 1), 256, 0)
    run_kernel(mods["sinkhorn"]["sinkhorn_split_error_f32"], mem, [termsg, rowsg, actg, errg, n], (b, 1, 1), 32, 0)
    entry = mods["sinkhorn"]["sinkhorn_iterate_f32"]
    run_kernel(entry, mem, [kg, ktg, lag, lbg, fg, gg, rowsg, colsg, actg, err1g, n, m, 0, 0, 0],
               (b, 1, 1), 64, 128 + 12 * ((n + 3) // 4 * 4) + 12 * ((m + 3) // 4 * 4))
    F, G, E = unpack_f32(mem, fg, b * n), unpack_f32(mem, gg, b * m), unpack_f32(mem, errg, b)
    E1 = unpack_f32(mem, err1g, b)
    err, ok = check_pairs(inputs, iters, F, G, {"split": E, "one CTA": E1}, n, m)
    if not ok:
        print("FAIL a check above")
    return report(f"sinkhorn split b={b} n={n} m={m} iters={iters} eps={eps}", err, 2e-3) and ok


def fused_smem(n, m, cost_mode, lse_mode):
    """Dynamic shared memory of sinkhorn_fused_f32 (the host's fused_smem)."""
    n4, m4 = (n + 3) // 4 * 4, (m + 3) // 4 * 4
    smem = {0: 18432, 1: 36864, 2: 40960, 3: 0, 4: 0}[cost_mode] + 128 + 12 * n4 + 12 * m4 + 4 * n * (m | 1)
    if lse_mode:
        # the absorbed shifts c[n4] and d[m4] after K; lse_mode 2: from the next multiple
        # of 16 bytes, and the scaled vectors u[n4], v[m4] after them
        smem += 4 * (n4 + m4) if lse_mode == 1 else -4 * n * (m | 1) % 16 + 8 * (n4 + m4)
    return smem


def test_fused_continue(mods, b, n, m, iters, seed, full=False, eps=0.05, paths=None, threads=512, lse_mode=2,
                        first=None):
    """sinkhorn_fused_f32 in cost_mode 4: a solve continued from K (sinkhorn_iterate_f32's
    inputs: ragged supports, an inactive pair), in two launches, the second from the
    potentials the first wrote (`first` iterations in the first launch, else half), against
    the f64 model; an inactive pair and the padding must stay untouched. x, y and cost are
    not read: they hold NaN."""
    inputs = sinkhorn_inputs(random.Random(seed), b, n, m, full, eps)
    rows, cols, active, K, _, la, lb = inputs
    mem = Memory()
    nan = mem.alloc(pack_f32([math.nan] * 16))
    kg = mem.alloc(pack_f32(K))
    fg, gg = mem.alloc(bytes(4 * b * n)), mem.alloc(bytes(4 * b * m))
    errg = mem.alloc(pack_f32([-1.0] * b))
    args = [nan, nan, mem.alloc(pack_u32(rows)), mem.alloc(pack_u32(cols)), mem.alloc(pack_f32(la)),
            mem.alloc(pack_f32(lb)), nan, kg, fg, gg, errg, n, m, 4, 0, 1.0, 4, lse_mode,
            mem.alloc(pack_u32(active))]
    entry = mods["sinkhorn_fused"]["sinkhorn_fused_f32"]
    VISITED.clear()
    half = iters // 2 if first is None else first
    for run in (half, iters - half):
        args[14] = run
        run_kernel(entry, mem, args, (b, 1, 1), threads, fused_smem(n, m, 4, lse_mode))
    path_ok = check_paths(entry, paths, f"fused continue eps={eps}")
    F, G, E = unpack_f32(mem, fg, b * n), unpack_f32(mem, gg, b * m), unpack_f32(mem, errg, b)
    k_kept = unpack_f32(mem, kg, b * n * m) == [f32(v) for v in K]
    if not k_kept:
        print("FAIL k was written")
    err, ok = check_pairs(inputs, iters, F, G, {"launch": E}, n, m)
    ok = ok and k_kept
    return report(f"fused continue b={b} n={n} m={m} iters={iters} eps={eps} threads={threads} lse={lse_mode}",
                  err, 2e-3) and ok and path_ok


def test_fused(mods, b, n, m, d, iters, seed, full=False, eps=0.05, paths=None, cost_mode=0, threads=512, lse_mode=0):
    """`paths`: labels of kernels/sinkhorn_fused.ptx that must have run (e.g. the fallback
    of the fast row pass, RF_SLOW), or, prefixed with '!', must not have."""
    rng = random.Random(seed)
    dp = (d + 3) // 4 * 4
    x, lx = embeddings(rng, b, n, d, full)
    y, ly = embeddings(rng, b, m, d, full)
    la = [f32(math.log2(1.0 / lx[p])) if i < lx[p] else 0.0 for p in range(b) for i in range(n)]
    lb = [f32(math.log2(1.0 / ly[p])) if j < ly[p] else 0.0 for p in range(b) for j in range(m)]
    mem = Memory()
    if cost_mode == 3:
        # The cost given: what the standalone cost kernel writes (every entry, 0 on padding).
        # Padding holds NaN here (the kernel writes 0 there): a kernel that read it into K or
        # the iterations, or rewrote C, would fail the checks below.
        given = [f32(1.0 - max(-1.0, min(1.0, cos_ref(x[(p * n + i) * d : (p * n + i + 1) * d],
                                                         y[(p * m + j) * d : (p * m + j + 1) * d]))))
                 if i < lx[p] and j < ly[p] else math.nan
                 for p in range(b) for i in range(n) for j in range(m)]
        cost = mem.alloc(pack_f32(given))
    else:
        cost = mem.alloc(bytes(4 * b * n * m))
    kk = mem.alloc(bytes(4 * b * n * m))
    fg, gg, errg = mem.alloc(bytes(4 * b * n)), mem.alloc(bytes(4 * b * m)), mem.alloc(bytes(4 * b))
    kscale = f32(-1.4426950408889634 / eps)
    args = [mem.alloc(pack_f32(padded(x, d, dp))), mem.alloc(pack_f32(padded(y, d, dp))),
            mem.alloc(pack_u32(lx)), mem.alloc(pack_u32(ly)), mem.alloc(pack_f32(la)), mem.alloc(pack_f32(lb)),
            cost, kk, fg, gg, errg, n, m, dp, iters, kscale, cost_mode, lse_mode, 0]
    smem = fused_smem(n, m, cost_mode, lse_mode)
    entry = mods["sinkhorn_fused"]["sinkhorn_fused_f32"]
    VISITED.clear()
    run_kernel(entry, mem, args, (b, 1, 1), threads, smem)
    path_ok = check_paths(entry, paths, f"fused eps={eps}")
    C, KK = unpack_f32(mem, cost, b * n * m), unpack_f32(mem, kk, b * n * m)
    F, G, E = unpack_f32(mem, fg, b * n), unpack_f32(mem, gg, b * m), unpack_f32(mem, errg, b)
    err_c, err_s = 0.0, 0.0
    for p in range(b):
        Kp = [0.0] * (n * m)
        for i in range(n):
            for j in range(m):
                if i < lx[p] and j < ly[p]:
                    u = x[(p * n + i) * d : (p * n + i + 1) * d]
                    v = y[(p * m + j) * d : (p * m + j + 1) * d]
                    c = 1.0 - max(-1.0, min(1.0, cos_ref(u, v)))
                    Kp[i * m + j] = f32(f32(c) * kscale)
                else:
                    c = 0.0
                got = C[(p * n + i) * m + j]
                if cost_mode == 3 and not (i < lx[p] and j < ly[p]):
                    # the given cost's padding, untouched (NaN)
                    err_c = max(err_c, 0.0 if got != got else math.inf)
                else:
                    err_c = max(err_c, ad(got, c))
                err_c = max(err_c, ad(KK[(p * n + i) * m + j], Kp[i * m + j]) * eps)
        Fw, Gw, Ew = sinkhorn_model(Kp, la[p * n : p * n + lx[p]], lb[p * m : p * m + ly[p]], lx[p], ly[p], m, iters)
        err_s = max(err_s, max(ad(a, c) for a, c in zip(F[p * n : p * n + lx[p]], Fw)))
        err_s = max(err_s, max(ad(a, c) for a, c in zip(G[p * m : p * m + ly[p]], Gw)))
        err_s = max(err_s, ad(E[p], Ew))
    ok = report(f"fused cost (mode {cost_mode}) b={b} n={n} m={m} d={d} threads={threads}", err_c, 2e-5) and path_ok
    return report(f"fused sinkhorn b={b} n={n} m={m} d={d} iters={iters} eps={eps} threads={threads} lse={lse_mode}",
                  err_s, 2e-3) and ok


def f32_floor(threshold):
    """The largest f32 not above `threshold` (as the host's sinkhorn::f32_floor)."""
    t = f32(threshold)
    if t <= threshold or t <= 0.0:
        return t
    return from_bits(bits(t) - 1)


def test_retire(mods, pairs, threshold, seed, module=None):
    """sinkhorn_retire_f32, two rounds, against the host solver's rule: a pair stops when
    `err as f64 <= threshold` (converged) or else when the error is not finite. The errors
    include the threshold's own f32 and its neighbours, -0, negatives, -inf, +inf, NaNs of
    both signs and denormals; some pairs start inactive; threads past `pairs` write nothing."""
    mods = module or mods
    rng = random.Random(seed)
    thr = f32_floor(threshold)
    special = [bits(thr), bits(thr) + 1, max(bits(thr) - 1, 0), 0, 0x80000000, bits(-1.0),
               0xFF800000, 0x7F800000, 0x7FC00000, 0xFFC00000, 1, bits(5.0)]

    def errors():
        out = []
        for p in range(pairs):
            if p < len(special) and rng.random() < 0.5:
                out.append(special[p])
            else:
                out.append(bits(f32(10.0 ** rng.uniform(-8, 1))))
        return out

    active = [0 if rng.random() < 0.2 else 1 for p in range(pairs)]
    mem = Memory()
    actg = mem.alloc(pack_u32(active + [7]))
    sentinel = [7, 7, 7, 7]
    status0 = [v for p in range(pairs) for v in ([0, 0, 0, 0] if active[p] else sentinel)] + sentinel
    stg = mem.alloc(pack_u32(status0))
    want_act, want_st = list(active), [list(status0[4 * p : 4 * p + 4]) for p in range(pairs)]
    for _ in range(2):
        errs = errors()
        errg = mem.alloc(pack_u32(errs + [0]))
        run_kernel(mods["sinkhorn"]["sinkhorn_retire_f32"], mem, [actg, errg, stg, pairs, bits(thr)],
                   ((pairs + 255) // 256, 1, 1), 256, 0)
        for p in range(pairs):
            if not want_act[p]:
                continue
            e = from_bits(errs[p])
            st = want_st[p]
            st[0] += 1
            st[1] = errs[p]
            if e <= threshold:
                st[2] = 1
                want_act[p] = 0
            elif not math.isfinite(e):
                st[2] = 2
                want_act[p] = 0
    buf, off = mem.find(actg, 4 * (pairs + 1))
    got_act = list(struct.unpack(f"<{pairs + 1}I", buf[off : off + 4 * (pairs + 1)]))
    buf, off = mem.find(stg, 16 * (pairs + 1))
    got_st = list(struct.unpack(f"<{4 * (pairs + 1)}I", buf[off : off + 16 * (pairs + 1)]))
    ok = True
    if got_act != want_act + [7]:
        bad = [p for p in range(pairs + 1) if got_act[p] != (want_act + [7])[p]]
        print(f"FAIL active flags differ at pairs {bad[:5]}")
        ok = False
    want_flat = [v for st in want_st for v in st] + sentinel
    if got_st != want_flat:
        bad = [p for p in range(pairs + 1) if got_st[4 * p : 4 * p + 4] != want_flat[4 * p : 4 * p + 4]]
        p = bad[0]
        print(f"FAIL status differs at pairs {bad[:5]}: pair {p} got {got_st[4 * p : 4 * p + 4]}, "
              f"want {want_flat[4 * p : 4 * p + 4]}")
        ok = False
    stops = [st[2] for st in want_st]
    print(f"{'ok  ' if ok else 'FAIL'} sinkhorn_retire pairs={pairs} threshold={threshold:g}: "
          f"{stops.count(1)} converged, {stops.count(2)} not finite, {sum(want_act)} running")
    return ok


def test_ex2_peak(mods, ctas, threads, rounds):
    """The exp2 probe: every thread's 8 chains v <- 2^(-v) from (c + 1) / 16, 8 steps per
    round, summed in chain order, at its global index (modelled with the interpreter's own
    f32-rounded ex2, so the match is exact)."""
    mem = Memory()
    lanes = ctas * threads
    out = mem.alloc(pack_f32([7.0] * (lanes + 1)))
    run_kernel(mods["peak"]["ex2_peak_f32"], mem, [out, rounds], (ctas, 1, 1), threads, 0)
    got = unpack_f32(mem, out, lanes + 1)
    v = [f32((c + 1) / 16) for c in range(8)]
    for _ in range(8 * rounds):
        v = [f32(2.0 ** -x) for x in v]
    want = 0.0
    for x in v:
        want = f32(want + x)
    err = max(ad(g, want) for g in got[:lanes])
    # the float past the last lane is not written
    err = max(err, ad(got[lanes], 7.0))
    if rounds >= 2:
        err = max(err, abs(want - 8 * 0.6411857445049859) > 1e-4 and math.inf or 0.0)
    return report(f"ex2_peak ctas={ctas} threads={threads} rounds={rounds}", err, 0.0)


def test_access(run, entry, kinds):
    """Run `run` (a test of `entry`) with the access counter on, and require every memory
    instruction of `entry` whose opcode starts with one of `kinds` (such as "st.shared") to
    be served at its ideal: no bank conflict in shared memory, whole sectors in global
    memory (see AccessStats). The shapes must make that possible: full tiles, even rows."""
    global STATS
    saved, STATS = STATS, AccessStats()
    try:
        ok = run()
        stats = STATS
    finally:
        STATS = saved
    bad, checked = [], 0
    for (name, pc), (space, write, req, cost, ideal, opc, ops) in sorted(stats.rows.items()):
        if name != entry:
            continue
        if not opc.startswith(tuple(kinds)):
            continue
        checked += req
        if cost != ideal:
            bad.append(f"pc {pc} {opc} {', '.join(ops)[:40]}: {cost / req:.2f} "
                       f"{'wavefronts' if space == 'shared' else 'sectors'} per request, ideal {ideal / req:.2f}")
    if not checked:
        raise RuntimeError(f"access {entry}: no request of {kinds} ran")
    for b in bad:
        print(f"     {b}")
    print(f"{'ok  ' if not bad else 'FAIL'} access {entry} {'/'.join(kinds)}: {checked} requests, "
          f"{len(bad)} instructions off their ideal")
    return ok and not bad


# The wgmma.fence before the first wgmma of a chunk, in each wgmma kernel (the mutants drop it).
WGMMA_ACC = ", ".join(f"d{i}" for i in range(64))
WGMMA_SS_FENCE = ("    wgmma.fence.sync.aligned;\n"
                  f"    wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 {{{WGMMA_ACC}}}, dxs,")
WGMMA_RS_FENCE = ("    wgmma.fence.sync.aligned;\n"
                  f"    wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 {{{WGMMA_ACC}}}, {{as0,")


def mutant(module, old, new):
    """The parsed modules with edits of kernels/<module>.ptx: `old` (which must occur
    exactly once, so that a kernel change that removes it fails here) replaced by `new`;
    or, with lists, each `old[i]` by `new[i]`. `module:entry` confines the edits to that
    entry point's text (to the next entry point)."""
    module, _, entry = module.partition(":")
    mods = {p.stem: parse_module(p.read_text()) for p in sorted(KERNELS.glob("*.ptx"))}
    text = (KERNELS / f"{module}.ptx").read_text()
    start, end = 0, len(text)
    if entry:
        start = text.index(f".entry {entry}(")
        nxt = text.find(".visible .entry", start + 1)
        end = len(text) if nxt < 0 else nxt
    head, body, tail = text[:start], text[start:end], text[end:]
    for o, n in zip(*((old, new) if isinstance(old, list) else ([old], [new]))):
        if body.count(o) != 1:
            raise ValueError(f"mutant of {module}.ptx {entry}: {o!r} occurs {body.count(o)} times, not once")
        body = body.replace(o, n)
    mods[module] = parse_module(head + body + tail)
    return mods


# The scaled passes' range checks (lse_mode 2 of the fused kernel), row and column: the
# variants and mutants set or drop the "out of range" flag there.
SCALED_ROW_CHECK = ("    @!pok setp.eq.u32 pbad, tid, tid;\n    and.pred        pq, plow, pown;\n"
                    "    @!pq bra        SR_NEXTG;\n")
SCALED_COL_CHECK = ("    @!pok setp.eq.u32 pbad, tid, tid;\n    and.pred        pq, plow, pown;\n"
                    "    @!pq bra        SC_NEXTG;\n")


def caught(name, test):
    """A deliberately broken kernel must fail its test: this checks the interpreter's checks."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            passed = test()
            fails = [line.strip() for line in out.getvalue().splitlines() if line.startswith("FAIL")]
            why = fails[0][5:] if fails else "wrong numbers"
        except (RuntimeError, ValueError, IndexError, KeyError) as e:
            passed, why = False, f"{type(e).__name__}: {e}"
    print(f"{'FAIL' if passed else 'ok  '} mutant {name}: " + ("not caught" if passed else f"caught ({why[:120]})"))
    return not passed


TESTS = []


def run_test(k):
    """Run TESTS[k] with its output captured: (ok, output, seconds)."""
    import contextlib
    import io
    import time

    global STATS
    name, t = TESTS[k]
    buf, start = io.StringIO(), time.perf_counter()
    if ACCESS_REPORT:
        STATS = AccessStats()
    with contextlib.redirect_stdout(buf):
        try:
            ok = bool(t())
        except (RuntimeError, ValueError, IndexError, KeyError, AssertionError, NotImplementedError) as e:
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            ok = False
        if ACCESS_REPORT and STATS.rows:
            print(STATS.table())
    return ok, buf.getvalue(), time.perf_counter() - start


# --access: print every test's AccessStats table
ACCESS_REPORT = False


def main():
    import argparse
    import multiprocessing

    ap = argparse.ArgumentParser(description="Run the PTX kernels in the interpreter against their contracts.")
    ap.add_argument("only", nargs="?", default="", help="run only the tests whose name contains this")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                    help="tests run in this many processes (default: one per CPU)")
    ap.add_argument("--access", action="store_true",
                    help="print how each memory instruction's warp requests are served: shared-memory "
                         "wavefronts or global sectors per request, against the ideal")
    args = ap.parse_args()
    mods = {p.stem: parse_module(p.read_text()) for p in sorted(KERNELS.glob("*.ptx"))}
    if args.access:
        global ACCESS_REPORT
        ACCESS_REPORT = True
    only = args.only
    tests = [
        ("cosine_cost 1", lambda: test_cosine_cost(mods, 1, 1, 1, 1, 1)),
        ("cosine_cost tiles", lambda: test_cosine_cost(mods, 2, 65, 17, 7, 2)),
        ("cosine_cost chunks", lambda: test_cosine_cost(mods, 1, 9, 70, 37, 3)),
        ("cosine_cost tf32x3 1", lambda: test_cosine_cost(mods, 1, 1, 1, 1, 1, "cosine_cost_tf32x3_f32")),
        ("cosine_cost tf32x3 tiles", lambda: test_cosine_cost(mods, 2, 65, 17, 7, 2, "cosine_cost_tf32x3_f32")),
        ("cosine_cost tf32x3 d=384", lambda: test_cosine_cost(mods, 1, 70, 66, 384, 4, "cosine_cost_tf32x3_f32")),
        ("cosine_cost tf32x3 chunks", lambda: test_cosine_cost(mods, 1, 9, 70, 37, 3, "cosine_cost_tf32x3_f32")),
        ("cosine_cost tf32x3w 1", lambda: test_cosine_cost(mods, 1, 1, 1, 1, 1, "cosine_cost_tf32x3w_f32", 128)),
        ("cosine_cost tf32x3w tiles", lambda: test_cosine_cost(mods, 2, 130, 17, 7, 2, "cosine_cost_tf32x3w_f32", 128)),
        ("cosine_cost tf32x3w d=384", lambda: test_cosine_cost(mods, 1, 70, 129, 384, 4, "cosine_cost_tf32x3w_f32", 128)),
        # wgmma (sm_90a): one tile, partial tiles both ways with a chunk tail (d = 37: 3
        # chunks of 16, the last one partial), and the 128-row tile at d = 384 (24 chunks)
        ("cosine_cost wgmma 1", lambda: test_wgmma_cost(mods, 1, 1, 1, 1, 1)),
        ("cosine_cost wgmma tiles", lambda: test_wgmma_cost(mods, 2, 130, 17, 37, 2)),
        ("cosine_cost wgmma d=384", lambda: test_wgmma_cost(mods, 1, 70, 129, 384, 4)),
        # three stages (one group left in flight at each barrier): one chunk, two chunks
        # (the prologue's two stages only), a partial last chunk, d = 384 (24 chunks, the
        # stages rotating eight times)
        ("cosine_cost wgmma 3 stages 1", lambda: test_wgmma_cost(mods, 1, 1, 1, 1, 1, 3)),
        ("cosine_cost wgmma 3 stages one chunk", lambda: test_wgmma_cost(mods, 1, 33, 40, 16, 5, 3)),
        ("cosine_cost wgmma 3 stages two chunks", lambda: test_wgmma_cost(mods, 1, 20, 9, 32, 6, 3)),
        ("cosine_cost wgmma 3 stages tiles", lambda: test_wgmma_cost(mods, 2, 130, 17, 37, 2, 3)),
        ("cosine_cost wgmma 3 stages d=384", lambda: test_wgmma_cost(mods, 1, 70, 129, 384, 4, 3)),
        # wgmma with A in registers: the same shapes, and one chunk (d = 16: no loop)
        ("cosine_cost wgmma-rs 1", lambda: test_wgmma_rs_cost(mods, 1, 1, 1, 1, 1)),
        ("cosine_cost wgmma-rs tiles", lambda: test_wgmma_rs_cost(mods, 2, 130, 17, 37, 2)),
        ("cosine_cost wgmma-rs d=384", lambda: test_wgmma_rs_cost(mods, 1, 70, 129, 384, 4)),
        ("cosine_cost wgmma-rs one chunk", lambda: test_wgmma_rs_cost(mods, 1, 33, 40, 16, 5)),
        # Every length full: real entries in the tiles past the first (row and column tile 1,
        # and a partial third row tile of one row for the 64 x 64 kernels; 2 x 2 tiles of
        # 128, the second ones partial, for the 128 x 128 kernels), so that their x and y
        # addressing, norms and stores are checked, not only their padding.
        ("cosine_cost tiles full", lambda: test_cosine_cost(mods, 1, 129, 70, 7, 50, full=True)),
        ("cosine_cost tf32x3 tiles full", lambda: test_cosine_cost(mods, 1, 129, 70, 7, 51, "cosine_cost_tf32x3_f32",
                                                                    full=True)),
        ("cosine_cost tf32x3w tiles full", lambda: test_cosine_cost(mods, 1, 130, 136, 7, 52, "cosine_cost_tf32x3w_f32",
                                                                     128, full=True)),
        ("cosine_cost wgmma tiles full", lambda: test_wgmma_cost(mods, 1, 130, 136, 20, 53, full=True)),
        ("cosine_cost wgmma 3 stages tiles full", lambda: test_wgmma_cost(mods, 1, 130, 136, 20, 54, 3, full=True)),
        ("cosine_cost wgmma-rs tiles full", lambda: test_wgmma_rs_cost(mods, 1, 130, 136, 20, 55, full=True)),
        ("maxsim smem", lambda: test_maxsim(mods, 2, 5, 3, 6, 4, True)),
        ("maxsim wide rows", lambda: test_maxsim(mods, 1, 3, 2, 130, 13, True)),
        ("maxsim global", lambda: test_maxsim(mods, 2, 9, 2, 9, 5, False)),
        # the tiled route: one block; two blocks of documents (offsets into the tokens); a
        # document longer than a warp (lengths up to 40 here, 70 in the CUDA tests)
        ("maxsim tiled 1x1", lambda: test_maxsim_tiled(mods, 1, 1, 1, 3, 6, [(0, 1)])),
        ("maxsim tiled", lambda: test_maxsim_tiled(mods, 2, 5, 3, 6, 4, [(0, 3)])),
        ("maxsim tiled blocks", lambda: test_maxsim_tiled(mods, 3, 4, 5, 9, 7, [(0, 2), (2, 3)])),
        ("sinkhorn smem", lambda: test_sinkhorn(mods, 3, 17, 29, 4, True, 64, 6, paths=["SR_STORE", "SC_STORE", "!SRS", "!SCS", "!ROW"])),
        # eps 0.002: K down to -1443, the first passes' sums underflow and the on-chip passes
        # fall back to the online maximum
        ("sinkhorn smem fallback", lambda: test_sinkhorn(mods, 1, 12, 10, 4, True, 32, 28, True, eps=0.002, paths=["SRS", "SR_STORE"])),
        ("sinkhorn global", lambda: test_sinkhorn(mods, 2, 40, 9, 3, False, 128, 7, paths=["ROW", "!SITER"])),
        # rows / columns longer than the 4 values per lane kept in registers (128)
        ("sinkhorn long rows", lambda: test_sinkhorn(mods, 1, 3, 161, 2, True, 64, 14, True)),
        ("sinkhorn long columns", lambda: test_sinkhorn(mods, 1, 150, 2, 2, False, 64, 15, True)),
        # every tail length 1..7 of the 8-element chunks, in both passes: the row pass sees
        # m % 8, the column pass n % 8
    ] + [
        (f"sinkhorn tail {n}x{m}", lambda n=n, m=m, k=k: test_sinkhorn(mods, 1, n, m, 2, k % 2 == 0, 32, 17 + k, True))
        for k, (n, m) in enumerate([(9, 11), (10, 9), (12, 12), (13, 14), (15, 15), (11, 10), (14, 13)])
    ] + [
        # lse_mode 1 (absorbed shifts) with K on chip: K'' = K + F + G on loading (the second
        # launch continues from the first's potentials), fast passes only at eps 0.05; at eps
        # 0.002 the fallback, the flags and the re-absorption; every tail length; 1 x 1;
        # converging; K in global memory (lse_mode ignored there)
        ("sinkhorn absorbed", lambda: test_sinkhorn(mods, 3, 17, 29, 4, True, 64, 6, lse_mode=1,
                                                    paths=["SRA_CHUNK", "SCA_CHUNK", "KSTORE", "!SRS", "!SCS", "!RA_ROWS"])),
        ("sinkhorn absorbed fallback", lambda: test_sinkhorn(mods, 1, 12, 10, 6, True, 32, 28, True, eps=0.002, lse_mode=1,
                                                             paths=["SRS", "RA_KCOL", "RA_V", "SRA_CHUNK"])),
        ("sinkhorn absorbed 1x1", lambda: test_sinkhorn(mods, 1, 1, 1, 2, True, 64, 8, lse_mode=1)),
        # zero iterations (the error only): the absorbed shifts added back in the error pass
        ("sinkhorn absorbed zero iterations", lambda: test_sinkhorn(mods, 2, 5, 6, 0, True, 32, 9, lse_mode=1)),
        ("sinkhorn absorbed converging", lambda: test_sinkhorn(mods, 2, 6, 5, 60, True, 64, 12, lse_mode=1)),
        ("sinkhorn absorbed global", lambda: test_sinkhorn(mods, 2, 40, 9, 3, False, 128, 7, lse_mode=1,
                                                           paths=["ROW", "!SITER", "!SRA"])),
    ] + [
        (f"sinkhorn absorbed tail {n}x{m}", lambda n=n, m=m, k=k: test_sinkhorn(mods, 1, n, m, 2, k % 2 == 0, 32, 17 + k, True,
                                                                                  lse_mode=1))
        for k, (n, m) in enumerate([(9, 11), (10, 9), (12, 12), (13, 14), (15, 15), (11, 10), (14, 13)])
    ] + [
        # split half-iterations: ragged pairs with an inactive one; a line longer than one
        # chunk of 128 with a partial last chunk (130, 257); lines past one CTA's 8 warps;
        # small eps (K down to -1443: the online maximum must keep the sums finite)
        ("sinkhorn split", lambda: test_split(mods, 3, 17, 29, 3, 31)),
        ("sinkhorn split long lines", lambda: test_split(mods, 1, 130, 257, 2, 32, True)),
        ("sinkhorn split 1x1", lambda: test_split(mods, 1, 1, 1, 2, 33)),
        ("sinkhorn split small eps", lambda: test_split(mods, 1, 12, 10, 4, 34, True, eps=0.002)),
        ("sinkhorn split converging", lambda: test_split(mods, 2, 6, 5, 60, 35)),
        ("sinkhorn retire", lambda: test_retire(mods, 300, 1e-3, 90)),
        ("sinkhorn retire zero threshold", lambda: test_retire(mods, 40, 0.0, 91)),
        ("sinkhorn retire tiny threshold", lambda: test_retire(mods, 40, 1e-300, 92)),
        ("sinkhorn 1x1", lambda: test_sinkhorn(mods, 1, 1, 1, 2, True, 64, 8)),
        ("sinkhorn converging", lambda: test_sinkhorn(mods, 2, 6, 5, 60, True, 64, 12)),
        ("sinkhorn zero iterations", lambda: test_sinkhorn(mods, 2, 5, 6, 0, True, 32, 9)),
        # eps 0.05: every row and column sum is accepted by the fast path; eps 0.002: the
        # first passes' sums fall below 2^-100 (K down to -1443), so the online-maximum
        # fallback runs too, and both must give the reference's potentials.
        ("fused", lambda: test_fused(mods, 2, 13, 70, 10, 3, 10, paths=["RW_STORE", "CL_STORE", "!RWS", "!CLS"])),
        ("fused fallback rows", lambda: test_fused(mods, 1, 11, 9, 6, 4, 19, True, eps=0.002, paths=["RWS", "RW_STORE"])),
        # two x rows (no zero row, whose uniform plan row would feed every column): columns
        # far from both rows have sums below 2^-100 in the first column pass
        ("fused fallback columns", lambda: test_fused(mods, 1, 2, 9, 6, 4, 19, True, eps=0.002, paths=["RWS", "CLS", "CL_STORE"])),
        ("fused tails 4 and 7", lambda: test_fused(mods, 1, 12, 15, 5, 2, 23, True)),
        # more rows / columns than one round of the warps (ntid / 4 = 128 per round)
        ("fused many rows", lambda: test_fused(mods, 1, 140, 3, 4, 2, 24, True)),
        ("fused many columns", lambda: test_fused(mods, 1, 3, 133, 4, 2, 25, True)),
        # more rows than the 256 cost-phase threads: the init loops of the threads that skip
        # the cost tiles write F[] where the cost threads read the inverse norms, so only the
        # barrier after the cost phase keeps them apart (the race detector checks it)
        ("fused more rows than cost threads", lambda: test_fused(mods, 1, 300, 3, 4, 1, 5, True)),
        # the issue's pair shape: two 64x64 cost tiles per dimension, d = 384 (12 chunks),
        # every row and column pass full chunks only
        ("fused issue shape", lambda: test_fused(mods, 1, 128, 128, 384, 3, 77, True, paths=["RW_STORE", "CL_STORE"])),
        # the cost phase on the tensor cores (cost_mode 1): two tiles each way, 2 chunks of d
        ("fused tf32x3", lambda: test_fused(mods, 2, 70, 66, 40, 2, 26, cost_mode=1)),
        ("fused tf32x3 1x1", lambda: test_fused(mods, 1, 1, 1, 3, 2, 27, cost_mode=1)),
        ("fused row tiles", lambda: test_fused(mods, 1, 70, 5, 6, 2, 16, True)),
        ("fused 1x1", lambda: test_fused(mods, 1, 1, 1, 3, 2, 11)),
        # the smaller block the host may launch (OPTICAL_CUDA_FUSED_THREADS=256): 64 rows per
        # round of the warps, the cost tiles on every thread
        ("fused 256 threads many rows", lambda: test_fused(mods, 1, 140, 3, 4, 2, 24, True, threads=256)),
        ("fused 256 threads fallback", lambda: test_fused(mods, 1, 2, 9, 6, 4, 19, True, eps=0.002,
                                                          paths=["RWS", "CLS"], threads=256)),
        ("fused 256 threads tf32x3", lambda: test_fused(mods, 2, 70, 66, 40, 2, 26, cost_mode=1, threads=256)),
        # cost_mode 2: producer warps; d = 40 ends in a partial chunk, 70 x 66 has four tiles,
        # 130 x 17 two row tiles (the second partly empty), 1 x 1 a single row each
        ("fused pipelined", lambda: test_fused(mods, 2, 70, 66, 40, 2, 26, cost_mode=2,
                                               paths=["PCHUNK", "PPROD", "PNORM", "PWRITE", "!NORM", "!TC_CHUNK"])),
        ("fused pipelined row tiles", lambda: test_fused(mods, 1, 130, 17, 37, 2, 28, True, cost_mode=2)),
        ("fused pipelined 1x1", lambda: test_fused(mods, 1, 1, 1, 3, 2, 27, cost_mode=2)),
        ("fused pipelined one chunk", lambda: test_fused(mods, 1, 9, 12, 16, 2, 29, True, cost_mode=2)),
        ("fused pipelined issue shape", lambda: test_fused(mods, 1, 128, 128, 384, 2, 78, True, cost_mode=2)),
        # with 256 threads it runs as cost_mode 1 in the larger space
        ("fused pipelined 256 threads", lambda: test_fused(mods, 2, 70, 66, 40, 2, 26, cost_mode=2, threads=256,
                                                           paths=["NORM", "TC_CHUNK", "!PCHUNK"])),
        # cost_mode 3: the cost given (ragged pairs; more columns than one step of the lanes'
        # four loads, 130 > 128; more rows than the warps, 40 > 16; 256 threads; 1 x 1)
        ("fused cost given", lambda: test_fused(mods, 2, 40, 130, 8, 3, 31, cost_mode=3,
                                                paths=["GCOST", "!NORM", "!TC_CHUNK", "!PCHUNK"])),
        ("fused cost given 256 threads", lambda: test_fused(mods, 2, 70, 66, 8, 2, 32, cost_mode=3, threads=256)),
        ("fused cost given 1x1", lambda: test_fused(mods, 1, 1, 1, 3, 2, 33, cost_mode=3)),
        # the issue's pair shape, as gpu-check benches this mode (the load of a full 128 x 128
        # cost, then full chunks only in both passes)
        ("fused cost given issue shape", lambda: test_fused(mods, 1, 128, 128, 384, 2, 79, True, cost_mode=3,
                                                           paths=["GCOST", "RW_STORE", "CL_STORE", "!RWS", "!CLS"])),
        # lse_mode 1, the shifts absorbed into K'': at eps 0.05 the fast passes all through,
        # nothing re-absorbed; at eps 0.002 the first passes fall back, the warps' flags and
        # the barrier's OR re-absorb the potentials, and the fast passes take over; rows past
        # one round of the warps (re-absorbing them warp by warp); 256 threads; the cost given
        ("fused absorbed", lambda: test_fused(mods, 2, 13, 70, 10, 3, 10, lse_mode=1,
                                              paths=["RWA_CHUNK", "CLA_CHUNK", "RW_STORE", "CL_STORE", "!RWS", "!CLS",
                                                     "!RA_ROWS"])),
        ("fused absorbed fallback rows", lambda: test_fused(mods, 1, 11, 9, 6, 6, 19, True, eps=0.002, lse_mode=1,
                                                            paths=["RWS", "RA_KCOL", "RA_V", "RWA_CHUNK", "CLA_CHUNK"])),
        ("fused absorbed fallback columns", lambda: test_fused(mods, 1, 2, 9, 6, 6, 19, True, eps=0.002, lse_mode=1,
                                                               paths=["CLS", "RA_KCOL", "CLA_CHUNK"])),
        ("fused absorbed many rows", lambda: test_fused(mods, 1, 140, 3, 4, 3, 24, True, eps=0.002, lse_mode=1,
                                                        paths=["RA_KCOL", "RWA_CHUNK"])),
        ("fused absorbed tails", lambda: test_fused(mods, 1, 12, 15, 5, 2, 23, True, lse_mode=1)),
        ("fused absorbed 256 threads fallback", lambda: test_fused(mods, 1, 2, 9, 6, 6, 19, True, eps=0.002,
                                                                   threads=256, lse_mode=1, paths=["RA_KCOL"])),
        ("fused absorbed 1x1", lambda: test_fused(mods, 1, 1, 1, 3, 2, 11, lse_mode=1)),
        ("fused absorbed zero iterations", lambda: test_fused(mods, 2, 13, 70, 10, 0, 10, lse_mode=1)),
        ("fused absorbed cost given issue shape", lambda: test_fused(mods, 1, 128, 128, 384, 2, 79, True, cost_mode=3,
                                                                     lse_mode=1,
                                                                     paths=["RWA_CHUNK", "CLA_CHUNK", "!RWS", "!CLS"])),
        # lse_mode 2, the scaled passes (Q = 2^K'' on chip, products instead of ex2): at eps
        # 0.05 one rebuild along the rows before the first pass, then every pass accepted, the
        # error from Q; at eps 0.002 rebuilds along both and the redone passes; rows past one
        # round of the warps; chunk tails; 256 threads; 1 x 1; zero iterations (the rebuild,
        # then the error pass); the error pass falling back to K in global memory; the cost given
        ("fused scaled", lambda: test_fused(mods, 2, 13, 70, 10, 3, 10, lse_mode=2,
                                            paths=["SRB_R", "SR_CHUNK", "SC_CHUNK", "S_TAIL", "SR_ERR",
                                                   "!SERR_GLOBAL", "!RWA_CHUNK", "!ITER"])),
        ("fused scaled rebuilds", lambda: test_fused(mods, 1, 2, 9, 6, 8, 19, True, eps=0.002, lse_mode=2,
                                                     paths=["SRB_C", "SRBC_Q", "SRBR_Q", "SR_ERR"])),
        ("fused scaled many rows", lambda: test_fused(mods, 1, 140, 3, 4, 3, 24, True, eps=0.002, lse_mode=2)),
        ("fused scaled tails", lambda: test_fused(mods, 1, 12, 15, 5, 4, 23, True, lse_mode=2)),
        ("fused scaled 256 threads", lambda: test_fused(mods, 1, 2, 9, 6, 8, 19, True, eps=0.002, threads=256,
                                                        lse_mode=2, paths=["SRB_C"])),
        ("fused scaled 1x1", lambda: test_fused(mods, 1, 1, 1, 3, 2, 11, lse_mode=2)),
        ("fused scaled zero iterations", lambda: test_fused(mods, 2, 13, 70, 10, 0, 10, lse_mode=2,
                                                            paths=["SRB_R", "SR_ERR", "!SC_CHUNK"])),
        # variants of the kernel that must still match: every row pass (or every column pass)
        # found out of range, so that each is redone after a rebuild from the current
        # potentials mid-solve; the error pass always from K in global memory
        ("fused scaled variant: every row pass rebuilt", lambda: test_fused(
            mutant("sinkhorn_fused", SCALED_ROW_CHECK, "    setp.eq.u32     pbad, tid, tid;\n" + SCALED_ROW_CHECK),
            2, 13, 70, 10, 4, 12, lse_mode=2, paths=["SRBR_Q"])),
        ("fused scaled variant: every column pass rebuilt", lambda: test_fused(
            mutant("sinkhorn_fused", SCALED_COL_CHECK, "    setp.eq.u32     pbad, tid, tid;\n" + SCALED_COL_CHECK),
            2, 13, 70, 10, 4, 12, lse_mode=2, paths=["SRBC_Q"])),
        ("fused scaled variant: the error from global K", lambda: test_fused(
            mutant("sinkhorn_fused", "    @predo bra      SROWOK;\n    @!preab bra     SROWOK;\n",
                   "    @perr bra       SERR_GLOBAL;\n    @predo bra      SROWOK;\n    @!preab bra     SROWOK;\n"),
            2, 13, 70, 10, 3, 13, lse_mode=2, paths=["SERR_GLOBAL", "E_CHUNK"])),
        ("fused scaled cost given issue shape", lambda: test_fused(mods, 1, 128, 128, 384, 2, 79, True, cost_mode=3,
                                                                   lse_mode=2,
                                                                   paths=["SR_CHUNK", "SC_CHUNK", "!S_TAIL", "!SRB_C"])),
        # cost_mode 4, a solve continued from K (what the host launches for the scaled passes
        # in place of sinkhorn_iterate_f32): ragged pairs with an inactive one, two launches
        # (the second from the first's potentials), at eps 0.05 and 0.002 (rebuilds along
        # rows and columns), 1 x 1, zero iterations (a rebuild, then the error), 60
        # iterations (small errors), more rows than a round of 256 threads; and the
        # log-domain passes from the K it copies into shared memory
        ("fused continue scaled", lambda: test_fused_continue(mods, 3, 17, 29, 4, 61,
                                                               paths=["SRB_R", "SR_CHUNK", "!KCOL"])),
        ("fused continue scaled small eps", lambda: test_fused_continue(mods, 1, 12, 10, 6, 62, True, eps=0.002,
                                                                         paths=["SRBC_Q"])),
        ("fused continue scaled 1x1", lambda: test_fused_continue(mods, 1, 1, 1, 2, 63)),
        ("fused continue scaled zero iterations", lambda: test_fused_continue(mods, 2, 5, 6, 0, 64)),
        ("fused continue scaled error only", lambda: test_fused_continue(mods, 3, 17, 29, 3, 61, first=3)),
        ("fused continue scaled converging", lambda: test_fused_continue(mods, 2, 6, 5, 60, 65)),
        ("fused continue scaled many rows", lambda: test_fused_continue(mods, 1, 140, 3, 3, 66, True, threads=256)),
        ("fused continue shifted", lambda: test_fused_continue(mods, 3, 17, 29, 4, 67, lse_mode=0,
                                                                paths=["KCOL", "RWF_CHUNK"])),
        ("fused continue absorbed", lambda: test_fused_continue(mods, 1, 12, 10, 6, 68, True, eps=0.002, lse_mode=1,
                                                                 paths=["KCOL", "RA_KCOL"])),
        # memory access patterns (AccessStats) on full 128 x 128 tiles with even rows: the
        # staging stores and epilogue reads in shared memory without bank conflicts, the
        # output in whole 32-byte sectors; and the even-m epilogue of the wgmma kernels on
        # ragged pairs (odd lengths inside even m)
        ("access wgmma", lambda: test_access(lambda: test_wgmma_cost(mods, 1, 128, 128, 16, 40), "cosine_cost_wgmma_f32",
                                             ["st.shared", "ld.shared", "st.global"])),
        ("access wgmma-rs", lambda: test_access(lambda: test_wgmma_rs_cost(mods, 1, 128, 128, 16, 41),
                                                "cosine_cost_wgmma_rs_f32", ["st.shared", "ld.shared", "st.global"])),
        ("access tf32x3", lambda: test_access(lambda: test_cosine_cost(mods, 1, 128, 128, 16, 42, "cosine_cost_tf32x3_f32"),
                                              "cosine_cost_tf32x3_f32", ["st.shared", "ld.shared", "st.global"])),
        # the fused kernel's tensor-core cost phases (the FP32 one keeps a 2-way conflict in
        # its staging stores) and its iterations
        ("access fused tf32x3", lambda: test_access(lambda: test_fused(mods, 1, 128, 128, 16, 1, 45, True, cost_mode=1),
                                                    "sinkhorn_fused_f32", ["st.shared", "ld.shared", "st.global"])),
        ("access fused pipelined", lambda: test_access(lambda: test_fused(mods, 1, 128, 128, 16, 1, 46, True, cost_mode=2),
                                                       "sinkhorn_fused_f32", ["st.shared", "ld.shared", "st.global"])),
        # sinkhorn_iterate_f32 with K on chip, 128 x 128 (the `sinkhorn` bench's pairs): the
        # load of K, both passes and the error pass, shifted and absorbed, without conflicts
        ("access sinkhorn", lambda: test_access(lambda: test_sinkhorn(mods, 1, 128, 128, 2, True, 512, 47, True),
                                                "sinkhorn_iterate_f32", ["ld.shared", "st.shared"])),
        ("access sinkhorn absorbed", lambda: test_access(lambda: test_sinkhorn(mods, 1, 128, 128, 2, True, 512, 47, True,
                                                                               lse_mode=1),
                                                         "sinkhorn_iterate_f32", ["ld.shared", "st.shared"])),
        ("access fused scaled", lambda: test_access(lambda: test_fused(mods, 1, 128, 128, 16, 2, 48, True, cost_mode=3,
                                                                       lse_mode=2),
                                                    "sinkhorn_fused_f32", ["ld.shared", "st.shared"])),
        ("cosine_cost wgmma even m", lambda: test_wgmma_cost(mods, 2, 70, 66, 37, 43)),
        ("cosine_cost wgmma-rs even m", lambda: test_wgmma_rs_cost(mods, 2, 70, 66, 37, 44)),
        # the exp2 probe: no round (the starting values' sum), one, and enough rounds for the
        # chains to reach their fixed point; two CTAs of a partial warp each
        ("ex2_peak no rounds", lambda: test_ex2_peak(mods, 2, 33, 0)),
        ("ex2_peak one round", lambda: test_ex2_peak(mods, 1, 32, 1)),
        ("ex2_peak converged", lambda: test_ex2_peak(mods, 2, 5, 3)),
    ] + [
        # Each of these kernels is broken on purpose, and the interpreter must notice: its
        # checks (descriptor layout, wgmma ordering rules, named barriers) are tested too.
        (f"mutant {name}", lambda name=name, module=module, old=old, new=new, test=test:
            caught(name, lambda: test(mutant(module, old, new))))
        for name, module, old, new, test in [
            # an error equal to the threshold's f32 converges (the host's <=)
            ("retire strict comparison", "sinkhorn:sinkhorn_retire_f32",
             "setp.le.or.u32  pconv, bits, thr, pneg;", "setp.lt.or.u32  pconv, bits, thr, pneg;",
             lambda m: test_retire(None, 300, 1e-3, 90, module=m)),
            # -0 (and negatives, -inf) are below any threshold
            ("retire sign ignored", "sinkhorn:sinkhorn_retire_f32",
             "setp.le.or.u32  pconv, bits, thr, pneg;", "setp.le.u32     pconv, bits, thr;",
             lambda m: test_retire(None, 300, 1e-3, 90, module=m)),
            # a converged pair must stop iterating
            ("retire pair left active", "sinkhorn:sinkhorn_retire_f32",
             "    st.global.u32   [aaddr], 0;\n", "",
             lambda m: test_retire(None, 300, 1e-3, 90, module=m)),
            ("wgmma LBO and SBO swapped", "cosine_cost_sm90a",
             "mov.u64         dconst, 0x0000002000080000;", "mov.u64         dconst, 0x0000000800200000;",
             lambda m: test_wgmma_cost(m, 1, 9, 5, 37, 3)),
            ("wgmma no wait_group", "cosine_cost_sm90a",
             "    @p3 bra         WAIT1;\n    wgmma.wait_group.sync.aligned 0;\n", "    @p3 bra         WAIT1;\n",
             lambda m: test_wgmma_cost(m, 1, 9, 5, 37, 3)),
            ("wgmma stage rewritten in flight", "cosine_cost_sm90a",
             "    sub.u32         u, it, u;\n    and.b32         t, it, 1;\n    selp.u32        t, u, t, p3;\n"
             "    shl.b32         t, t, 15;\n    add.u32         t, t, sbase;\n    add.u32         sa",
             "    sub.u32         u, it, u;\n    add.u32         t, it, 1;\n    and.b32         t, t, 1;\n"
             "    selp.u32        t, u, t, p3;\n    shl.b32         t, t, 15;\n    add.u32         t, t, sbase;\n"
             "    add.u32         sa",
             lambda m: test_wgmma_cost(m, 1, 9, 5, 37, 3)),
            # three stages: a group left in flight with only two stages (the next chunk's
            # stores hit the stage it reads), the stages counted modulo 2 with a group in
            # flight, and the accumulators read before the last group retires
            ("wgmma one group in flight with two stages", "cosine_cost_sm90a",
             "    @p3 bra         WAIT1;\n", "    bra             WAIT1;\n",
             lambda m: test_wgmma_cost(m, 1, 9, 5, 37, 3)),
            ("wgmma three stages numbered modulo 2", "cosine_cost_sm90a:cosine_cost_wgmma_f32",
             "    and.b32         t, it, 1;\n    selp.u32        t, u, t, p3;\n"
             "    shl.b32         t, t, 15;\n    add.u32         t, t, sbase;\n    shl.b32",
             "    and.b32         t, it, 1;\n    mov.u32         u, t;\n    selp.u32        t, u, t, p3;\n"
             "    shl.b32         t, t, 15;\n    add.u32         t, t, sbase;\n    shl.b32",
             lambda m: test_wgmma_cost(m, 1, 9, 5, 64, 3, 3)),
            ("wgmma three stages without the last wait", "cosine_cost_sm90a",
             "    // The last group (still in flight with three stages) before the accumulators are read.\n"
             "    wgmma.wait_group.sync.aligned 0;\n", "",
             lambda m: test_wgmma_cost(m, 1, 9, 5, 37, 3, 3)),
            ("wgmma no wgmma.fence", "cosine_cost_sm90a", WGMMA_SS_FENCE, WGMMA_SS_FENCE.split("\n", 1)[1],
             lambda m: test_wgmma_cost(m, 1, 9, 5, 37, 3)),
            ("wgmma no fence.proxy.async", "cosine_cost_sm90a",
             "STAGED:\n    fence.proxy.async.shared::cta;\n    // Two stages", "STAGED:\n    // Two stages",
             lambda m: test_wgmma_cost(m, 1, 9, 5, 37, 3)),
            # wgmma with A in registers: the A registers rewritten before the wait retires
            # the group that reads them, no wgmma.fence after they were written, the y
            # stores not made visible to the async proxy, LBO and SBO swapped
            ("wgmma-rs no wait_group", "cosine_cost_sm90a", "WAIT:\n    wgmma.wait_group.sync.aligned 0;\n", "WAIT:\n",
             lambda m: test_wgmma_rs_cost(m, 1, 9, 5, 37, 3)),
            ("wgmma-rs no wgmma.fence", "cosine_cost_sm90a", WGMMA_RS_FENCE, WGMMA_RS_FENCE.split("\n", 1)[1],
             lambda m: test_wgmma_rs_cost(m, 1, 9, 5, 37, 3)),
            ("wgmma-rs A register written after the wgmma.fence", "cosine_cost_sm90a", WGMMA_RS_FENCE,
             WGMMA_RS_FENCE.replace("aligned;\n", "aligned;\n    mov.b32         as0, as0;\n", 1),
             lambda m: test_wgmma_rs_cost(m, 1, 9, 5, 37, 3)),
            ("wgmma-rs no fence.proxy.async", "cosine_cost_sm90a",
             "STAGED:\n    fence.proxy.async.shared::cta;\n    bar.sync", "STAGED:\n    bar.sync",
             lambda m: test_wgmma_rs_cost(m, 1, 9, 5, 37, 3)),
            ("wgmma-rs LBO and SBO swapped", "cosine_cost_sm90a",
             "mov.u64         dconst, 0x0000001000080000;", "mov.u64         dconst, 0x0000000800100000;",
             lambda m: test_wgmma_rs_cost(m, 1, 9, 5, 37, 3)),
            ("wgmma-rs A fragment registers in the wrong order", "cosine_cost_sm90a",
             "{ab0, ab1, ab2, ab3}, db,", "{ab0, ab2, ab1, ab3}, db,",
             lambda m: test_wgmma_rs_cost(m, 1, 9, 5, 37, 3)),
            # the access checks: the first version's staging map (a row's four float4 on
            # adjacent lanes: right numbers, 4-way bank conflicts), and 4-byte output stores
            ("wgmma staging stores with bank conflicts", "cosine_cost_sm90a:cosine_cost_wgmma_f32",
             ["    and.b32         r, tid, 7;\n    shl.b32         t, warp, 3;\n    add.u32         r, r, t;\n"
              "    shr.u32         kc, lane, 3;\n"] + [f"sq, {v}, {a}, 31" for v in ("nx0", "nx1", "ny0", "ny1") for a in ("8", "16")],
             ["    shr.u32         r, tid, 2;\n    and.b32         kc, tid, 3;\n"]
             + [f"sq, {v}, {a}, 31" for v in ("nx0", "nx1", "ny0", "ny1") for a in ("1", "2")],
             lambda m: test_access(lambda: test_wgmma_cost(m, 1, 128, 128, 16, 40), "cosine_cost_wgmma_f32", ["st.shared"])),
            ("wgmma 4-byte output stores", "cosine_cost_sm90a:cosine_cost_wgmma_f32",
             "    @pt bra         EPI_ODD;\n", "    bra             EPI_ODD;\n",
             lambda m: test_access(lambda: test_wgmma_cost(m, 1, 128, 128, 16, 40), "cosine_cost_wgmma_f32", ["st.global"])),
            ("maxsim reduce without the block's token offset", "maxsim",
             "    sub.u32         doff, doff, tok0;\n", "",
             lambda m: test_maxsim_tiled(m, 3, 4, 5, 9, 7, [(0, 2), (2, 3)])),
            ("fused no barrier after the cost phase", "sinkhorn_fused",
             "    // Every thread: the cost tiles are in K, and F[] and G[] (the inverse norms) are free.\n"
             "    bar.sync        0;\n", "",
             lambda m: test_fused(m, 1, 300, 3, 4, 1, 5, True)),
            ("fused pipelined without the barrier between chunks", "sinkhorn_fused",
             "PSYNC:\n    bar.sync        0;\n", "PSYNC:\n",
             lambda m: test_fused(m, 1, 70, 5, 40, 1, 16, True, cost_mode=2)),
            ("fused pipelined storing into the buffer being read", "sinkhorn_fused",
             "    xor.b32         t, cc, 20480;\n", "    mov.u32         t, cc;\n",
             lambda m: test_fused(m, 1, 70, 5, 40, 1, 16, True, cost_mode=2)),
            ("fused pipelined without the producers' norms", "sinkhorn_fused",
             "    @px0 st.shared.f32 [u], tf;\n", "",
             lambda m: test_fused(m, 1, 70, 5, 40, 1, 16, True, cost_mode=2)),
            ("fused cost given, the fourth column of a step dropped", "sinkhorn_fused",
             "    @pq st.shared.f32 [t+384], v3;\n    @pq st.global.f32 [addr+384], v3;\n", "",
             lambda m: test_fused(m, 1, 9, 130, 8, 2, 34, True, cost_mode=3)),
            # cost_mode 4 (a solve continued): F not read at the start (the second launch
            # restarts from 0); the active flags ignored; the fourth column of a step of the
            # copy of K dropped
            ("fused continue without the warm start of G", "sinkhorn_fused",
             "    @pk ld.global.f32 fo, [addr];\n    shl.b32         u, j, 2;\n", "    shl.b32         u, j, 2;\n",
             lambda m: test_fused_continue(m, 3, 17, 29, 4, 61)),
            # F's start matters to the error of a launch of zero iterations only
            ("fused continue without the warm start of F", "sinkhorn_fused",
             "    @pk ld.global.f32 fo, [addr];\n    shl.b32         u, i, 2;\n", "    shl.b32         u, i, 2;\n",
             lambda m: test_fused_continue(m, 3, 17, 29, 3, 61, first=3)),
            ("fused continue ignoring the active flags", "sinkhorn_fused",
             "    @pt bra         DONE;\nACTIVE:\n", "ACTIVE:\n",
             lambda m: test_fused_continue(m, 3, 17, 29, 4, 61)),
            ("fused continue, the fourth column of a step of K dropped", "sinkhorn_fused",
             "    @pq st.shared.f32 [t+384], v3;\n    add.u32         j, j, 128;\n    bra             KCOL;\n",
             "    add.u32         j, j, 128;\n    bra             KCOL;\n",
             lambda m: test_fused_continue(m, 1, 9, 130, 2, 69, True, lse_mode=0)),
            # lse_mode 1: the re-absorption's update of K'' dropped; the stored row potential
            # without its absorbed shift; the OR of the fallback flags replaced by a plain
            # barrier (no re-absorption: still right, but the fast passes never come back)
            ("fused absorbed without the update of K''", "sinkhorn_fused",
             "    ld.shared.f32   w0, [t];\n    add.f32         w0, w0, tf;\n", "    ld.shared.f32   w0, [t];\n",
             lambda m: test_fused(m, 1, 11, 9, 6, 6, 19, True, eps=0.002, lse_mode=1)),
            ("fused absorbed row potential without c", "sinkhorn_fused",
             "    @pabs add.f32   fnew, fnew, fo;\n    add.u32         t, u, sf;\n    st.shared.f32   [t], fnew;\n",
             "    add.u32         t, u, sf;\n    st.shared.f32   [t], fnew;\n",
             lambda m: test_fused(m, 1, 11, 9, 6, 6, 19, True, eps=0.002, lse_mode=1)),
            ("fused absorbed never re-absorbing", "sinkhorn_fused",
             "    bar.red.or.pred preab, 0, pfell;\n", "    bar.red.or.pred preab, 0, pfell;\n    setp.ne.u32     preab, tid, tid;\n",
             lambda m: test_fused(m, 1, 11, 9, 6, 6, 19, True, eps=0.002, lse_mode=1, paths=["RA_KCOL"])),
            # the iterate kernel's absorbed mode: K loaded without F + G (the second launch then
            # starts from far-off shifts: wrong numbers), the re-absorption's update of K''
            # dropped, and the barrier before loading K dropped (a race on F and G)
            ("sinkhorn absorbed K loaded without the potentials", "sinkhorn:sinkhorn_iterate_f32",
             "    add.f32         v, v, tf;\n", "",
             lambda m: test_sinkhorn(m, 3, 17, 29, 4, True, 64, 6, lse_mode=1)),
            ("sinkhorn absorbed without the update of K''", "sinkhorn:sinkhorn_iterate_f32",
             "    ld.shared.f32   w0, [t];\n    add.f32         w0, w0, tf;\n", "    ld.shared.f32   w0, [t];\n",
             lambda m: test_sinkhorn(m, 1, 12, 10, 6, True, 32, 28, True, eps=0.002, lse_mode=1)),
            ("sinkhorn absorbed error pass without c", "sinkhorn:sinkhorn_iterate_f32",
             "    @pabs add.f32   fnew, fnew, fo;\n    add.u32         t, u, sf;\n    ld.shared.f32   fi, [t];\n",
             "    add.u32         t, u, sf;\n    ld.shared.f32   fi, [t];\n",
             lambda m: test_sinkhorn(m, 3, 17, 29, 4, True, 64, 6, lse_mode=1)),
            ("fused absorbed error pass without c", "sinkhorn_fused",
             "    @pabs add.f32   fnew, fnew, fo;\n    add.u32         t, u, sf;\n    ld.shared.f32   fi, [t];\n",
             "    add.u32         t, u, sf;\n    ld.shared.f32   fi, [t];\n",
             lambda m: test_fused(m, 1, 11, 9, 6, 6, 19, True, eps=0.002, lse_mode=1)),
            ("sinkhorn absorbed no barrier before loading K", "sinkhorn:sinkhorn_iterate_f32",
             "    @pabs bar.sync  0;\n", "",
             lambda m: test_sinkhorn(m, 3, 17, 29, 4, True, 64, 6, lse_mode=1)),
            # lse_mode 2 (scaled): the row rebuild without its column shifts d; the column
            # pass's vector u without log2 a; no range check in the column pass (at eps 0.002
            # its first sums underflow); the error pass storing its update instead of scoring it;
            # no barrier between the column rebuild's two steps (a race on c)
            ("fused scaled row rebuild without d", "sinkhorn_fused",
             "    add.u32         t, u, h;\n    st.shared.f32   [t], tf;\n    add.u32         t, u, hb;\n",
             "    add.u32         t, u, hb;\n",
             lambda m: test_fused(m, 1, 2, 9, 6, 8, 19, True, eps=0.002, lse_mode=2)),
            ("fused scaled u without log2 a", "sinkhorn_fused",
             "    sub.f32         tf, la, s;\n", "    neg.f32         tf, s;\n",
             lambda m: test_fused(m, 2, 13, 70, 10, 3, 10, lse_mode=2)),
            ("fused scaled column pass without its range check", "sinkhorn_fused",
             SCALED_COL_CHECK, SCALED_COL_CHECK.replace("    @!pok setp.eq.u32 pbad, tid, tid;\n", ""),
             lambda m: test_fused(m, 1, 2, 9, 6, 8, 19, True, eps=0.002, lse_mode=2)),
            ("fused scaled error pass storing its update", "sinkhorn_fused",
             "    @perr bra       SR_ERR;\n", "",
             lambda m: test_fused(m, 2, 13, 70, 10, 3, 10, lse_mode=2)),
            ("fused scaled column rebuild without its barrier", "sinkhorn_fused",
             "SRBC_K0:\n    bar.sync        0;\n", "SRBC_K0:\n",
             lambda m: test_fused(m, 1, 2, 9, 6, 8, 19, True, eps=0.002, lse_mode=2)),
            ("fused no named barrier in the cost tiles", "sinkhorn_fused",
             "TWRITTEN:\n    bar.sync        1, 256;\n", "TWRITTEN:\n",
             lambda m: test_fused(m, 1, 70, 5, 6, 1, 16, True)),
        ]
    ]
    TESTS[:] = [(name, t) for name, t in tests if only in name]
    if not TESTS:
        print(f"ptx-emulate: no test name contains {only!r}")
        sys.exit(2)
    # Independent tests, each in its own process (fork: the lambdas need no pickling);
    # results are printed in the list's order.
    jobs = max(1, min(args.jobs, len(TESTS)))
    if jobs == 1:
        results = map(run_test, range(len(TESTS)))
    else:
        pool = multiprocessing.get_context("fork").Pool(jobs)
        results = pool.imap(run_test, range(len(TESTS)))
    ok = True
    for (name, _), (passed, out, secs) in zip(TESTS, results):
        sys.stdout.write(out)
        print(f"     ({name}: {secs:.1f} s)")
        sys.stdout.flush()
        ok &= passed
    print("ptx-emulate: all kernels match their contracts" if ok else "ptx-emulate: FAILURES")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
