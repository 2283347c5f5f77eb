"""Configuration: dataclasses (:mod:`.schema`) and Detectron2-style YAML (:mod:`.detectron2_yaml`)."""
from .schema import (FAMILIES, FAMILY_AMANET, FAMILY_S1X, BackboneConfig, Config,
                     DensePoseConfig, InputConfig, ROIHeadsConfig, RPNConfig, SolverConfig,
                     amanet_config, preset, s1x_config)
from .detectron2_yaml import (ConfigError, config_from_dict, dump_config, load_config,
                              merge_overrides)

__all__ = ["FAMILIES", "FAMILY_AMANET", "FAMILY_S1X", "BackboneConfig", "Config",
           "DensePoseConfig", "InputConfig", "ROIHeadsConfig", "RPNConfig", "SolverConfig",
           "amanet_config", "preset", "s1x_config", "ConfigError", "load_config",
           "merge_overrides", "dump_config", "config_from_dict"]
