# Sourced by the scripts: run a Python entry point with one process, or with torchrun when
# NPROC > 1 or the job spans several nodes. torchrun's multi-node settings come from the
# environment, as a scheduler (e.g. Slurm, see docs/training.md) sets them:
#   NPROC          processes per node (GPUs per node)                  default 1
#   NNODES         number of nodes                                      default 1
#   NODE_RANK      this node's index, 0 .. NNODES-1                     default 0
#   MASTER_ADDR    address of node 0, MASTER_PORT its port (29500)      needed when NNODES > 1
#   RDZV_ENDPOINT  host:port of a c10d rendezvous instead of MASTER_*  (elastic; RDZV_ID names the job)
#   PYTHON         the interpreter to run                               default python
PYTHON=${PYTHON:-python}
launch() {
  local entry=$1; shift
  local nproc=${NPROC:-1} nnodes=${NNODES:-1}
  if [ "$nproc" -gt 1 ] || [ "$nnodes" != 1 ] || [ -n "${RDZV_ENDPOINT:-}" ]; then
    local rdzv
    if [ -n "${RDZV_ENDPOINT:-}" ]; then
      rdzv=(--rdzv_backend c10d --rdzv_endpoint "$RDZV_ENDPOINT" --rdzv_id "${RDZV_ID:-diffuseq}")
    elif [ "$nnodes" != 1 ]; then
      rdzv=(--node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:?NNODES=$nnodes needs MASTER_ADDR, the address of node 0}"
            --master_port "${MASTER_PORT:-29500}")
    else
      rdzv=(--standalone)
    fi
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PYTHON" -m torch.distributed.run --nnodes "$nnodes" --nproc_per_node "$nproc" "${rdzv[@]}" \
      "$entry" "$@"
  else
    "$PYTHON" "$entry" "$@"
  fi
}
