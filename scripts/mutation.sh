#!/usr/bin/env bash
# Mutation testing of nsjax's core modules with mutmut 3 (the `dev` extra), the shared data
# absent, one module at a time:
#
#   scripts/mutation.sh [MODULE ...]          # default: all of MODULES below, smallest first
#   MUTATION_SAMPLE=60 scripts/mutation.sh _conv   # a seeded random sample of 60 mutants
#
# Each module is mutated in its own snapshot, mutants/<module>/ (git-ignored), taken from
# git revision $MUTATION_REV (default HEAD; "worktree" copies the working tree's tracked and
# untracked-not-ignored files instead), so edits made while it runs do not leak in.  The
# fused CPU kernel is rebuilt in the snapshot from the snapshot's C++ source.  mutmut runs
# with the fork-server isolation and only third-party modules preloaded (no JAX backend is
# initialised before a fork: forking a live XLA runtime can deadlock); every mutant runs,
# in a fresh fork, the tests of TESTS[module] that call the mutated function, stopping at the
# first failure.  $NSJAX_DATA_DIR points at an empty directory, so data-needing tests skip.
#
# The score and each surviving mutant's diff replace the module's block in
# docs/results/mutation.md (between `<!-- mutmut NAME -->` and `<!-- /mutmut NAME -->`; NAME is
# the module, followed by " seed S" for a seed other than the default 16, so that samples
# of other seeds are kept beside it).
# Environment: MUTATION_SAMPLE (0 = all mutants), MUTATION_SEED (16), MUTATION_CHILDREN (2),
# MUTATION_REV (HEAD).  Everything runs under `nice -n 19`.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
ROOT=$PWD
BIN=${MUTATION_BIN:-$ROOT/.venv/bin}
REV=${MUTATION_REV:-HEAD}
SAMPLE=${MUTATION_SAMPLE:-0}
SEED=${MUTATION_SEED:-16}
CHILDREN=${MUTATION_CHILDREN:-2}
WORK=$ROOT/mutants
DOC=$ROOT/docs/results/mutation.md

MODULES=(_cpu_kernel _invariance _stego _certify _nullspace _first_layer _conv)
declare -A TESTS=(
  [_cpu_kernel]='"tests/test_cpu_kernel.py"'
  [_invariance]='"tests/test_invariance.py", "tests/test_false_failures.py"'
  [_stego]='"tests/test_stego.py", "tests/test_properties.py", "-k", "stego"'
  [_certify]='"tests/test_certify.py"'
  [_nullspace]='"tests/test_nullspace.py", "tests/test_nullspace_traced.py"'
  [_first_layer]='"tests/test_first_layer.py", "tests/test_model.py"'
  [_conv]='"tests/test_conv.py"'
)
REPORT_ONLY=0
if [[ ${1:-} == --report ]]; then REPORT_ONLY=1; shift; fi  # rewrite the blocks from mutants/
(($#)) && MODULES=("$@")
for mod in "${MODULES[@]}"; do
  [[ -n ${TESTS[$mod]:-} ]] || { echo "unknown module $mod (known: ${!TESTS[*]})" >&2; exit 2; }
done

mkdir -p "$WORK/.so"
EMPTY=$(mktemp -d)  # NSJAX_DATA_DIR with nothing in it
trap 'rm -rf "$EMPTY"' EXIT
cat > "$WORK/preload.txt" <<'EOF'
# imported once by mutmut's fork server; none of them starts a JAX backend
numpy
scipy.linalg
jax
jax.numpy
flax.linen
flax.nnx
optax
hypothesis
EOF

# The module's block of docs/results/mutation.md, from the exit codes mutmut has recorded
# so far in mutants/MODULE (an interrupted run reports the mutants it finished).
report() {  # report MODULE REV SECONDS
  (cd "$WORK/$1" && "$BIN/python" - "$1" "$2" "$(cat "$WORK/$1.sample")" "$SEED" "$3" "$DOC" \
     "$BIN/mutmut" "${TESTS[$1]}" <<'EOF'
import datetime, json, re, subprocess, sys
from collections import Counter
mod, rev, sample, seed, secs, doc, mutmut, tests = sys.argv[1:9]
codes = json.load(open(f"mutants/nsjax/{mod}.py.meta"))["exit_code_by_key"]
from mutmut.stats import status_by_exit_code as S  # noqa: E402
status = {k: S[c] for k, c in codes.items() if c is not None}
count = Counter(status.values())
killed = count["killed"] + count["timeout"] + count["segfault"] + count["caught by type check"]
total = len(status)
live = sorted((k for k, s in status.items() if s not in ("killed", "timeout", "segfault",
                                                          "caught by type check")),
              key=lambda k: (k.rsplit("__mutmut_", 1)[0], int(k.rsplit("_", 1)[1])))
what = (f"a random sample of {total} of its {len(codes)} mutants (seed {seed})"
        if int(sample) else f"all {total} mutants")
name = mod if seed == "16" else f"{mod} seed {seed}"
lines = [f"<!-- mutmut {name} -->", f"### `nsjax/{mod}.py`" + ("" if seed == "16" else
                                                                 f" (seed {seed})"), "",
         f"**{killed}/{total} killed ({100 * killed / max(total, 1):.1f} %)**, {what}; "
         f"snapshot {rev}, {datetime.date.today()}, {int(secs) // 60} min "
         f"({int(secs) / max(total, 1):.1f} s per mutant on 2 busy cores).  "
         f"Tests: `{' '.join(t.strip(' ' + chr(34)) for t in tests.split(','))}`.  "
         + ", ".join(f"{v} {k}" for k, v in sorted(count.items())) + ".", ""]
if live:
    lines += ["<details><summary>surviving mutants (diffs)</summary>", "", "```diff"]
    for k in live:
        diff = subprocess.run([mutmut, "show", k], capture_output=True, text=True).stdout
        body = [ln for ln in diff.splitlines()
                if re.match(r"[-+][^-+]", ln) or ln in ("-", "+")]
        lines += [f"# {k} ({status[k]})"] + body
    lines += ["```", "", "</details>"]
lines += [f"<!-- /mutmut {name} -->"]
block = "\n".join(lines)
text = open(doc).read()
pat = re.compile(rf"<!-- mutmut {re.escape(name)} -->.*?<!-- /mutmut {re.escape(name)} -->", re.S)
if pat.search(text):
    text = pat.sub(lambda _: block, text)
else:
    marker = "<!-- mutmut runs end -->"
    if marker not in text:
        text = text.rstrip("\n") + "\n\n## mutmut runs\n\n" + marker + "\n"
    text = text.replace(marker, block + "\n\n" + marker)
open(doc, "w").write(text)
print(f"{mod}: {killed}/{total} killed, {count['survived']} survived, {secs} s")
EOF
  )
}

if ((REPORT_ONLY)); then
  for mod in "${MODULES[@]}"; do
    report "$mod" "$(cat "$WORK/$mod.rev")" "$(( $(stat -c %Y "$WORK/$mod.log") - $(stat -c %Y "$WORK/$mod.rev") ))"
  done
  exit 0
fi

for mod in "${MODULES[@]}"; do
  snap=$WORK/$mod
  rm -rf "$snap" && mkdir -p "$snap"
  if [[ $REV == worktree ]]; then
    git ls-files -co --exclude-standard -z -- nsjax tests scripts pyproject.toml setup.py \
      | tar --null --ignore-failed-read -T - -c | tar -x -C "$snap"
    rev=$(git rev-parse --short HEAD)+worktree
  else
    git archive "$REV" nsjax tests scripts pyproject.toml setup.py | tar -x -C "$snap"
    rev=$(git rev-parse --short "$REV")
  fi
  # the fused kernel, built from the snapshot's source (cached by the source's hash)
  key=$(cat "$snap"/nsjax/_kernels/* | sha256sum | cut -c1-16)
  if [[ ! -f $WORK/.so/$key.so ]]; then
    (cd "$snap" && nice -n 19 "$BIN/python" setup.py -q build_ext --inplace >/dev/null 2>&1) || true
    so=$(ls "$snap"/nsjax/_project_cpu*.so 2>/dev/null | head -1)
    [[ -n $so ]] && cp "$so" "$WORK/.so/$key.so"
  fi
  if [[ -f $WORK/.so/$key.so ]]; then
    suffix=$("$BIN/python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
    cp "$WORK/.so/$key.so" "$snap/nsjax/_project_cpu$suffix"
  fi
  # the tests' child processes run from tests/ (test_cpu_kernel, test_faults, ...): mutmut's
  # trampolines there read their configuration from the working directory
  printf '[mutmut]\nsource_paths = ../nsjax\n' > "$snap/tests/setup.cfg"
  cat >> "$snap/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["nsjax"]
only_mutate = ["nsjax/$mod.py"]
also_copy = ["scripts"]
pytest_add_cli_args_test_selection = [${TESTS[$mod]}]
pytest_add_cli_args = ["-p", "no:cacheprovider"]
process_isolation = "forkserver"
forkserver_warmup = "import"
preload_modules_file = "$WORK/preload.txt"
use_git_change_detection = false
timeout_constant = 30.0
timeout_multiplier = 10.0
EOF
  names=()
  if ((SAMPLE > 0)); then  # generate the mutants, then draw the sample
    (cd "$snap" && nice -n 19 "$BIN/python" -c '
import mutmut.__main__ as M
M.copy_src_dir(); M.copy_also_copy_files(); M.create_mutants(1)' >/dev/null)
    mapfile -t names < <("$BIN/python" - "$snap/mutants/nsjax/$mod.py.meta" "$SAMPLE" "$SEED" <<'EOF'
import json, random, sys
keys = sorted(json.load(open(sys.argv[1]))["exit_code_by_key"])
n = min(int(sys.argv[2]), len(keys))
print("\n".join(sorted(random.Random(int(sys.argv[3])).sample(keys, n))))
EOF
)
  fi
  echo "$rev" > "$WORK/$mod.rev"; echo "$SAMPLE" > "$WORK/$mod.sample"
  start=$(date +%s)
  (cd "$snap" && env -u NSJAX_REQUIRE_DATA NSJAX_DATA_DIR="$EMPTY" PYTHONPATH="$snap/mutants" \
     nice -n 19 "$BIN/mutmut" run --max-children "$CHILDREN" "${names[@]}") \
     > "$WORK/$mod.log" 2>&1 || { echo "$mod: mutmut failed, see $WORK/$mod.log" >&2; tail -20 "$WORK/$mod.log" >&2; continue; }
  secs=$(( $(date +%s) - start ))
  report "$mod" "$rev" "$secs"
done
