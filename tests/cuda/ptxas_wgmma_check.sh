#!/usr/bin/env bash
# Fails when ptxas serializes the wgmma of a kernel (its "Potential Performance Loss" notes, C7510-C7520):
# such a kernel is correct, only several times slower, so no functional test sees it (RESULTS.md v14).
# Checks every CUDA source under src/ that issues wgmma (itself or through headers it includes), built
# for sm_90a with the library's own flags (CMake passes them, so the check sees the code the build makes).
#   usage: ptxas_wgmma_check.sh NVCC REPO_ROOT [NVCC FLAGS...]
set -uo pipefail
nvcc=$1 root=$2
shift 2
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(-std=c++20 -O3 --expt-relaxed-constexpr)
status=0
# Sources that issue wgmma themselves or include, at any depth, a header that does (kernels are
# instantiated per TU). The headers are closed over includes first: one that includes such a header counts.
including() { for h in "$@"; do grep -l "#include \"${h#src/}\"" src/*/cuda/*.cu*; done; }
srcs=$(cd "$root" && {
  hdrs=$(grep -l "wgmma_" src/*/cuda/*.cuh | sort -u)
  while :; do
    next=$(printf '%s\n' $hdrs $(including $hdrs | grep '\.cuh$') | sort -u)
    [ "$next" = "$hdrs" ] && break
    hdrs=$next
  done
  grep -l "wgmma_" src/*/cuda/*.cu; including $hdrs | grep '\.cu$'; } | sort -u)
[ -n "$srcs" ] || { echo "no CUDA source under $root/src issues wgmma"; exit 1; }
for src in $srcs; do
  log=$("$nvcc" "${flags[@]}" -arch=sm_90a -I"$root/include" -I"$root/src" \
    -c "$root/$src" -o /dev/null -Xptxas -v 2>&1)
  if [ $? -ne 0 ]; then
    echo "$src: does not compile for sm_90a"; echo "$log" | grep -m 10 error; status=1; continue
  fi
  loss=$(echo "$log" | grep "Potential Performance Loss")
  if [ -n "$loss" ]; then
    echo "$src: ptxas serializes wgmma:"; echo "$loss" | sed 's/ in the function.*//' | sort | uniq -c; status=1
  else
    echo "$src: $(echo "$log" | grep -c "Compiling entry function") kernels, no wgmma serialized"
  fi
done
exit $status
