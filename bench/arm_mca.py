"""A pipeline model (llvm-mca) of the binary convolution's inner loops, to size the NEON path without
an ARM machine (a wall-clock figure under qemu means nothing).

    .venv/bin/python bench/arm_mca.py               # model every loop; measure the AVX2 path here
    .venv/bin/python bench/arm_mca.py --no-measure  # the model only (no extension needed)
    .venv/bin/python bench/arm_mca.py --show-asm    # also print each loop as analysed

Loops analysed, each one iteration of its reduction loop, steady state:
  neon     our NEON micro-kernel (native/src/kernels_neon.cpp, micro_tile<4>), compiled here with
           aarch64-linux-gnu-g++ and the core's flags; the loop is cut from the compiler's output
           (the innermost backward branch around the CNTs), so what is modelled is what ships. One
           iteration is a pair of reduction words x 4 pixels x 16 channels. Two loops ship:
           `neon` loads a pixel's pair with one LDR q (the pair inside one kernel tap: the words
           per tap are even, i.e. C in (64, 128], (192, 256], ...), `neon_lanes` with LDR d + a
           single-lane LD1 (the pair straddles two taps: C <= 64, or words per tap odd).
  lce      a loop with the structure of Larq Compute Engine's AArch64 indirect-bgemm micro-kernel
           (kernel_8x4x2_aarch64.h: 4 pixels x 8 output channels per step of 64 bits of depth;
           weights as 4 q loads, each activation word put in both halves of a q register by two
           single-lane loads, 16 EOR, 16 CNT, 12 ADDP, 4 UADALP into 16-bit counters). Written here
           from a reading of that file, not copied from it; the instruction mix is what the model
           sees (the cores modelled are out of order).
  avx2     our AVX2 micro-kernel (kernels_avx2.cpp, micro_tile<7>), one carry-save step, and
  avx2pk   the AVX2 path's register-resident peak loop (KernelTable::peak_loop), both compiled with
           g++ and modelled on -mcpu=znver3; with --measure, next to what this machine runs
           (the peak loop via _core.popcount_peak, the conv as bench/bench_conv.py times it), so
           the model's error is known.
With --variants, also the NEON formulations tried and not shipped, written out here (variant_loops):
the previous kernel (one word x 4 pixels x 16 channels, the word broadcast by LD1R), the same with
LDR d + LD1 lane instead of LD1R, and a dot-product reduction of the pair form (UDOT against a
ones vector; ARMv8.2 dotprod).
Binary MACs per iteration: 128 per CNT of a q register (neon, lce, the variants); 2048 per AVX2
step (two reduction words x 16 channels x 64 bits: it holds 8 VPSHUFB); 8 x 256 per peak-loop
iteration.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "native" / "src"
# The core's own flags (native/CMakeLists.txt), so the loop analysed is the one that ships.
CORE_FLAGS = ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-math-errno", f"-I{SRC}"]
NEON_FLAGS = ["-DBNN_HAVE_X86=0", "-DBNN_HAVE_NEON=1"]
AVX2_FLAGS = ["-DBNN_HAVE_X86=1", "-DBNN_HAVE_NEON=0", "-mavx2", "-mpopcnt", "-mbmi2", "-mfma"]
# LLVM 19 has a Neoverse N1 pipeline model (N1 is the server core derived from Cortex-A76); for
# -mcpu=cortex-a76 it uses its Cortex-A57 model. N2 and V1 have models of their own.
ARM_CORES = ("neoverse-n1", "cortex-a76", "neoverse-n2", "neoverse-v1")
ITERATIONS = 1000


def lce_loop() -> list[str]:
    """One 64-bit depth step of a 4-pixel x 8-channel tile with LCE's structure and software
    pipelining: the step's 16 EORs first, then the next step's weight and activation loads spread
    among the CNTs (an activation register is refilled lane by lane once its EORs have read it),
    the ADDP tree, the UADALPs and the loop branch. Registers: weights v16-v19, activations
    v20-v23 (pixel p), products v0-v15 (v[4j + p] = pixel p x weight register j), counters v24-v27."""
    eor = [f"eor v{4 * j + p}.16b, v{20 + p}.16b, v{16 + j}.16b" for j in range(4) for p in range(4)]
    cnt = [f"cnt v{i}.16b, v{i}.16b" for i in range(16)]
    loads = ["ldr q16, [x0]", "ldr q17, [x0, #16]"] + [
        f"ld1 {{v{20 + p}.d}}[{lane}], [x{1 + p}]" + (", #8" if lane else "") for p in range(4) for lane in (0, 1)]
    spread = [insn for pair in zip(cnt, [*loads, *[""] * (len(cnt) - len(loads))]) for insn in pair if insn]
    addp = [f"addp v{p}.16b, v{p}.16b, v{4 + p}.16b" for p in range(4)]  # weight registers 0 + 1
    addp += [f"addp v{8 + p}.16b, v{8 + p}.16b, v{12 + p}.16b" for p in range(4)]  # 2 + 3
    addp += ["ldr q18, [x0, #32]", "ldr q19, [x0, #48]"]
    addp += [f"addp v{p}.16b, v{p}.16b, v{8 + p}.16b" for p in range(4)]  # 8 channels, 2 bytes each
    tail = ["add x0, x0, #64", *[f"uadalp v{24 + p}.8h, v{p}.16b" for p in range(4)], "subs w5, w5, #1", "b.gt .Lloop"]
    return [*eor, *spread, *addp, *tail]


def variant_loops() -> dict[str, list[str]]:
    """NEON formulations tried and not shipped, one iteration each (registers as a compiler would
    give them; x-registers hold the pixels' word addresses)."""

    def broadcast(lanes: bool) -> list[str]:
        # One word x 4 pixels x 16 channels; weights v1-v8 (channels 2j, 2j + 1 of the word).
        out = ["ldr x3, [x5], 8", *[f"ldp q{2 * j + 1}, q{2 * j + 2}, [x4, {32 * j}]" for j in range(4)],
               "add x4, x4, 128"]
        for p in range(4):
            out.append(f"add x{13 + p}, x7, x3, lsl 3" if p == 0 else f"add x{13 + p}, x{12 + p}, x8, lsl 3")
            out += ([f"ldr d17, [x{13 + p}]", f"ld1 {{v17.d}}[1], [x{13 + p}]"] if lanes else
                    [f"ld1r {{v17.2d}}, [x{13 + p}]"])
            t = [18 + j for j in range(8)]
            out += [f"eor v{t[j]}.16b, v17.16b, v{j + 1}.16b" for j in range(8)]
            out += [f"cnt v{t[j]}.16b, v{t[j]}.16b" for j in range(8)]
            out += [f"addp v{t[2 * j]}.16b, v{t[2 * j]}.16b, v{t[2 * j + 1]}.16b" for j in range(4)]
            out += [f"addp v{t[0]}.16b, v{t[0]}.16b, v{t[2]}.16b", f"addp v{t[4]}.16b, v{t[4]}.16b, v{t[6]}.16b",
                    f"uadalp v{9 + 2 * p}.8h, v{t[0]}.16b", f"uadalp v{10 + 2 * p}.8h, v{t[4]}.16b"]
        return [*out, "cmp x4, x6", "b.ne .Lloop"]

    def pair_udot() -> list[str]:
        # The pair form (LDR q), 2 pixels: 16 weight registers v0-v15, 4 u32 counters per pixel
        # (16 channels: 16 + 8 + a ones vector + the activation + 4 temporaries fill the 32), each
        # 4 channels folded by two ADDP levels to 4 bytes a channel, then UDOT with ones.
        out = ["ldr x9, [x5], 16", *[f"ldp q{2 * j}, q{2 * j + 1}, [x4, {32 * j}]" for j in range(8)],
               "add x4, x4, 256"]
        for p in range(2):
            out += [f"add x{20 + p}, x{11 + p}, x9, lsl 3", f"ldr q26, [x{20 + p}]"]
            for q in range(4):
                c = 4 * q
                out += [f"eor v27.16b, v26.16b, v{c}.16b", f"eor v28.16b, v26.16b, v{c + 1}.16b", "cnt v27.16b, v27.16b",
                        "cnt v28.16b, v28.16b", f"eor v29.16b, v26.16b, v{c + 2}.16b",
                        f"eor v30.16b, v26.16b, v{c + 3}.16b", "addp v27.16b, v27.16b, v28.16b",
                        "cnt v29.16b, v29.16b", "cnt v30.16b, v30.16b", "addp v29.16b, v29.16b, v30.16b",
                        "addp v27.16b, v27.16b, v29.16b", f"udot v{16 + 4 * p + q}.4s, v27.16b, v31.16b"]
        return [*out, "cmp x4, x6", "b.ne .Lloop"]

    return {"ld1r (previous)": broadcast(False), "ld1r -> ldr d + ld1 lane": broadcast(True),
            "pair form, udot": pair_udot()}


def find_tool(*names: str) -> str:
    for name in names:
        if shutil.which(name):
            return name
    sys.exit(f"none of {', '.join(names)} found (scripts/setup.sh installs them)")


def compile_to_asm(compiler: str, source: Path, flags: list[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.s"
        subprocess.run([compiler, *CORE_FLAGS, *flags, "-S", str(source), "-o", str(out)], check=True)
        return out.read_text()


def function_body(asm: str, symbol_prefix: str) -> list[str]:
    """The lines of the first function whose (mangled) name starts with symbol_prefix."""
    lines = asm.splitlines()
    for start, line in enumerate(lines):
        if line.startswith(symbol_prefix) and line.endswith(":"):
            end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(".size"))
            return lines[start + 1 : end]
    raise SystemExit(f"no function {symbol_prefix}* in the compiler's output")


def instructions(lines: list[str]) -> list[str]:
    """Instruction lines only: no labels, directives, comments or #APP markers."""
    out = []
    for line in lines:
        text = line.split("//")[0].split("#APP")[0].split("#NO_APP")[0].strip()
        if text.startswith("#") or not text or text.startswith(".") or text.endswith(":"):
            continue
        out.append(text)
    return out


BRANCH = re.compile(r"^\s*(b\.?\w*|j\w+|cbn?z\s+\w+,|tbn?z\s+\w+,\s*#?\d+,)\s+(\.L\w+)\s*$")
UNCONDITIONAL = ("b", "jmp")


def innermost_loop(body: list[str], marker: str, where: Callable[[list[str]], bool] = lambda loop: True) -> list[str]:
    """The smallest loop whose instructions include `marker` (and for which `where` holds): a label
    and a later branch back to it, or (GCC's rotated x86 loops) a label, then a jump forward/back to
    a short test block that branches back to that label."""
    labels = {line.strip().rstrip(":"): i for i, line in enumerate(body) if re.match(r"^\.L\w+:$", line.strip())}
    loops: list[list[str]] = []
    for i, line in enumerate(body):
        m = BRANCH.match(line)
        if not m or m.group(2) not in labels:
            continue
        target = labels[m.group(2)]
        if target < i:
            loops.append(instructions(body[target : i + 1]))
        if m.group(1).split()[0] in UNCONDITIONAL:
            # The target block tests and branches back above this jump: body + test block is the loop.
            test = instructions(body[target + 1 : target + 5])
            for j, insn in enumerate(test):
                back = BRANCH.match(insn)
                if back and back.group(2) in labels and labels[back.group(2)] < i and back.group(1) not in UNCONDITIONAL:
                    loops.append(instructions(body[labels[back.group(2)] : i]) + test[: j + 1])
                    break
    loops = [loop for loop in loops if any(marker in insn for insn in loop) and where(loop)]
    if not loops:
        raise SystemExit(f"no loop around {marker!r} found")
    return min(loops, key=len)


@dataclass
class Model:
    cycles_per_iter: float
    block_rthroughput: float
    ipc: float
    scheduling_model: str  # which of LLVM's pipeline models -mcpu picked (its units' name prefix)


def run_mca(tool: str, loop: list[str], triple: str, cpu: str) -> Model:
    result = subprocess.run([tool, f"-mtriple={triple}", f"-mcpu={cpu}", f"-iterations={ITERATIONS}"],
                            input="\n".join(loop) + "\n", capture_output=True, text=True, check=True)
    out = result.stdout

    def field(name: str) -> float:
        m = re.search(rf"^{name}:\s+([\d.]+)", out, re.MULTILINE)
        assert m, out[:2000]
        return float(m.group(1))

    unit = re.search(r"^\[[\d.]+\]\s+- (\w+?)(?:Unit|ALU|AGU|FP)", out, re.MULTILINE)
    return Model(field("Total Cycles") / field("Iterations"), field("Block RThroughput"), field("IPC"),
                 unit.group(1) if unit else "?")


def count(loop: list[str], mnemonic: str) -> int:
    return sum(1 for insn in loop if insn.split()[0] == mnemonic)


def measure_avx2() -> dict[str, float]:
    """This machine on the AVX2 path, one thread: the peak loop's and each 3x3 conv's binary MAC/s
    (bench/bench_conv.py's shapes and timing, NHWC output)."""
    import numpy as np
    import torch

    from bench.bench_conv import SHAPES_3X3, best_time
    from service import _core

    if "avx2" not in _core.available_isas():
        sys.exit("this CPU has no AVX2 path to measure")
    _core.set_isa("avx2")
    _core.set_num_threads(1)
    rates = {"peak": _core.popcount_peak(300000, 30)}
    for name, N, C, H, W, O, k, s, p in SHAPES_3X3:
        x = torch.randn(N, H, W, C).numpy()
        w = _core.PackedWeights.from_float(np.ascontiguousarray(torch.randn(O, C, k, k).numpy()))
        packed = _core.pack_activations(x, True, (p, p))
        t = best_time(lambda packed=packed, w=w, s=s: _core.conv2d_packed(packed, w, (s, s), (1, 1), 0,
                                                                           channels_last_out=True), 20, 0.5)
        OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        rates[name] = N * O * OH * OW * C * k * k / t
    return rates


def cpu_mhz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1])
    except OSError:
        pass
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-measure", action="store_true", help="model only: do not time the AVX2 path here")
    ap.add_argument("--show-asm", action="store_true", help="print each loop as given to llvm-mca")
    ap.add_argument("--variants", action="store_true", help="also model the NEON formulations tried and not shipped")
    args = ap.parse_args()

    mca = find_tool("llvm-mca-19", "llvm-mca")
    cross = find_tool("aarch64-linux-gnu-g++")
    native = find_tool("g++")
    version = re.search(r"LLVM version [\d.]+", subprocess.run([mca, "--version"], capture_output=True, text=True).stdout)
    print(f"llvm-mca: {mca} ({version.group(0) if version else 'unknown version'}); -iterations={ITERATIONS}")

    neon_tile = function_body(compile_to_asm(cross, SRC / "kernels_neon.cpp", NEON_FLAGS),
                              "_ZN3bnn9neon_impl10micro_tileILi4E")
    neon = innermost_loop(neon_tile, "cnt", lambda loop: not any(insn.startswith("ld1 ") for insn in loop))
    neon_lanes = innermost_loop(neon_tile, "cnt", lambda loop: any(insn.startswith("ld1 ") for insn in loop))
    lce = lce_loop()
    avx2_asm = compile_to_asm(native, SRC / "kernels_avx2.cpp", AVX2_FLAGS)
    avx2 = innermost_loop(function_body(avx2_asm, "_ZN3bnn9avx2_impl10micro_tileILi7E"), "vpshufb")
    avx2pk = innermost_loop(function_body(avx2_asm, "_ZN3bnn9avx2_impl9peak_loop"), "vpshufb")
    variants = variant_loops() if args.variants else {}
    loops = {"neon": neon, "neon_lanes": neon_lanes, "lce": lce, **variants, "avx2": avx2, "avx2pk": avx2pk}
    macs = {name: 128 * count(loop, "cnt") for name, loop in loops.items()}
    macs |= {"avx2": 2048 * count(avx2, "vpshufb") // 8, "avx2pk": 256 * count(avx2pk, "vpshufb") // 2}
    if args.show_asm:
        for name, loop in loops.items():
            print(f"\n# {name}: {len(loop)} instructions, {macs[name]} binary MACs\n" + "\n".join(loop))

    print("\n| loop | core (-mcpu) | LLVM model | instructions | binary MACs / iter | cycles / iter | block rthroughput | IPC "
          "| binary MACs / cycle |\n|---|---|---|---|---|---|---|---|---|")
    per_cycle: dict[tuple[str, str], float] = {}
    for name in loops:
        triple, cpus = ("x86_64", ("znver3",)) if name.startswith("avx2") else ("aarch64", ARM_CORES)
        for cpu in cpus:
            m = run_mca(mca, loops[name], triple, cpu)
            per_cycle[name, cpu] = macs[name] / m.cycles_per_iter
            print(f"| {name} | {cpu} | {m.scheduling_model} | {len(loops[name])} | {macs[name]} | {m.cycles_per_iter:.3f} | "
                  f"{m.block_rthroughput:.2f} | {m.ipc:.2f} | {per_cycle[name, cpu]:.1f} |")
    print("\n| ours / lce | " + " | ".join(ARM_CORES) + " |\n|---|" + "---|" * len(ARM_CORES))
    for name in ("neon", "neon_lanes", *variants):
        print(f"| {name} | " + " | ".join(f"{per_cycle[name, cpu] / per_cycle['lce', cpu]:.3f}x" for cpu in ARM_CORES) + " |")

    if args.no_measure:
        return
    mhz = cpu_mhz()
    rates = measure_avx2()
    print(f"\nmeasured here: {platform.processor() or platform.machine()}, /proc/cpuinfo {mhz} MHz, avx2, 1 thread")
    print("| what | measured G binary MAC/s | measured MACs / cycle at that clock | modelled MACs / cycle (znver3) "
          "| measured / modelled |\n|---|---|---|---|---|")
    for name, rate in rates.items():
        model = per_cycle["avx2pk" if name == "peak" else "avx2", "znver3"]
        at_clock = rate / (mhz * 1e6) if mhz else float("nan")
        print(f"| {name} | {rate / 1e9:.0f} | {at_clock:.1f} | {model:.1f} | {at_clock / model:.2f} |")


if __name__ == "__main__":
    main()
