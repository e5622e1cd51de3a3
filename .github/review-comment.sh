#!/usr/bin/env bash
# Keep one review comment per pull request, updated in place on each push.
#
#   .github/review-comment.sh PR BODY_FILE     (GH_TOKEN, and GH_REPO=owner/name, set)
#
# The comment is found by the hidden marker it starts with and by its author, the workflow's
# GITHUB_TOKEN (github-actions[bot]); it is edited, or created on the first push. Other comments
# are never touched. Not `gh pr comment --edit-last`: that edits the token's last comment, which
# can be another workflow's (they all write as github-actions[bot]). tests/e2e/test_workflows.py runs
# this against a recorded gh.
set -euo pipefail

pr=$1 body_file=$2
marker='<!-- imgpipe-review -->'
author='github-actions[bot]'

# Every page: a pull request with more than a page of comments still has ours on a later one.
ids=$(gh api --paginate "repos/{owner}/{repo}/issues/$pr/comments?per_page=100" \
  --jq ".[] | select(.user.login == \"$author\" and (.body | startswith(\"$marker\"))) | .id")
id=${ids%%$'\n'*}  # the oldest, should an earlier race have left two

if [ -n "$id" ]; then
  method=PATCH path="repos/{owner}/{repo}/issues/comments/$id" done="Updated review comment $id"
else
  method=POST path="repos/{owner}/{repo}/issues/$pr/comments" done="Posted the review comment"
fi
{ printf '%s\n' "$marker"; cat "$body_file"; } | gh api --method "$method" "$path" -F body=@- --silent
echo "$done"
