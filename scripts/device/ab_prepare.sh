#!/usr/bin/env bash
# Fills ab/<name>/ (the variant folders of ab.sh) from a branch: every file the branch changed since it
# left main (git diff main...branch, three dots: from the merge base, so main's later commits are not
# undone), at its repository path. Runs here, before the device call (the device copy has no history).
# BRANCH may also be a patch file (git format-patch, e.g. scripts/device/pending/*.patch): it is applied
# with git am onto BASE in a scratch worktree and that commit stands in for the branch.
#   bash scripts/device/ab_prepare.sh exp/fused-expert-flags flags   [base ref, default main]
#   bash scripts/device/ab_prepare.sh scripts/device/pending/fused-mpc.patch mpc
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 BRANCH|PATCH NAME [BASE]" >&2; exit 2; }
branch=$1 name=$2 base=${3:-main}
if [ -f "$branch" ]; then
  patch=$(realpath "$branch") wt=$(mktemp -d)
  git worktree add -q --detach "$wt" "$base"
  git -C "$wt" -c user.name=ab -c user.email=ab@localhost am -q "$patch" ||
    { git -C "$wt" am --abort; git worktree remove --force "$wt"; echo "'$patch' does not apply to $base" >&2; exit 1; }
  branch=$(git -C "$wt" rev-parse HEAD)
  git worktree remove --force "$wt"
fi
git rev-parse --verify -q "$branch" > /dev/null || { echo "no branch '$branch'" >&2; exit 1; }
rm -rf "ab/$name"
files=$(git diff --name-only --diff-filter=AM "$base...$branch")
[ -n "$files" ] || { echo "'$branch' changes nothing since it left $base" >&2; exit 1; }
for f in $files; do
  mkdir -p "ab/$name/$(dirname "$f")"
  git show "$branch:$f" > "ab/$name/$f"
done
echo "ab/$name: $(echo "$files" | wc -l) file(s) from $branch"
echo "$files" | sed 's/^/  /'
behind=$(git diff --name-only "$(git merge-base "$base" "$branch")" "$base" -- $files)
[ -z "$behind" ] || echo "note: $base changed these files since the branch left it (the variant lacks those changes): $behind"
