from cogniverse_assets.modules.registry import ROUTING_MODULES, RoutingModuleSpec, get_module

__all__ = ["ROUTING_MODULES", "RoutingModuleSpec", "get_module"]
