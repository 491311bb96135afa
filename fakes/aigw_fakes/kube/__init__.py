"""The pieces of the emulated Kubernetes API server (a test stand-in; see ``aigw_fakes.kube_apiserver``).

resources   the served resource types (from the kinds table a test passes in, plus Lease, TokenReview)
store       objects, the global resourceVersion, history, watches (thread-safe)
patch       JSON merge patch and JSON patch (pure)
selectors   label and field selectors (pure)
validation  the CRDs' status-condition validation (pure)
auth        tokens, per-verb RBAC denials, TokenReview
errors      the Status answers with the real server's reasons and messages
"""
