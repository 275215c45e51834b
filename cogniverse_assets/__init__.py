"""Cogniverse auto-optimization: Dagster assets, sensors and the routing modules they optimize."""
