"""The Dagster resources: the API assets call. ``gateway.session(context)`` makes images and text
through the gateway library (which knows nothing of Dagster), turns its refusals into Failures and
attaches the cost metadata; the provider is a resource of its own, so the UI shows which one runs."""

from webtoon_assets.resources.data import DataRootResource
from webtoon_assets.resources.gateway import GatewayResource, GenerationSession
from webtoon_assets.resources.manifests_io import ManifestIOManager
from webtoon_assets.resources.providers import (FalProviderResource, LocalProviderResource,
                                                OnlineProviderResource, ProviderResource, provider_resource)

__all__ = ["DataRootResource", "FalProviderResource", "GatewayResource", "GenerationSession",
           "LocalProviderResource", "ManifestIOManager", "OnlineProviderResource", "ProviderResource", "provider_resource"]
