"""aigw_translator: the Envoy external processor that translates AI API requests and responses.

It never imports aigw_xds, so it can run alone as a slim sidecar.
"""
