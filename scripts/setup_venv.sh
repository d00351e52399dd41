# Sourced by demo.sh and test.sh: create/activate .venv and install the package with the
# extras given in $1. torch goes in first, from the CPU wheel, so nothing pulls a CUDA build.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[$1]"
# pytorchcv builds the ImageNet networks of the four-device fit (tests, benchmarks); --no-deps:
# its metadata pulls torchvision, which would not import beside this torch.
case ",$1," in *,test,*) python -m pip install -q --no-deps "pytorchcv>=0.0.74" ;; esac
export MPLBACKEND=Agg
