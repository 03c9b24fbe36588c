"""Framework-suite setup.

CPython 3.11 keeps the AST constructor's recursion counter in interpreter-wide state (fixed upstream in
gh-106905), so `ast.parse` running on two threads at once (smolagents validates tools with `ast.parse` on any-llm's
runner thread) can leave it corrupt, and a later `ast.parse` raises "SystemError: AST constructor recursion depth
mismatch". Pytest then crashes at session end, when the hypothesis plugin lazily imports (and assertion-rewrites)
`hypothesis`. Importing it up front avoids that parse; failure reports can still hit it on 3.11.
"""

import hypothesis.internal.observability  # noqa: F401
