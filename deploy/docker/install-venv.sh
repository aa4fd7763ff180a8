#!/bin/sh
# Build the server's virtual environment: the steps both images' builder stages run (Dockerfile),
# kept in one script so that a test can run exactly them outside a container
# (tests/containers/test_cuda_install.py installs the GPU variant on a machine without a GPU).
#
#   install-venv.sh deps VENV EXTRAS [gpu]   dependencies only, from ./pyproject.toml
#   install-venv.sh project VENV             the package from ./service, ./export and ./client
#                                            (the client, rnnserve.client), checked
#                                            from outside the source tree, then trimmed
#
# Run it in a folder holding pyproject.toml (and, for `project`, service/, export/ and client/).
# `deps` first, in a layer of its own, so that editing the code does not reinstall them.
set -eu

step="$1"
venv="$2"
pip="$venv/bin/python -m pip"

case "$step" in
deps)
    extras="$3"
    variant="${4:-cpu}"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    # pip needs the package to resolve its dependencies: an empty stand-in of it, removed again
    # with setuptools' build/ copy (left behind, that copy is newer than the real files and the
    # next install would pack it instead of them).
    for p in "" /console /engine /grpc /grpc/generated /http /state; do
        mkdir -p "service/rnnserve$p" && touch "service/rnnserve$p/__init__.py"
    done
    mkdir -p export client/rnnserve_client
    touch export/__init__.py client/rnnserve_client/__init__.py README.md
    $pip install ".[$extras]"
    if [ "$variant" = gpu ]; then
        # onnxruntime-gpu *instead of* the CPU wheel: both install the `onnxruntime` module,
        # and only one may be present.
        ort_gpu="$($pip show onnxruntime-gpu | sed -n 's/^Version: //p')"
        [ -n "$ort_gpu" ] || { echo "install-venv: extras '$extras' bring no onnxruntime-gpu" >&2; exit 1; }
        $pip uninstall -y onnxruntime onnxruntime-gpu
        $pip install --no-deps "onnxruntime-gpu==$ort_gpu"
    fi
    $pip uninstall -y rnnserve
    rm -rf build service export client ./*.egg-info README.md
    ;;
project)
    $pip install --no-deps .
    rm -rf build ./*.egg-info
    # What a server never runs: the installers themselves, test suites and their data.
    $pip uninstall -y pip setuptools wheel >/dev/null 2>&1 || true
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    rm -rf "$site/onnx/backend/test/data" "$site/onnxruntime/transformers" \
        "$site/onnxruntime/quantization" "$site/onnxruntime/tools" \
        "$site/numpy/f2py" "$site/numpy/distutils"
    find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
    rm -f "$venv/bin/pip" "$venv/bin/pip3" "$venv/bin/pip3."*
    # Symbol tables of compiled extensions, where `strip` is installed (the builder stages).
    # Only files without an RPATH/RUNPATH: those carry auditwheel's patchelf edits, which
    # `strip` corrupts ("ELF load command address/offset not page-aligned"); the check below
    # imports them all.
    if command -v strip >/dev/null && command -v readelf >/dev/null; then
        find "$site" -type f -name '*.so' ! -path '*.libs/*' | while read -r lib; do
            readelf -d "$lib" 2>/dev/null | grep -q 'RPATH\|RUNPATH' || strip --strip-unneeded "$lib"
        done
    fi
    # The check imports the *installed* package from outside the source tree: run from here,
    # Python would find ./service and ./export first and pass whatever was installed.
    (cd / && "$venv/bin/python" -c "
import numpy, onnx, onnxruntime, uvloop, httptools, yaml, grpc, rnnserve, rnnserve.cli, rnnserve.serve
import rnnserve.client
assert rnnserve.__file__.startswith('$venv/'), rnnserve.__file__
assert rnnserve.__version__, 'rnnserve.__version__ is empty'
print('installed rnnserve', rnnserve.__version__, 'with onnxruntime', onnxruntime.__version__,
      onnxruntime.get_available_providers())")
    ;;
*)
    echo "usage: install-venv.sh deps VENV EXTRAS [gpu] | project VENV" >&2
    exit 2
    ;;
esac
