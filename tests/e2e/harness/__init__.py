"""The one harness of the end-to-end suites (tests/e2e, tests/e2e/translator, tests/examples):

- processes: free ports, waiting, launching a subprocess with its log, JSON-line logs, die-with-parent
- envoy: a real Envoy bootstrapped with only the ADS address, its listener, its access log
- control_plane: the control plane as a subprocess (`aigw-xds serve`) and `aigw-xds run`
- gateway: the control plane in-process (translator included) plus an Envoy: run_gateway()
- traffic: echo upstreams, a plain HTTP client and steady traffic that counts failures
- providers, resources: the fake providers and the YAML resources routing to them
- certs: a throwaway CA for the TLS transport tests
"""
