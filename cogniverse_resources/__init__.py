"""The edge of the system: everything that talks to Phoenix, LMs, content backends, the config
store and artifact storage. Nothing here imports ``cogniverse_assets``."""
