"""xDS: build Envoy resources from the IR, cache them per fleet, serve them over ADS."""
