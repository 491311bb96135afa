"""aigw_xds: compiles Envoy AI Gateway resources into Envoy xDS and serves them over ADS."""

__version__ = "0.1.0"
