# Sourced by the reproduce scripts: sweep_dir NAME [OVERRIDE ...] prints the run dir of preset
# NAME: a new outputs/multirun/NAME/<date>/<time>, or with resume=true among the overrides the
# newest existing one (which a rerun then continues).
sweep_dir() {
  local name="$1" dir arg latest
  shift
  dir="outputs/multirun/${name}/$(date +%Y-%m-%d/%H-%M-%S-%N)"
  for arg in "$@"; do
    if [[ "$arg" == "resume=true" ]]; then
      latest="$(ls -d outputs/multirun/"${name}"/*/* 2>/dev/null | sort | tail -n 1 || true)"
      [[ -n "$latest" ]] && dir="$latest"
    fi
  done
  echo "$dir"
}
