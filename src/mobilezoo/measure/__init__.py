"""Measurement primitives below both the runtime and the benchmarks: the numerical gate (:mod:`.gate`), the timing
harness (:mod:`.harness`, :mod:`.stats`) and the machine record (:mod:`.machine`: CPU, ISA features, versions,
measured roofline). Nothing here imports another mobilezoo package."""
