"""Regenerate the Python stubs of the kubelet PodResources v1 API from its proto.

Usage: ``python tools/gen_podresources.py`` (or ``make proto``) writes
``operator/jouleledger/kube/_podresources/podresources_v1_pb2{.py,.pyi,_grpc.py}`` with grpcio-tools;
``--check`` regenerates into a temporary folder and exits 1 when the committed stubs differ.

protoc writes ``import podresources_v1_pb2`` in the gRPC module, which only works with the output folder on
``sys.path``; the import is rewritten to a relative one so the stubs import as a package.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "operator" / "jouleledger" / "kube" / "protos"
PROTO_NAME = "podresources_v1.proto"
OUT_DIR = REPO_ROOT / "operator" / "jouleledger" / "kube" / "_podresources"
MODULE = "podresources_v1_pb2"
GENERATED = (f"{MODULE}.py", f"{MODULE}.pyi", f"{MODULE}_grpc.py")
INIT_TEXT = (
    '"""Generated stubs of the kubelet PodResources v1 API (``tools/gen_podresources.py``; do not edit)."""\n'
)


def _fix_imports(text: str) -> str:
    absolute = f"import {MODULE} as "
    if absolute not in text:
        raise SystemExit(f"expected {absolute!r} in the generated gRPC module; has grpcio-tools changed?")
    return text.replace(absolute, f"from . import {MODULE} as ")


def generate(out_dir: Path) -> None:
    """Run protoc (grpcio-tools) into ``out_dir`` and make the result an importable package."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO_NAME,
    ]
    status = protoc.main(args)
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")
    grpc_module = out_dir / f"{MODULE}_grpc.py"
    grpc_module.write_text(_fix_imports(grpc_module.read_text()))
    (out_dir / "__init__.py").write_text(INIT_TEXT)


def check() -> int:
    """Return 0 when the committed stubs are what the proto and the installed grpcio-tools generate."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        stale = [
            name
            for name in (*GENERATED, "__init__.py")
            if not (OUT_DIR / name).is_file() or (OUT_DIR / name).read_text() != (fresh / name).read_text()
        ]
    if stale:
        print(f"stale PodResources stubs: {', '.join(stale)}; run: python tools/gen_podresources.py")
        return 1
    print("PodResources stubs are up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail when the committed stubs are out of date")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    generate(OUT_DIR)
    print(f"wrote {', '.join(GENERATED)} to {OUT_DIR.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
