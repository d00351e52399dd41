"""Write tests/data/frontend_sweep_reference.json.gz: the ONNX export path's graph and kernel
list for every candidate of the torch front end's equivalence sweeps (200 SPOS at 32x32, the
same 200 at 224x224, 200 NAS-Bench-201 cells; tests/test_torch_frontend.py compares the torch
front end with it). Rerun it when the ONNX export path, the ONNX reader, the kernel detection,
the features or the samplers change on purpose (about 15 CPU minutes on one core):

    PYTHONPATH=$PWD python scripts/frontend_sweep_reference.py

See tests/frontend_reference.py for what each record holds.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import frontend_reference as ref

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ref.REFERENCE,
                    help=f"where to write (default {ref.REFERENCE.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # the exporter's warnings, once per candidate
    out = ref.write_reference(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB; torch {out['torch']}, "
          f"onnx {out['onnx']})")


if __name__ == "__main__":
    main()
