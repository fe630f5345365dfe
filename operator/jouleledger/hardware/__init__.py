"""GPU backends behind one small interface: ``nvml`` (real), ``replay`` (JSONL traces), ``simulated`` (demo)."""
