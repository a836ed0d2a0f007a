#!/usr/bin/env bash
# Fails CI when a committed file is not what the generators make of the sources.
#
# make test runs the generators first (make manifests generate helm-sync fmt) and then this
# script. Outside CI that is all: the regenerated files are tested and left in the working
# tree for the developer to commit. In CI (CI=true, set for .ci/run and by GitHub Actions) the
# script also runs go mod tidy and then fails when the working tree differs from the index:
# a tracked file changed, or a file appeared that .gitignore does not cover. Without it CI
# would test the regenerated files, not the committed ones.
#
# To reproduce CI with local changes: git add them, then CI=true make verify-generated.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${CI:-}" in
true | TRUE | True | 1 | yes) ;;
*) exit 0 ;;
esac

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	echo "verify-generated: CI=$CI, but $(pwd) is not a git work tree: cannot tell whether generated files are current" >&2
	exit 1
fi

go mod tidy

# Compare contents, not timestamps: the generators rewrite files they do not change.
git update-index -q --refresh >/dev/null 2>&1 || true
changed=$(git diff --name-only --relative -- .)
untracked=$(git ls-files --others --exclude-standard -- .)
if [ -z "$changed$untracked" ]; then
	echo "verify-generated: generated files, go.mod, go.sum and formatting are current"
	exit 0
fi

{
	echo "verify-generated: the committed files are stale: generation, go mod tidy or gofmt changed them."
	if [ -n "$changed" ]; then
		echo
		echo "Changed:"
		git --no-pager diff --stat=120 --relative -- .
	fi
	if [ -n "$untracked" ]; then
		echo
		echo "New, not ignored:"
		sed 's/^/ /' <<<"$untracked"
	fi
	if [ -n "$changed" ]; then
		echo
		echo "Diff (first 100 lines):"
		{ git --no-pager diff --relative -- . || true; } | head -n 100 || true
	fi
	echo
	echo "Run 'make manifests generate helm-sync fmt' and 'go mod tidy', then commit the result."
} >&2
exit 1
