"""An example Sluice middleware plugin: ``requestId``.

The package's entry point (``sluice.middleware`` group, name ``requestId``)
points at ``RequestId``; Sluice imports it when a configuration first uses
the key. Plugins import only the public contract: ``middleware.contract`` and
``gateway.config.model``.
"""

from sluice_example_plugin.request_id import RequestId, RequestIdOptions

__all__ = ["RequestId", "RequestIdOptions"]
