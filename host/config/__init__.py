"""The one typed configuration model, loaded from the native TOML file or a Layotto `config.json`,
validated once at start-up with errors that name the field."""

from host.config.errors import ConfigError, describe_validation_error
from host.config.model import (
                               DEFAULT_CONFIG,
                               REPO_ROOT,
                               FilterConfig,
                               FunctionConfig,
                               FunctionDefaults,
                               HostConfig,
                               ServerConfig,
                               SubscriptionConfig,
                               load_config,
                               split_address,
                               validate_config,
)

__all__ = [
    "DEFAULT_CONFIG", "REPO_ROOT", "ConfigError", "FilterConfig", "FunctionConfig", "FunctionDefaults", "HostConfig",
    "ServerConfig", "SubscriptionConfig", "describe_validation_error", "load_config", "split_address",
    "validate_config",
]
