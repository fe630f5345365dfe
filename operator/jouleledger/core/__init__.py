"""The pure core: units, integration, attribution, ledger and carbon. Standard library only; no I/O, no clocks."""
