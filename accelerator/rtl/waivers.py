"""Targeted Verilator lint waivers for the converted Verilog: one entry per known, harmless warning.

``verilator --lint-only -Wall`` runs with no blanket ``-Wno-...``; what MyHDL's code generation leaves
behind is waived one message at a time in a Verilator configuration file (``.vlt``) written next to the
file being linted::

    `verilator_config
    // <reason>
    lint_off -rule WIDTH -file "*gemv_tile.v" -match "Operator ADD expects 40 bits on the RHS, but RHS's VARREF '*pe_lane*' generates 24 bits."

Every waiver is generated from the module's parameters with the exact widths it expects, so the same
message at another width (a real truncation, a product that no longer fits its accumulator) or any
other warning fails the lint. The only wildcard in a message stands for MyHDL's instance-name prefixes
(``pe_lane17_...``). ``DECLFILENAME`` needs no waiver: MyHDL names each file after its module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accelerator.rtl.common import bits_for


@dataclass(frozen=True)
class Waiver:
    rule: str  #: Verilator warning code, e.g. WIDTH
    match: str  #: the warning's message text (Verilator wildcards ``*`` and ``?``)
    reason: str  #: one line: why the warning is harmless
    file: str = "*"  #: the linted file (wildcards allowed)

    def vlt(self) -> str:
        for text in (self.match, self.file):
            if '"' in text or "\n" in text:
                raise ValueError(f"waiver text cannot hold quotes or newlines: {text!r}")
        return f'// {self.reason}\nlint_off -rule {self.rule} -file "{self.file}" -match "{self.match}"\n'


def render_vlt(waivers: list[Waiver]) -> str:
    """The Verilator configuration file holding ``waivers``."""
    return "`verilator_config\n" + "".join(w.vlt() for w in waivers)


def write_vlt(waivers: list[Waiver], path: Path) -> Path:
    path.write_text(render_vlt(waivers))
    return path


def _extend(op: str, side: str, expects: int | str, what: str, generates: int) -> str:
    """Verilator's text for an operand ``what`` of ``generates`` bits used at ``expects`` bits."""
    if op == "ASSIGNDLY":
        return f"Operator ASSIGNDLY expects {expects} bits on the Assign RHS, but Assign RHS's {what} generates {generates} bits."
    return (
        f"Operator {op} expects {expects} bits on the {side}, but {side}'s {what} generates {generates} bits."
    )


def gemv_waivers(p, file: str = "*gemv_tile.v") -> list[Waiver]:
    """``p``: :class:`accelerator.rtl.pe_lane.GemvParams`."""
    pw, acc = p.w_bits + p.x_bits, p.acc_bits
    why = (
        f"a lane's signed {pw}-bit product sign-extends into its signed {acc}-bit accumulator "
        "(MyHDL writes the extension implicitly)"
    )
    lane = "VARREF '*pe_lane*'"
    return [
        Waiver("WIDTH", _extend("ASSIGNDLY", "", acc, lane, pw), why, file),
        Waiver("WIDTH", _extend("ADD", "RHS", acc, lane, pw), why, file),
    ]


def tas_waivers(p, file: str = "*tas_unit.v") -> list[Waiver]:
    """``p``: :class:`accelerator.rtl.tas_unit.TasParams`."""
    from accelerator.rtl.tas_unit import RECIP_BITS

    pw = 2 * p.width
    accw = 2 * p.width + bits_for(p.heads * p.head_dim) + 1
    out: list[Waiver] = []
    n, w = p.lanes, pw
    while n > 1:  # the adder tree of common.adder_tree: an odd node is passed on one bit wider
        if n % 2:
            out.append(
                Waiver(
                    "WIDTH",
                    _extend("ASSIGNDLY", "", w + 1, "SIGNED", w),
                    f"the odd node of an adder-tree level sign-extends its {w}-bit operand to the level's {w + 1} bits",
                    file,
                )
            )
        n, w = (n + 1) // 2, w + 1
    if w != accw:
        why = f"the {w}-bit adder-tree sum sign-extends into the signed {accw}-bit head accumulator"
        out += [
            Waiver("WIDTH", _extend("ASSIGNDLY", "", accw, "SIGNED", w), why, file),
            Waiver("WIDTH", _extend("ADD", "RHS", accw, "SIGNED", w), why, file),
        ]
    if p.heads & (p.heads - 1):
        top = accw + RECIP_BITS + 2 - 1
        out.append(
            Waiver(
                "UNUSEDSIGNAL",
                f"Bits of signal are not used: 'scaled'[{top}:{accw + RECIP_BITS},{RECIP_BITS - 1}:0]",
                f"the mean keeps bits {accw + RECIP_BITS - 1}:{RECIP_BITS} of acc x reciprocal: the low "
                f"{RECIP_BITS} are the dropped fraction, the top two copies of the sign (|mean| < |acc|)",
                file,
            )
        )
    return out


def drs_waivers(p, file: str = "*drs_scheduler.v") -> list[Waiver]:
    """``p``: :class:`accelerator.rtl.drs.DrsParams`."""
    from accelerator.rtl.drs import ENTRIES, core_bits

    cw = core_bits(p.cores)
    return [
        Waiver(
            "WIDTH",
            _extend("EQ", "LHS", 32, "SIGNED", cw + 1),
            "the one-hot dispatch strobe compares the zero-extended core number with the 32-bit loop index",
            file,
        ),
        Waiver(
            "UNUSEDSIGNAL",
            f"Bits of signal are not used: 'shifted'[{ENTRIES * cw - 1}:{cw}]",
            "the entry's core is selected by a shift into a full-width signal (legal VHDL too); its low bits are the core",
            file,
        ),
    ]


def replay_waivers(p, file: str = "*replay_cache_ctrl.v") -> list[Waiver]:
    """``p``: :class:`accelerator.rtl.replay_cache.ReplayParams`."""
    pb = bits_for(p.tokens_per_frame - 1)
    a = p.addr_bits
    expects: int | str = 32 if a == 32 else (f"32 or {a}" if a < 32 else a)
    return [
        Waiver(
            "WIDTH",
            _extend("ADD", "RHS", expects, "VARREF 'position'", pb),
            f"the {pb}-bit position zero-extends into the address sum (layer x TPF is a 32-bit integer "
            "product in Verilog); the last address fits ADDR_BITS, checked at elaboration",
            file,
        )
    ]


WAIVERS = {
    "gemv_tile": gemv_waivers,
    "tas_unit": tas_waivers,
    "drs_scheduler": drs_waivers,
    "replay_cache_ctrl": replay_waivers,
}


def waivers_for(bench) -> list[Waiver]:
    """The waivers of ``bench``'s module at its parameters (none for a module not listed)."""
    make = WAIVERS.get(bench.name)
    return make(bench.params) if make else []
