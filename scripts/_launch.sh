# Sourced by the scripts: run a Python entry point with one process, or with torchrun when NPROC > 1.
launch() {
  local entry=$1; shift
  local nproc=${NPROC:-1}
  if [ "$nproc" -gt 1 ]; then
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} torchrun --standalone --nproc_per_node "$nproc" "$entry" "$@"
  else
    python "$entry" "$@"
  fi
}
