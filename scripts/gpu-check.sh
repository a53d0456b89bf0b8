#!/usr/bin/env bash
# The prepared GPU check: run on a GPU machine from the repository root, with the
# gpu-bundle/ that scripts/gpu-bundle.sh made on the build machine beside it. It
# uses that machine's own CUDA PyTorch (its C++ libraries; the bundle was built
# against the same 2.11.0) and writes, within about 5 minutes:
#
#   $OUT/gpu-report.md     what ran and what it measured
#   $OUT/gpu-logs.txt      every command's output
#   $OUT/gpu-results.json  every JSON result (bench ddp, the PyTorch DDP reference,
#                          bench serve, hpcml info), by file name
# (three files: a GPU run brings back at most eight)
#
# Steps: hpcml info; the device-free unit tests and the gpu tests; hpcml train on the
# device (fp32, bf16, fp16, a resume from a checkpoint) against the CPU, eval of its
# checkpoint on the device and on the CPU; ParticleNet-Lite (dropout) trained on the
# device and resumed there, and an infer campaign of it on the device against the CPU;
# bench ddp on the
# device (MLP, fp32 and bf16, 3 alternating runs each) against
# ../shared/anchors/ddp_reference.py --device cuda on the same GPU; bench serve with
# a GPU server rank and a CPU client rank (FACILE, DeepCalo, ParticleNet-Lite), and
# the same with a CPU server, in the same run. Without a device it runs what it can
# and ends with one line saying the device is missing (exit 3).
#
# HPCML_TORCH_DIR=<.../torch> overrides the torch found through python3 (on the
# build machine: ~/.cache/hpcml/libtorch-2.11.0/torch).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
final=${OUT:-/tmp/hpcml-gpu-check}
mkdir -p "$final"
out=$(mktemp -d)  # the JSON results, gathered into one file at the end
report=$final/gpu-report.md
logs=$final/gpu-logs.txt
gather() {  # every JSON of $out into $final/gpu-results.json
  env -u LD_LIBRARY_PATH python3 - "$out" "$final/gpu-results.json" <<'PY' || true
import glob, json, os, sys
results = {}
for p in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    try:
        results[os.path.basename(p)] = json.load(open(p))
    except Exception as e:
        results[os.path.basename(p)] = {"unreadable": str(e)}
json.dump(results, open(sys.argv[2], "w"), indent=1)
PY
}
trap gather EXIT
: >"$report"
: >"$logs"
B=$PWD/gpu-bundle
say() { echo "$*" | tee -a "$report"; }
# Python with the machine's own libraries, not the bundle's (its libssl, libz, ...).
py() { env -u LD_LIBRARY_PATH python3 "$@"; }
# step NAME TIMEOUT CMD...: runs CMD, its output to the log, one result line to the report.
step() {
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $*" >>"$logs"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >>"$logs" 2>&1
  local rc=$?
  say "- $name: exit $rc in $((SECONDS - t0)) s"
  return $rc
}

if [[ ! -x $B/bin/hpcml ]]; then
  echo "gpu-check: no gpu-bundle/ here: run scripts/gpu-bundle.sh on the build machine and carry gpu-bundle" >&2
  exit 2
fi
torch_dir=${HPCML_TORCH_DIR:-$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null)}
if [[ -z "$torch_dir" || ! -d "$torch_dir/lib" ]]; then
  echo "gpu-check: no PyTorch found (python3 -c 'import torch' failed; set HPCML_TORCH_DIR)" >&2
  exit 2
fi
site=$(dirname "$torch_dir")
nvidia_libs=$(ls -d "$site"/nvidia/*/lib "$site"/nvidia/*/lib64 2>/dev/null | paste -sd: -)
export LD_LIBRARY_PATH=$B/lib:$torch_dir/lib${nvidia_libs:+:$nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export OPAL_PREFIX=$B/ompi
export PATH=$B/ompi/bin:$B/bin:$PATH
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_mca_base_component_show_load_errors=0
export OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl=self,vader,tcp
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none)

say "# hpcml GPU check"
say ""
say "- bundle: revision $(cat "$B/REVISION" 2>/dev/null), built against LibTorch 2.11.0+cu130"
say "- host: $(hostname), $(nproc) cores, $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}")"
say "- torch here: $torch_dir ($(py -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '?'))"
say "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo none)"
missing=$(ldd "$B/bin/hpcml" | grep "not found" | awk '{print $1}' | paste -sd' ' -)
say "- libraries hpcml cannot find: ${missing:-none}"
say ""
say "## Steps"
# One-rank steps go through mpirun when the relocated Open MPI works there, else
# run as MPI singletons.
one=("${mpirun[@]}" -n 1)
if ! step "mpirun probe (Open MPI from the bundle, OPAL_PREFIX)" 30 "${mpirun[@]}" -n 2 hpcml --version; then
  one=()
  say "  (mpirun failed: one-rank steps run as singletons, and bench serve cannot run; see gpu-logs.txt)"
fi
step "hpcml info (1 rank, runtime.device auto)" 60 \
  "${one[@]}" hpcml info --set runtime.device=auto --json "$out/info.json"
step "device_test (unit, no device needed)" 60 device_test
step "gpu_test (the gpu tier)" 120 gpu_test
gpu_rc=$?
devices=$(py -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [[ "${devices:-0}" == 0 ]]; then
  say ""
  say "gpu-check: no CUDA device visible (torch.cuda.device_count() = 0): hpcml train, eval and infer on cuda, bench ddp on cuda and bench serve with a GPU server did not run"
  exit 3
fi

say ""
say "## hpcml train and eval on the GPU (1 rank, MLP on synthetic data, 200 steps)"
tr=$out/train
common=(--set data.features=64 --set model.hidden=[256,256] --set train.batch_size=256 --set data.samples=16384
        --set train.max_steps=200 --set checkpoint.every_steps=100 --set checkpoint.keep=3 --set train.log_every=50)
step "train on cpu, fp32" 120 "${one[@]}" hpcml train "${common[@]}" --set run.dir="$tr/cpu-fp32"
for prec in fp32 bf16 fp16; do
  step "train on cuda, $prec" 120 "${one[@]}" hpcml train "${common[@]}" --set runtime.device=cuda \
    --set train.precision=$prec --set run.dir="$tr/cuda-$prec"
done
# Resume on the device from step 100: the same parameters (and loss scale) as the whole run.
cp -r "$tr/cuda-fp16" "$tr/cuda-fp16-resumed" && rm -f "$tr/cuda-fp16-resumed/summary.json" \
  "$tr/cuda-fp16-resumed/checkpoints/step-200.pt"
step "train on cuda, fp16, resumed from step 100" 120 "${one[@]}" hpcml train "${common[@]}" --resume \
  --set runtime.device=cuda --set train.precision=fp16 --set run.dir="$tr/cuda-fp16-resumed"
# The checkpoint written on the GPU, evaluated on the GPU and on the CPU.
for dev in cuda cpu; do
  step "eval of the cuda fp32 checkpoint on $dev" 60 "${one[@]}" hpcml eval "${common[@]}" \
    --set runtime.device=$dev --set run.dir="$tr/cuda-fp32"
  cp "$tr/cuda-fp32/summary.json" "$out/eval-$dev.json" 2>/dev/null || true
done
py - "$tr" "$out" >>"$report" 2>>"$logs" <<'PY'
import json, os, sys
tr, out = sys.argv[1], sys.argv[2]
def rows(name):
    try:
        return [json.loads(l) for l in open(os.path.join(tr, name, "metrics.jsonl")) if l.strip()]
    except OSError:
        return []
def digest(name):
    try:
        return json.load(open(os.path.join(tr, name, "summary.json")))["parameters_sha256"]
    except (OSError, KeyError, ValueError):
        return None
print("\n| run | first loss | last loss | samples/s (last interval) | loss scale, skipped |")
print("|---|---|---|---|---|")
for name in ("cpu-fp32", "cuda-fp32", "cuda-bf16", "cuda-fp16", "cuda-fp16-resumed"):
    r = [x for x in rows(name) if "loss" in x]
    if not r:
        print(f"| {name} | failed | | | |")
        continue
    scale = f"{r[-1].get('loss_scale', '-')}, {r[-1].get('skipped_steps', '-')}"
    print(f"| {name} | {r[0]['loss']:.5f} | {r[-1]['loss']:.5f} | {r[-1]['samples_per_s']:,.0f} | {scale} |")
a, b = digest("cuda-fp16"), digest("cuda-fp16-resumed")
print(f"\nfp16 resume on the device: {'bit-identical' if a and a == b else 'DIFFERENT'} ({a} / {b})")
try:
    e = {d: json.load(open(os.path.join(out, f"eval-{d}.json")))["eval"]["loss"] for d in ("cuda", "cpu")}
    print(f"eval of the GPU checkpoint: loss {e['cuda']:.6f} on cuda, {e['cpu']:.6f} on cpu")
except (OSError, KeyError, ValueError):
    print("eval of the GPU checkpoint: failed")
PY

say ""
say "## ParticleNet-Lite on the GPU: a dropout model's resume, and an infer campaign against the CPU"
jets=$tr/jets
pn=(-c configs/particlenet-lite.yaml --set "data.files=[$jets/jets-00000.h5]"
    --set "data.validation_files=[$jets/jets-00001.h5]" --set train.epochs=10 --set train.max_steps=40
    --set checkpoint.every_steps=20 --set checkpoint.keep=3 --set train.log_every=20)
step "datagen jets (2 files of 2,000 events)" 60 "${one[@]}" hpcml datagen jets -o "$jets" --files 2 \
  --events-per-file 2000
step "train particlenet-lite on cuda (dropout 0.1), 40 steps" 120 "${one[@]}" hpcml train "${pn[@]}" \
  --set runtime.device=cuda --set run.dir="$tr/pn"
# Resumed from step 20: the same parameters only if the CUDA generator (dropout) was restored.
cp -r "$tr/pn" "$tr/pn-resumed" && rm -f "$tr/pn-resumed/summary.json" "$tr/pn-resumed/checkpoints/step-40.pt"
step "train particlenet-lite on cuda, resumed from step 20" 120 "${one[@]}" hpcml train "${pn[@]}" --resume \
  --set runtime.device=cuda --set run.dir="$tr/pn-resumed"
for dev in cuda cpu; do
  step "infer campaign (the step-40 checkpoint) on $dev" 60 "${one[@]}" hpcml infer "${pn[@]}" \
    --set runtime.device=$dev --set run.dir="$tr/pn" --set "infer.inputs=[$jets/jets-00001.h5]" \
    --set infer.output_dir="$tr/infer-$dev"
done
py - "$tr" >>"$report" 2>>"$logs" <<'PY'
import json, os, sys
tr = sys.argv[1]
def digest(name):
    try:
        return json.load(open(os.path.join(tr, name, "summary.json")))["parameters_sha256"]
    except (OSError, KeyError, ValueError):
        return None
a, b = digest("pn"), digest("pn-resumed")
print(f"\ndropout model resumed on the device: {'bit-identical' if a and a == b else 'DIFFERENT'} ({a} / {b})")
try:
    import h5py, numpy as np
    s = {d: h5py.File(os.path.join(tr, f"infer-{d}", "jets-00001.predictions.h5"), "r")["scores"][...]
         for d in ("cuda", "cpu")}
    print(f"infer campaign scores, cuda against cpu: {len(s['cpu'])} rows, max |diff| "
          f"{np.abs(s['cuda'] - s['cpu']).max():.2e}")
except Exception as e:
    print(f"infer campaign scores: not compared ({e})")
PY

say ""
say "## bench ddp on the GPU against PyTorch DDP (nccl), 1 rank, MLP, batch 128 and 4096"
for prec in fp32 bf16; do
  for batch in 128 4096; do
    for rep in 1 2 3; do
      step "hpcml bench ddp $prec batch $batch #$rep" 60 "${one[@]}" hpcml bench ddp --device cuda \
        --precision "$prec" --batch "$batch" --steps 300 --warmup 30 --json "$out/ddp-hpcml-$prec-$batch-$rep.json"
      step "ddp_reference.py $prec batch $batch #$rep" 90 env -u LD_LIBRARY_PATH RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 \
        MASTER_ADDR=127.0.0.1 MASTER_PORT=$((29500 + rep)) python3 "$B/anchors/ddp_reference.py" --device cuda \
        --precision "$prec" --batch "$batch" --steps 300 --warmup 30
      tail -n 1 "$logs" | grep '^{' >"$out/ddp-ref-$prec-$batch-$rep.json" || true
    done
  done
done

say ""
say "## bench serve: 1 CPU client rank, 1 server rank on the GPU, then on the CPU"
for dev in cuda cpu; do
  step "bench serve, server on $dev" 150 "${mpirun[@]}" -n 2 hpcml bench serve --server-device "$dev" \
    --cases facile,deepcalo,particlenet-lite --streams 1,4,16,64 --seconds 1 --warmup-s 0.2 \
    --json "$out/serve-$dev.json"
done

# The figures, from the JSON files.
py - "$out" >>"$report" 2>>"$logs" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None
print("\n## Figures (medians of 3 alternating runs)\n")
print("| precision | batch | hpcml samples/s | PyTorch DDP samples/s | ratio |")
print("|---|---|---|---|---|")
for prec in ("fp32", "bf16"):
    for batch in (128, 4096):
        h = [load(p) for p in sorted(glob.glob(f"{out}/ddp-hpcml-{prec}-{batch}-*.json"))]
        r = [load(p) for p in sorted(glob.glob(f"{out}/ddp-ref-{prec}-{batch}-*.json"))]
        h = [x["samples_per_s"] for x in h if x]
        r = [x["samples_per_s"] for x in r if x]
        if h and r:
            mh, mr = statistics.median(h), statistics.median(r)
            print(f"| {prec} | {batch} | {mh:,.0f} | {mr:,.0f} | {mh / mr:.2f} |")
        else:
            print(f"| {prec} | {batch} | {h or 'failed'} | {r or 'failed'} | - |")
for dev in ("cuda", "cpu"):
    s = load(f"{out}/serve-{dev}.json")
    if not s:
        print(f"\nbench serve, server on {dev}: no result")
        continue
    rep = s.get("server_report", {})
    print(f"\nbench serve, server on {rep.get('device', dev)}: events/s by streams (dynamic batching / batch-1)\n")
    print("| case | " + " | ".join(f"{n} streams" for n in (1, 4, 16, 64)) + " |")
    print("|---|" + "---|" * 4)
    for case in ("facile", "deepcalo", "particlenet-lite"):
        cells = []
        for n in (1, 4, 16, 64):
            d = [p for p in s["sweep"] if p["case"] == case and p["streams"] == n]
            dyn = next((p["events_per_s"] for p in d if p["batching"] == "dynamic"), None)
            one = next((p["events_per_s"] for p in d if p["batching"] == "batch1"), None)
            cells.append(f"{dyn:,.0f} / {one:,.0f}" if dyn is not None and one is not None else "-")
        print(f"| {case} | " + " | ".join(cells) + " |")
    print(f"\nserver overhead p50 {rep.get('overhead_us', {}).get('p50', 0):.1f} us, "
          f"utilisation {rep.get('utilisation', 0):.2f}")
PY
say ""
say "gpu-check: done in $((SECONDS - start)) s (gpu tests exit $gpu_rc)"
