"""What a profile's device resolves to on this machine, for reports (`rlx compile`,
`rlx bench`, `rlx list presets`, `rlx segment`).

The device is a name (`cpu`, an ISA level); what it means here -- the LLVM CPU,
the vector width the generated code uses -- is decided by the llvm backend's
target (`rlx.backends.llvm.target`). Showing it is how a user sees which code
ran: the same profile runs 512-bit code on an AVX-512 CPU and 256-bit on AVX2.
"""

from __future__ import annotations


def device_info(profile) -> dict:
    """{device, cpu, vector_bits, matrix_units, precision} of `profile` on this host."""
    from rlx.backends.llvm.target import matrix_units, profile_target

    target = profile_target(profile)
    return {"device": profile.device, "cpu": target.cpu, "vector_bits": target.vector_bits,
            "matrix_units": list(matrix_units(profile.device)),
            "precision": profile.precision}


def device_summary(profile) -> str:
    """One line, e.g. ``cpu (znver3, 256-bit vectors, no bf16 units), precision f32``."""
    info = device_info(profile)
    units = "+".join(info["matrix_units"]) or "no bf16 units"
    return (f"{info['device']} ({info['cpu']}, {info['vector_bits']}-bit vectors, {units}), "
            f"precision {info['precision']}")


def check_device(profile) -> None:
    """A ProfileError when a compiled backend is asked for a precision the profile's device
    lacks the matrix units for (the reference interpreter emulates bf16 anywhere: it is
    the ground truth)."""
    if profile.backend == "reference" or profile.precision == "f32":
        return
    from rlx.backends.llvm.target import check_precision

    check_precision(profile.device, profile.precision, profile.name)
