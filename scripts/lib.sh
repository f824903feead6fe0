# Shared by the scripts: source it, do not run it.

# listening_addr LOG [SECONDS]: waits (default 60 s) for the first "listening on ADDR" line
# a server wrote to LOG and prints ADDR; prints nothing and fails if none came.
listening_addr() {
  local log=$1 tries=$(( ${2:-60} * 20 )) addr=""
  for _ in $(seq 1 "$tries"); do
    addr=$(sed -n 's/.*listening on \(.*\)$/\1/p' "$log" 2>/dev/null | head -n1)
    if [ -n "$addr" ]; then
      echo "$addr"
      return 0
    fi
    sleep 0.05
  done
  return 1
}
