"""Hardware decoding: machine-check registers, text and binary record forms, topology.

``mca`` decodes one bank record the way illumos gcpu names it, ``mca_amd`` refines
AMD records, ``mcelog`` reads the mcelog and kernel text forms, ``telemetry`` turns
raw records into ereports against the platform, and ``topo`` knows the machine's
hc tree and FRU labels.
"""
