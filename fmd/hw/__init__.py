"""Hardware decoding: what the host's error reports mean, independent of how they arrive.

Machine checks: ``mca`` decodes one bank record the way illumos gcpu names it
(severity, class, usable address), ``mca_amd`` refines AMD families 0Fh/10h,
``smca`` identifies AMD Scalable MCA banks from IPID, ``telemetry`` turns raw
records into ereports against the platform, ``dedup`` recognises copies of one
kernel-logged record.

Record forms: ``mcelog`` (mcelog and kernel text, the mce-inject language),
``mce_struct`` (Linux's binary ``struct mce``), ``kmsg`` with ``kmsg_text`` and
``kmsg_cper`` (the kernel log: machine-check blocks, the AMD decoder, EDAC,
GHES/CPER, thermal), ``tracefs`` (trace lines of the RAS tracepoints),
``rasdaemon`` (a rasdaemon database); ``events`` builds the ereports of reports
the kernel has already digested (EDAC, memory failure, AER, thermal, firmware).

The machine: ``topo`` (the hc tree, FRU labels, address decode) and ``cec``
(whether the kernel's correctable-errors collector runs).
"""
